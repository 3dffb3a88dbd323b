//! The write order that makes an acknowledged write survive a power cut, proved on the real
//! binary with a system-call trace (`strace -f -y`): what the page cache held is never relied
//! on, only the order of `fsync`s, renames and writes to the metadata log.
//!
//! For a large schematic POSTed to the server and a release record written by an import:
//! * the document's data is fsynced before its rename into `blobs/docs/…`;
//! * the directory it was renamed into is fsynced after the rename;
//! * the metadata reference to it (its BLAKE3 name) reaches sled's log only after that, and
//!   the log is synced before the acknowledgement (the `201`, or the import's exit);
//! * every directory created under the data directory's `blobs/`, `meta/` and `keys/` (and
//!   the data directory itself) is fsynced into its parent before the acknowledgement;
//! * for the import, every blob of the release is durable (`syncfs`) and in place before the
//!   release document is created.
//!
//! A small schematic is kept inline in its index entry, which is durable with the log: its
//! entry (found by its ID) reaches the log and the log is synced before the `201`.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;

use crate::common::strace::{Call, parse};
use crate::common::{client, spawn_bin_under};

const SYNCS: &[&str] = &["fsync", "fdatasync"];
const RENAMES: &[&str] = &["rename", "renameat", "renameat2"];
const MKDIRS: &[&str] = &["mkdir", "mkdirat"];
const LOG_WRITES: &[&str] = &["pwrite64", "pwritev", "pwritev2", "write", "writev"];

/// `strace` traces followed into every thread, descriptors shown with their paths.
fn strace_args(trace: &Path, calls: &str, strsize: &str) -> Vec<String> {
    ["strace", "-f", "-y", "-s", strsize, "-e", calls, "-o"]
        .iter()
        .map(|s| s.to_string())
        .chain([trace.display().to_string()])
        .collect()
}

fn have_strace() -> bool {
    testsupport::tools::have("strace", "strace")
}

fn parent(path: &str) -> String {
    Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The first call matching `f`, in order of completion.
fn first(calls: &[Call], f: impl Fn(&Call) -> bool) -> Option<&Call> {
    calls.iter().find(|c| f(c))
}

/// Asserts the document write order for the document renamed into `blobs/docs/<kind>/` (the
/// one named `name`, or the first); `ack` is the line where the write was acknowledged.
/// Returns the document's rename.
fn assert_document_order<'a>(
    calls: &'a [Call],
    data: &Path,
    kind: &str,
    name: Option<&str>,
    ack: usize,
) -> &'a Call {
    let docs = format!("{}/blobs/docs/{kind}/", data.display());
    let rename = first(calls, |c| {
        c.is(RENAMES)
            && c.ok()
            && c.strings().last().is_some_and(|d| {
                d.starts_with(&docs) && name.is_none_or(|n| d.ends_with(&format!("/{n}")))
            })
    })
    .unwrap_or_else(|| panic!("no document {name:?} renamed into {docs}"));
    let names = rename.strings();
    let (tmp, dest) = (&names[0], &names[names.len() - 1]);
    let blake3 = dest.rsplit('/').next().unwrap();
    let dest_dir = parent(dest);
    assert!(
        first(calls, |c| c.is(SYNCS)
            && c.ok()
            && c.fd_path() == Some(tmp)
            && c.end < rename.start)
        .is_some(),
        "the document's data was not fsynced before its rename"
    );
    let dir_sync = first(calls, |c| {
        c.is(SYNCS) && c.ok() && c.fd_path() == Some(&dest_dir) && c.start > rename.end
    })
    .unwrap_or_else(|| panic!("{dest_dir} was not fsynced after the rename"));
    let log = format!("{}/meta/db", data.display());
    let reference = calls
        .iter()
        .filter(|c| c.is(LOG_WRITES) && c.fd_path() == Some(&log) && c.args.contains(blake3))
        .min_by_key(|c| c.start)
        .unwrap_or_else(|| panic!("the reference to {blake3} never reached {log}"));
    assert!(
        reference.start > dir_sync.end,
        "the reference reached the log (line {}) before the directory was synced (line {})",
        reference.start,
        dir_sync.end
    );
    assert_logged_before(calls, data, blake3, ack);
    rename
}

