//! The command line: exit codes and outputs of `schematic …`, `--version`, `--help`.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::common::{TestServer, VECTORS, bin};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn schematic_id_prints_only_the_id() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (input, _, id)) in VECTORS.iter().enumerate() {
        let path = dir.path().join(format!("s{i}.yaml"));
        std::fs::write(&path, input).unwrap();
        let out = run(&["schematic", "id", path.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{id}\n"));
        let out = run(&["schematic", "id", "-"], Some(input));
        assert_eq!(text(&out.stdout), format!("{id}\n"));
        let out = run(&["schematic", "id"], Some(input));
        assert_eq!(text(&out.stdout), format!("{id}\n"));
    }
}

#[test]
fn schematic_canonical_prints_canonical_yaml() {
    for (input, canonical, _) in VECTORS {
        let out = run(&["schematic", "canonical", "-"], Some(input));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), *canonical);
    }
}

#[test]
fn invalid_input_exits_2_with_error_on_stderr() {
    let out = run(&["schematic", "id", "-"], Some("something:"));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("field something not found in type schematic.Schematic"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["schematic", "id", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["schematic", "id", "/nonexistent/schematic.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/schematic.yaml"));
}

#[test]
fn version_and_help() {
    let out = run(&["--version"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        concat!("image-factory ", env!("CARGO_PKG_VERSION"))
    );
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["schematic", "--help"],
        &["schematic", "id", "--help"],
        &["schematic", "canonical", "--help"],
        &["schematic", "create", "--help"],
        &["schematic", "get", "--help"],
    ] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
    let out = run(
        &[
            "serve",
            "--http-listen-addr",
            "nope",
            "--data-dir",
            "/nonexistent-dir",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("http.httpListenAddr"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_get_against_a_server() {
    let srv = TestServer::start().await;
    let server = format!("http://{}", srv.addrs.http);
    let (input, canonical, id) = VECTORS[1];
    let s = server.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(&["schematic", "create", "--server", &s, "-"], Some(input))
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{id}\n"));
    let s = server.clone();
    let out =
        tokio::task::spawn_blocking(move || run(&["schematic", "get", "--server", &s, id], None))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), canonical);
    let s = server.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &["schematic", "create", "--server", &s, "-"],
            Some("something:"),
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    srv.stop().await;
}

#[test]
fn doctor_reports_checks() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(crate::common::bin())
        .args(["doctor", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("configuration: valid"), "{text}");
    assert!(text.contains("is writable"), "{text}");
    assert!(text.contains("depmod (kmod)"), "{text}");
    assert!(text.contains("xorriso (xorriso): "), "{text}");
    // Exit status follows the depmod check (kmod is installed by test.sh).
    assert_eq!(out.status.success(), !text.contains("[FAIL]"), "{text}");
}
