//! The overlay protocol and its sandbox, with a static busybox (the test kit's Debian
//! `busybox-static`) as the installer's shell.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::sandbox::{SandboxRun, run_sandboxed};
use super::*;
use crate::imager::cancel::Cancel;
use crate::imager::tool::{ToolError, Tools};

/// The kit's static busybox, or `None` (with the notice) when the kit is not there or bwrap
/// is not installed.
fn prerequisites() -> Option<PathBuf> {
    let bwrap = Tools::default().locate(sandbox::BWRAP).is_some();
    if !testsupport::tools::require(bwrap, "bwrap (Debian bubblewrap) not installed") {
        return None;
    }
    match crate::synth::KitInputs::locate(&crate::synth::default_kit_dir()) {
        Ok(k) => Some(k.busybox),
        Err(e) => {
            testsupport::tools::require(false, &format!("test kit inputs missing: {e}"));
            None
        }
    }
}

fn write_exec(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An overlay tree under `dir` whose installer `t` runs `script` with busybox as its shell.
fn overlay(dir: &Path, busybox: &Path, script: &str) -> Overlay {
    let root = dir.join("overlay");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    write_exec(
        &root.join("installers/t"),
        &format!("#!/overlay/bin/busybox sh\nB=/overlay/bin/busybox\n{script}\n"),
    );
    Overlay {
        name: "t".into(),
        root,
    }
}

fn tool_run(timeout: Duration) -> ToolRun {
    ToolRun {
        tools: Tools {
            dirs: Vec::new(),
            timeout,
        },
        cancel: Cancel::new(),
    }
}

fn run(
    o: &Overlay,
    tools: &ToolRun,
    work: &Path,
    image: Option<&Path>,
) -> Result<String, ImagerError> {
    let r = SandboxRun {
        name: &o.name,
        overlay: &o.root,
        work,
        image,
        argv: vec!["/overlay/installers/t".into(), "get-options".into()],
        stdin: b"{}\n".to_vec(),
        file_size_limit: 1 << 20,
    };
    run_sandboxed(tools, &r).map(|out| String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn get_options_and_install_speak_the_protocol() {
    let Some(busybox) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = overlay(
        dir.path(),
        &busybox,
        r#"case "$1" in
get-options)
    opt=$($B sed -n 's/^board: *//p')
    printf 'name: t\nkernelArgs:\n  - console=ttyS2\n  - board=%s\npartitionOptions:\n  offset: 2048\n' "$opt"
    ;;
install)
    in=$($B cat)
    disk=$(echo "$in" | $B sed -n 's/^installDisk: *//p')
    prefix=$(echo "$in" | $B sed -n 's/^mountPrefix: *//p')
    art=$(echo "$in" | $B sed -n 's/^artifactsPath: *//p')
    printf 'UBOOT' | $B dd of="$disk" bs=512 seek=64 conv=notrunc 2>/dev/null
    $B mkdir -p "$prefix/boot/EFI/dtb"
    $B cp "$art/board.dtb" "$prefix/boot/EFI/dtb/board.dtb"
    echo "$in" | $B grep -q 'rev: 2' && echo seen > "$prefix/boot/EFI/options.txt"
    ;;
esac"#,
    );
    std::fs::create_dir_all(o.root.join("artifacts")).unwrap();
    std::fs::write(o.root.join("artifacts/board.dtb"), b"DTB").unwrap();
    let tools = tool_run(Duration::from_secs(30));
    let options = serde_json::json!({"board": "rock5", "rev": 2});
    let got = o
        .get_options(&tools, &options, &dir.path().join("w1"))
        .unwrap();
    assert_eq!(got.kernel_args, ["console=ttyS2", "board=rock5"]);
    assert_eq!(got.partition_options.offset, 2048);

    let disk = dir.path().join("disk.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let files = o
        .install(&tools, &options, &disk, &dir.path().join("w2"))
        .unwrap();
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(&bytes[64 * 512..64 * 512 + 5], b"UBOOT");
    assert_eq!(bytes.len(), 4 << 20);
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["dtb/board.dtb", "options.txt"]);
}

#[test]
fn the_installer_sees_no_host_files_no_data_directory_and_no_network() {
    let Some(busybox) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // a "data directory" next to the overlay, with a secret
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("signing-key.pem"), "SECRET").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        r#"echo "root: $($B ls / | $B tr '\n' ' ')"
echo "uid: $($B id -u)"
for f in /etc/passwd {data}/signing-key.pem; do
    if $B cat "$f" >/dev/null 2>&1; then echo "read: $f"; fi
done
if $B mknod /tmp/null c 1 3 2>/dev/null; then echo "privileged: mknod"; fi
if $B chown 0:0 /tmp 2>/dev/null; then echo "privileged: chown"; fi
if $B kill -0 {test_pid} 2>/dev/null; then echo "host process: {test_pid}"; fi
echo "ifaces: $($B ip -o link | $B cut -d: -f2 | $B tr -d ' ' | $B tr '\n' ' ')"
$B timeout 3 $B nc 127.0.0.1 {port} </dev/null >/dev/null 2>&1
if $B touch /overlay/x 2>/dev/null; then echo "wrote: overlay"; fi
if $B touch /x 2>/dev/null; then echo "wrote: root"; fi"#,
        data = data.display(),
        test_pid = std::process::id(),
    );
    let o = overlay(dir.path(), &busybox, &script);
    let out = run(
        &o,
        &tool_run(Duration::from_secs(30)),
        &dir.path().join("w"),
        None,
    )
    .unwrap();
    let line = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut root: Vec<String> = line("root").split_whitespace().map(String::from).collect();
    root.sort();
    assert_eq!(root, ["dev", "overlay", "tmp"], "{out}");
    assert_eq!(line("uid"), "65534", "{out}");
    assert!(!out.contains("read: "), "{out}");
    assert!(!out.contains("privileged: "), "no capabilities: {out}");
    assert!(!out.contains("host process: "), "own PID namespace: {out}");
    assert_eq!(line("ifaces"), "lo", "{out}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host's loopback listener was reached"
    );
    assert!(!out.contains("wrote: "), "{out}");
}

