//! Reading `strace -f -y -o FILE` output: each system call with its arguments, result and
//! the lines where it started and completed, so tests can assert the order of file-system
//! calls (what completed before what started).

/// One system call of a trace.
#[derive(Debug, Clone)]
pub struct Call {
    /// Thread that made it.
    pub pid: u32,
    /// System call name.
    pub name: String,
    /// Argument text as strace printed it (`-y`: descriptors carry their path, `12</a/b>`).
    pub args: String,
    /// Result text (`0`, `12</a/b>`, `-1 ENOENT (…)`).
    pub result: String,
    /// Line where the call started.
    pub start: usize,
    /// Line where it completed.
    pub end: usize,
}

impl Call {
    /// Whether the call succeeded.
    pub fn ok(&self) -> bool {
        !self.result.starts_with('-') && !self.result.starts_with('?')
    }

    /// The path of the first descriptor argument (`-y`), e.g. `/data/meta/db`.
    pub fn fd_path(&self) -> Option<&str> {
        let digits = self.args.bytes().take_while(u8::is_ascii_digit).count();
        let rest = self.args.get(digits..)?.strip_prefix('<')?;
        rest.split('>').next()
    }

    /// The quoted string arguments, unescaped only as far as paths need.
    pub fn strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = self.args.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                continue;
            }
            let mut s = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            s.push('\\');
                            s.push(n);
                        }
                    }
                    '"' => break,
                    c => s.push(c),
                }
            }
            out.push(s);
        }
        out
    }

    /// Whether this is one of `names`.
    pub fn is(&self, names: &[&str]) -> bool {
        names.contains(&self.name.as_str())
    }
}

/// Splits `args) = result` (strace pads before `=` to align results) into args and result.
fn split_result(text: &str) -> Option<(&str, &str)> {
    let at = text.rfind(" = ")?;
    let args = text[..at].trim_end().strip_suffix(')')?;
    Some((args, &text[at + 3..]))
}

/// Splits `NAME(args) = result` (or the part of it on one line).
fn split_call(text: &str) -> Option<(String, String, Option<String>)> {
    let open = text.find('(')?;
    let name = text[..open].to_string();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let body = &text[open + 1..];
    if let Some(args) = body.strip_suffix(" <unfinished ...>") {
        return Some((name, args.to_string(), None));
    }
    let (args, result) = split_result(body)?;
    Some((name, args.to_string(), Some(result.to_string())))
}

/// Every system call of a trace, in order of completion.
pub fn parse(text: &str) -> Vec<Call> {
    let mut done = Vec::new();
    let mut pending: std::collections::HashMap<u32, Call> = std::collections::HashMap::new();
    for (line_no, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some(mut call) = pending.remove(&pid) else {
                continue;
            };
            if call.name != name {
                continue;
            }
            let Some((args, result)) = split_result(tail) else {
                continue;
            };
            call.args.push_str(args);
            call.result = result.to_string();
            call.end = line_no;
            done.push(call);
            continue;
        }
        let Some((name, args, result)) = split_call(rest) else {
            continue;
        };
        let mut call = Call {
            pid,
            name,
            args,
            result: String::new(),
            start: line_no,
            end: line_no,
        };
        match result {
            Some(r) => {
                call.result = r;
                done.push(call);
            }
            None => {
                pending.insert(pid, call);
            }
        }
    }
    done.sort_by_key(|c| c.end);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_and_interleaved_calls() {
        let text = "\
10 openat(AT_FDCWD</x>, \"/d/tmp/a.part\", O_WRONLY|O_CREAT, 0666) = 5</d/tmp/a.part>
11 fsync(5</d/tmp/a.part> <unfinished ...>
10 fsync(6</d>)                = 0
10 rename(\"/d/tmp/a.part\", \"/d/ab/abc\") = 0
11 <... fsync resumed>) = 0
10 +++ exited with 0 +++
";
        let calls = parse(text);
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[1].fd_path(), Some("/d"));
        assert_eq!(calls[0].name, "openat");
        assert_eq!(calls[2].strings(), ["/d/tmp/a.part", "/d/ab/abc"]);
        let fsync = &calls[3];
        assert_eq!((fsync.start, fsync.end), (1, 4));
        assert_eq!(fsync.fd_path(), Some("/d/tmp/a.part"));
        assert!(fsync.ok());
    }
}
