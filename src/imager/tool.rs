//! Running an external tool for a build (`xorriso`, `mkfs.xfs`, `grub-mkimage`, `depmod`): in a
//! process group of its own, with its output captured up to a bound, killed (the whole group)
//! at its deadline or when the build is cancelled, and a failure reported by the tool's
//! meaningful lines — its error lines, not its banner.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cancel::Cancel;

/// Most bytes of a tool's stdout or stderr kept (the rest is read and dropped).
const MAX_OUTPUT: usize = 256 << 10;
/// Most lines a failure report quotes.
const MAX_REPORTED_LINES: usize = 8;
/// How often a running tool is checked for exit, deadline and cancellation.
const POLL: Duration = Duration::from_millis(20);

/// Why a tool run failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed.
    #[error("{tool} not found: install Debian package {package} (needed for {purpose})")]
    NotFound {
        /// The executable.
        tool: &'static str,
        /// The Debian package that ships it.
        package: &'static str,
        /// What needs it.
        purpose: &'static str,
    },
    /// The tool could not be started (not installed, not executable).
    #[error("cannot run {tool}")]
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tool ran out of disk space.
    #[error("{tool} failed: {lines}")]
    NoSpace {
        /// The tool.
        tool: String,
        /// Its error lines.
        lines: String,
        /// The condition, as an I/O error of kind `StorageFull`.
        #[source]
        source: std::io::Error,
    },
    /// The tool exited unsuccessfully.
    #[error("{tool} failed ({status}): {lines}")]
    Failed {
        /// The tool.
        tool: String,
        /// How it exited.
        status: ExitStatus,
        /// Its meaningful output lines.
        lines: String,
    },
    /// The tool ran past its deadline and was killed.
    #[error("{tool} did not finish within {} s and was killed", after.as_secs())]
    TimedOut {
        /// The tool.
        tool: String,
        /// How long it was allowed.
        after: Duration,
    },
    /// The build was cancelled while the tool ran; it was killed.
    #[error("{tool} was killed: the build was cancelled")]
    Cancelled {
        /// The tool.
        tool: String,
    },
    /// Waiting for the tool failed.
    #[error("waiting for {tool} failed")]
    Wait {
        /// The tool.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a tool prints when it runs out of disk space: the `ENOSPC` text, and xorriso's refusal
/// to start an image larger than the free space (it measures before writing).
const NO_SPACE: [&str; 2] = ["No space left on device", "exceeds free space on media"];

impl ToolError {
    /// Whether the tool failed for lack of disk space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, ToolError::NoSpace { .. })
    }
}

/// How the external tools of one build run: where they are found, how long each may take,
/// and the build's cancellation (its deadline included).
#[derive(Debug, Clone, Default)]
pub struct ToolRun {
    /// Where tools are found and how long one may run.
    pub tools: Tools,
    /// The build's cancellation.
    pub cancel: Cancel,
}

impl ToolRun {
    /// Runs `cmd` (named `tool`) as [`Tools::run`] does, under this build's cancellation.
    pub fn run(&self, tool: &str, cmd: Command) -> Result<Vec<u8>, ToolError> {
        self.tools.run(tool, cmd, &self.cancel)
    }

    /// The executable `name` ([`Tools::find`]).
    pub fn find(&self, name: &str) -> PathBuf {
        self.tools.find(name)
    }
}

/// Where tools are looked for and how long one may run.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Directories searched before `PATH` (`build.toolDirs`).
    pub dirs: Vec<PathBuf>,
    /// Longest run of one tool (`build.toolTimeoutSeconds`).
    pub timeout: Duration,
}

impl Default for Tools {
    fn default() -> Self {
        Self {
            dirs: Vec::new(),
            timeout: Duration::from_secs(600),
        }
    }
}

impl Tools {
    /// The executable `name`: in the configured directories, on `PATH`, or in the sbin
    /// directories (not on a user's `PATH` on Debian); else the bare name.
    pub fn find(&self, name: &str) -> PathBuf {
        self.locate(name).unwrap_or_else(|| PathBuf::from(name))
    }