#[test]
fn a_hanging_installer_is_killed_at_the_deadline() {
    let Some(busybox) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("w");
    let o = overlay(
        dir.path(),
        &busybox,
        // a helper in a session (and process group) of its own
        "$B setsid $B sh -c \"$B sleep 3; $B touch /tmp/survived\" &\n$B sleep 60",
    );
    let started = Instant::now();
    let e = run(&o, &tool_run(Duration::from_secs(1)), &work, None).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
    assert!(
        matches!(&e, ImagerError::OverlayInstaller { source, .. }
            if matches!(source.downcast_ref::<ToolError>(), Some(ToolError::TimedOut { .. }))),
        "{e}"
    );
    assert!(e.to_string().contains("was killed"), "{e}");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !work.join("survived").exists(),
        "a process of the killed sandbox kept running"
    );
}

#[test]
fn a_sandbox_that_cannot_be_set_up_refuses_to_run_the_installer() {
    let Some(busybox) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("w");
    let o = overlay(dir.path(), &busybox, "$B touch /tmp/ran\necho 'name: t'");
    // bwrap as on a host without unprivileged user namespaces: the real bwrap, in a user
    // namespace whose limit of nested user namespaces is 0
    let bin = dir.path().join("bin");
    let real = Tools::default().locate(sandbox::BWRAP).unwrap();
    write_exec(
        &bin.join(sandbox::BWRAP),
        &format!(
            "#!/bin/sh\nexec /usr/bin/unshare --user --map-root-user /bin/sh -c \
             'echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"' {} \"$@\"\n",
            real.display()
        ),
    );
    let tools = ToolRun {
        tools: Tools {
            dirs: vec![bin.clone()],
            timeout: Duration::from_secs(30),
        },
        cancel: Cancel::new(),
    };
    let e = run(&o, &tools, &work, None).unwrap_err();
    assert!(matches!(e, ImagerError::OverlaySandbox { .. }), "{e}");
    assert!(e.to_string().contains("cannot be set up"), "{e}");
    assert!(
        matches!(&e, ImagerError::OverlaySandbox { reason, .. }
            if reason.contains("Creating new namespace failed")),
        "{e}"
    );
    assert!(!work.join("ran").exists(), "the installer ran");
    assert_eq!(
        crate::imager::error::ErrorKind::Internal,
        e.kind(),
        "a refusal of the appliance, not of the request"
    );

    // a bwrap that fails before running anything: the same refusal
    let working = ToolRun {
        tools: Tools {
            dirs: vec![bin.join("missing")],
            timeout: Duration::from_secs(30),
        },
        cancel: Cancel::new(),
    };
    std::fs::remove_file(bin.join(sandbox::BWRAP)).unwrap();
    let mut f = std::fs::File::create(bin.join(sandbox::BWRAP)).unwrap();
    f.write_all(b"#!/bin/sh\nexit 1\n").unwrap();
    drop(f);
    std::fs::set_permissions(
        bin.join(sandbox::BWRAP),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let broken = ToolRun {
        tools: Tools {
            dirs: vec![bin],
            timeout: Duration::from_secs(30),
        },
        cancel: Cancel::new(),
    };
    let e = run(&o, &broken, &work, None).unwrap_err();
    assert!(matches!(e, ImagerError::OverlaySandbox { .. }), "{e}");
    // the same installer runs where the sandbox can be set up (the system's bwrap)
    assert!(run(&o, &working, &work, None).is_ok());
    assert!(work.join("ran").exists());
}