/// Asserts that a write to the metadata log containing `needle` is followed by a sync of the
/// log that completes before line `ack`.
fn assert_logged_before(calls: &[Call], data: &Path, needle: &str, ack: usize) {
    let log = format!("{}/meta/db", data.display());
    let write = calls
        .iter()
        .filter(|c| c.is(LOG_WRITES) && c.fd_path() == Some(&log) && c.args.contains(needle))
        .min_by_key(|c| c.start)
        .unwrap_or_else(|| panic!("{needle} never reached {log}"));
    let log_sync = first(calls, |c| {
        c.is(SYNCS) && c.ok() && c.fd_path() == Some(&log) && c.start > write.end
    })
    .unwrap_or_else(|| panic!("{log} was not synced after {needle} was written"));
    assert!(
        log_sync.end < ack,
        "acknowledged (line {ack}) before the log was synced (line {})",
        log_sync.end
    );
}

/// Asserts that every directory created under `data` (itself, `blobs/`, `meta/`, `keys/`)
/// was fsynced into its parent before the first acknowledgement (`acks`: lines) after it
/// (the copy log's directory, written in the background: at all).
fn assert_new_dirs_synced(calls: &[Call], data: &Path, acks: &[usize]) {
    let data_str = data.display().to_string();
    let mut checked = 0;
    for mk in calls.iter().filter(|c| c.is(MKDIRS) && c.ok()) {
        let Some(path) = mk.strings().into_iter().next() else {
            continue;
        };
        let rel = path.strip_prefix(&data_str);
        let ours = rel.is_some_and(|r| {
            r.is_empty()
                || ["/blobs", "/meta", "/keys"]
                    .iter()
                    .any(|d| r.starts_with(d))
        });
        if !ours {
            continue;
        }
        let dir = parent(&path);
        // The copy log is written in the background: no acknowledgement waits for it.
        let background = path.ends_with("/copies");
        let next_ack = acks
            .iter()
            .copied()
            .find(|&a| a > mk.end && !background)
            .unwrap_or(usize::MAX);
        let synced = first(calls, |c| {
            c.is(SYNCS)
                && c.ok()
                && c.fd_path() == Some(&dir)
                && c.start > mk.end
                && c.end < next_ack
        });
        assert!(
            synced.is_some(),
            "{path} was created but {dir} not fsynced after it in time"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "only {checked} directories created: is mkdir traced?"
    );
}

/// The traced process's id: the first line of the trace (`PID execve(...)`, so `execve` must
/// be traced).
fn traced_pid(trace: &Path) -> String {
    let text = std::fs::read_to_string(trace).unwrap();
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// POSTs `body`; returns the schematic's ID and canonical YAML.
async fn post(srv: &crate::common::BinServer, body: String) -> (String, String) {
    let resp = client()
        .post(format!("http://{}/schematics", srv.http))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["schematic"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schematic_is_acknowledged_only_after_document_directory_and_reference_are_durable() {
    if !have_strace() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let data = root.join("data");
    let trace = root.join("trace.txt");
    let calls = "trace=execve,openat,write,writev,pwrite64,pwritev,pwritev2,sendto,sendmsg,fsync,\
                 fdatasync,rename,renameat,renameat2,mkdir,mkdirat";
    let wrapper = strace_args(&trace, calls, "1048576");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut srv = spawn_bin_under(&data, &wrapper).unwrap_or_else(|e| panic!("{e}"));
    // Larger than an index entry may hold (about 20 KiB of kernel arguments) ...
    let args: Vec<String> = (0..200)
        .map(|i| format!("traced.large.{i}={}", "a".repeat(80)))
        .collect();
    let (large_id, canonical) = post(
        &srv,
        format!("customization: {{extraKernelArgs: [{}]}}", args.join(", ")),
    )
    .await;
    assert!(canonical.len() > 16 << 10);
    // ... and small.
    let (small_id, _) = post(
        &srv,
        "customization: {extraKernelArgs: [traced.small=1]}".into(),
    )
    .await;
    // Stop the server itself (strace exits with it).
    let pid = traced_pid(&trace);
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    srv.child.wait().unwrap();

    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = parse(&text);
    let acks: Vec<usize> = calls
        .iter()
        .filter(|c| {
            c.is(&["write", "writev", "sendto", "sendmsg"]) && c.args.contains("HTTP/1.1 201")
        })
        .map(|c| c.start)
        .collect();
    assert_eq!(acks.len(), 2, "two 201 responses in the trace");
    let document = format!("image-factory-document/1 schematic {large_id} 0\n{canonical}");
    let name = blake3::hash(document.as_bytes()).to_hex().to_string();
    assert_document_order(&calls, &data, "schematics", Some(&name), acks[0]);
    assert_new_dirs_synced(&calls, &data, &acks);
    assert_logged_before(&calls, &data, &small_id, acks[1]);
}

#[test]
fn a_release_record_is_written_after_its_blobs_and_before_the_import_ends() {
    if !have_strace() {
        return;
    }
    let Some(_) = crate::common::kit::kit_inputs() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = std::fs::canonicalize(dir.path()).unwrap();
    let mut opts = image_factory::synth::SynthOptions::new(&root.join("kit"));
    opts.versions = vec!["v1.11.0".into()];
    opts.arches = vec!["amd64".into()];
    opts.extensions = 0;
    image_factory::synth::synth_release(&opts).unwrap_or_else(|e| panic!("{e}"));
    let data = root.join("data");
    let trace = root.join("trace.txt");
    // Blob data is written with write(2) and left out; sled's log is written with pwrite64.
    let calls = "trace=execve,openat,pwrite64,pwritev,pwritev2,fsync,fdatasync,syncfs,rename,\
                 renameat,renameat2,mkdir,mkdirat";
    let out = Command::new("strace")
        .args(strace_args(&trace, calls, "4194304"))
        .arg(crate::common::bin())
        .arg("import")
        .arg(root.join("kit/bundle.tar"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--trust-key")
        .arg(root.join("kit/signing-key.pub"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    // The process's own exit (its threads' exits come earlier, under their own ids).
    let pid = traced_pid(&trace);
    let exit = text
        .lines()
        .position(|l| {
            l.split_once(' ')
                .is_some_and(|(p, rest)| p == pid && rest.trim() == "+++ exited with 0 +++")
        })
        .expect("the import's exit in the trace");
    let calls = parse(&text);
    let rename = assert_document_order(&calls, &data, "releases", None, exit);
    assert_new_dirs_synced(&calls, &data, &[exit]);

    // Every blob is durable and in place before the release document is created.
    let tmp = &rename.strings()[0];
    let created = first(&calls, |c| {
        c.name == "openat" && c.ok() && c.result.contains(tmp.as_str())
    })
    .expect("the release document's temporary file");
    let blobs = format!("{}/blobs/", data.display());
    let is_blob = |dest: &str| {
        dest.strip_prefix(&blobs)
            .is_some_and(|r| r.len() == 67 && r.as_bytes()[2] == b'/')
    };
    let blob_renames: Vec<&Call> = calls
        .iter()
        .filter(|c| c.is(RENAMES) && c.ok() && c.strings().last().is_some_and(|d| is_blob(d)))
        .collect();
    assert!(
        blob_renames.len() > 10,
        "only {} blobs renamed",
        blob_renames.len()
    );
    let syncs: Vec<&Call> = calls
        .iter()
        .filter(|c| c.ok() && (c.name == "syncfs" || c.is(SYNCS)))
        .collect();
    for r in blob_renames {
        let names = r.strings();
        let (tmp, dest) = (&names[0], &names[names.len() - 1]);
        let dir = parent(dest);
        let data_synced = syncs
            .iter()
            .any(|c| c.end < r.start && (c.name == "syncfs" || c.fd_path() == Some(tmp.as_str())));
        assert!(
            data_synced,
            "blob {dest} renamed before its data was synced"
        );
        let placed = syncs.iter().any(|c| {
            c.start > r.end
                && c.end < created.start
                && (c.name == "syncfs" || c.fd_path() == Some(dir.as_str()))
        });
        assert!(
            placed,
            "blob {dest} was not durably in place before the release record"
        );
    }
}