    /// As [`Self::find`], `None` when the tool is nowhere.
    pub fn locate(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut dirs = self.dirs.clone();
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
        dirs.into_iter().map(|d| d.join(name)).find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    /// Runs `cmd` (named `tool` in reports) to completion: killed with its process group when
    /// the build is cancelled or at the sooner of the tool timeout and the build's deadline.
    /// Answers its stdout.
    pub fn run(&self, tool: &str, cmd: Command, cancel: &Cancel) -> Result<Vec<u8>, ToolError> {
        self.run_with_input(tool, cmd, cancel, None)
    }

    /// As [`Self::run`], writing `input` (if any) to the tool's stdin (closed after it; a tool
    /// that stops reading early is not an error of the writer).
    pub fn run_with_input(
        &self,
        tool: &str,
        mut cmd: Command,
        cancel: &Cancel,
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ToolError> {
        use std::os::unix::process::CommandExt as _;
        let name = || tool.to_string();
        cancel
            .check()
            .map_err(|_| ToolError::Cancelled { tool: name() })?;
        let allowed = cancel
            .remaining()
            .map_or(self.timeout, |left| left.min(self.timeout));
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
        let mut child = cmd.spawn().map_err(|source| ToolError::Spawn {
            tool: name(),
            source,
        })?;
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            std::thread::spawn(move || {
                use std::io::Write as _;
                let _ = stdin.write_all(&input);
            });
        }
        let out = capture(child.stdout.take());
        let err = capture(child.stderr.take());
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(source) => {
                    kill_group(&mut child);
                    return Err(ToolError::Wait {
                        tool: name(),
                        source,
                    });
                }
            }
            if cancel.is_cancelled() {
                kill_group(&mut child);
                return Err(ToolError::Cancelled { tool: name() });
            }
            if started.elapsed() >= allowed {
                kill_group(&mut child);
                return Err(ToolError::TimedOut {
                    tool: name(),
                    after: allowed,
                });
            }
            std::thread::sleep(POLL);
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if status.success() {
            return Ok(stdout);
        }
        let text =
            String::from_utf8_lossy(&stderr).into_owned() + &String::from_utf8_lossy(&stdout);
        let lines = meaningful_lines(&text);
        if NO_SPACE.iter().any(|phrase| text.contains(phrase)) {
            return Err(ToolError::NoSpace {
                tool: name(),
                lines,
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        Err(ToolError::Failed {
            tool: name(),
            status,
            lines,
        })
    }
}

/// Reads a pipe to its end on a thread, keeping at most [`MAX_OUTPUT`] bytes.
fn capture<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let Some(mut pipe) = pipe else {
            return kept;
        };
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_OUTPUT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    })
}

/// Kills the child's whole process group (a tool's own helpers included) and reaps it.
fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The lines of a tool's output that say what went wrong: those naming an error (`FAILURE`,
/// `SORRY`, `error`, `cannot`, …) when there are any, else the last lines; never more than
/// [`MAX_REPORTED_LINES`], joined with ` | `.
pub fn meaningful_lines(output: &str) -> String {
    const MARKERS: &[&str] = &[
        "failure",
        "sorry",
        "fatal",
        "error",
        "cannot",
        "can't",
        "failed",
        "no space",
        "not found",
        "invalid",
        "denied",
    ];
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let marked: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            let lower = l.to_lowercase();
            MARKERS.iter().any(|m| lower.contains(m))
        })
        .collect();
    let chosen = if marked.is_empty() { &lines } else { &marked };
    let start = chosen.len().saturating_sub(MAX_REPORTED_LINES);
    if chosen.is_empty() {
        return "no output".to_string();
    }
    chosen[start..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_quotes_its_error_lines_not_its_banner() {
        let out = "xorriso 1.5.4 : RockRidge filesystem manipulator, libburnia project.\n\n\
                   Drive current: -outdev 'stdio:/x.iso'\n\
                   libburn : SORRY : Cannot write: No space left on device\n\
                   xorriso : FAILURE : Failed to write the ISO image\n";
        let lines = meaningful_lines(out);
        assert!(!lines.contains("RockRidge"), "{lines}");
        assert!(lines.contains("No space left on device"), "{lines}");
        assert!(lines.contains("FAILURE"), "{lines}");
        assert_eq!(
            meaningful_lines("just\nsome\nwords\n"),
            "just | some | words"
        );
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_success_failure_and_no_space() {
        let tools = Tools::default();
        let cancel = Cancel::new();
        assert_eq!(tools.run("sh", sh("echo hi"), &cancel).unwrap(), b"hi\n");
        let e = tools
            .run(
                "sh",
                sh("echo banner; echo 'error: broken' >&2; exit 3"),
                &cancel,
            )
            .unwrap_err();
        assert!(
            matches!(&e, ToolError::Failed { lines, .. } if lines == "error: broken"),
            "{e}"
        );
        let e = tools
            .run(
                "sh",
                sh("echo 'write: No space left on device' >&2; exit 1"),
                &cancel,
            )
            .unwrap_err();
        assert!(e.is_no_space(), "{e}");
        let e = tools
            .run(
                "sh",
                sh("echo 'xorriso : FAILURE : Image size 30374s exceeds free space on media 3666s' >&2; exit 32"),
                &cancel,
            )
            .unwrap_err();
        assert!(e.is_no_space(), "{e}");
    }

    #[test]
    fn a_hung_tool_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-survived");
        let tools = Tools {
            dirs: Vec::new(),
            timeout: Duration::from_millis(300),
        };
        // The tool starts a helper in its group that would leave a marker later.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let e = tools.run("sh", sh(&script), &Cancel::new()).unwrap_err();
        assert!(matches!(e, ToolError::TimedOut { .. }), "{e}");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "a child of the killed tool kept running");
    }

    #[test]
    fn cancelling_the_build_kills_the_tool() {
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c2.cancel();
        });
        let e = Tools::default()
            .run("sh", sh("sleep 30"), &cancel)
            .unwrap_err();
        assert!(matches!(e, ToolError::Cancelled { .. }), "{e}");
    }

    #[test]
    fn configured_directories_come_first() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("sh");
        std::fs::write(&fake, "#!/bin/false\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools {
            dirs: vec![dir.path().to_path_buf()],
            ..Tools::default()
        };
        assert_eq!(tools.find("sh"), fake);
        assert!(Tools::default().locate("if-no-such-tool").is_none());
    }
}
