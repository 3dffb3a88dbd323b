//! The sandbox an overlay's installer runs in (it is untrusted code from an image): Debian's
//! `bubblewrap` (`bwrap`) with new user, mount, PID, network, IPC, UTS and cgroup namespaces,
//! every capability dropped, an unprivileged uid/gid (65534), a new session, and a root that
//! holds only:
//!
//! * `/overlay` — the extracted overlay image, read-only (the installer, `artifacts/`);
//! * `/tmp` — a fresh, empty scratch directory of this run, writable (the mount prefix the
//!   installer drops boot files into);
//! * `/image/disk.raw` — the disk image being built, writable (`install` only);
//! * a minimal `/dev` (null, zero, random, …); no `/proc` (see [`SandboxRun::bwrap_args`]).
//!
//! The root itself is an empty tmpfs remounted read-only: no host file, no data directory, no
//! host network (the new network namespace has only its own, unconfigured loopback). Files are
//! bounded by `RLIMIT_FSIZE` (the disk image's size), output by the tool runner's capture
//! bound, time by the tool timeout and the build's deadline (the whole process group is killed;
//! `--die-with-parent` and the PID namespace take every process of the sandbox with it).
//!
//! Whether the sandbox was set up is read from bwrap's `--json-status-fd`: it writes an
//! `exit-code` record only when the command it ran exited; a bwrap that fails before that
//! (no user namespaces, a seccomp or systemd restriction, no bwrap at all) makes the build
//! refuse with [`ImagerError::OverlaySandbox`] — the installer is never run unsandboxed.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::Path;
use std::process::Command;

use crate::imager::error::ImagerError;
use crate::imager::tool::{ToolError, ToolRun};

/// The sandbox tool (Debian package `bubblewrap`).
pub const BWRAP: &str = "bwrap";
/// Where the overlay is mounted (read-only) in the sandbox.
pub const SANDBOX_OVERLAY: &str = "/overlay";
/// The writable scratch directory in the sandbox.
pub const SANDBOX_TMP: &str = "/tmp";
/// Where the disk image is mounted (writable) in the sandbox.
pub const SANDBOX_IMAGE: &str = "/image/disk.raw";
/// The unprivileged uid and gid the installer runs as (`nobody`/`nogroup`).
const SANDBOX_ID: &str = "65534";
/// Most bytes of bwrap's status records read.
const MAX_STATUS: u64 = 64 << 10;

/// One run of an overlay installer in the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxRun<'a> {
    /// The overlay's name (error messages).
    pub name: &'a str,
    /// The extracted overlay image (host side), mounted at [`SANDBOX_OVERLAY`].
    pub overlay: &'a Path,
    /// The run's scratch directory (host side, created if missing), mounted at [`SANDBOX_TMP`].
    pub work: &'a Path,
    /// The disk image (host side), mounted at [`SANDBOX_IMAGE`]; `None` for `get-options`.
    pub image: Option<&'a Path>,
    /// The command, with sandbox paths (`/overlay/installers/<name>`, `install`).
    pub argv: Vec<String>,
    /// What the installer reads on stdin.
    pub stdin: Vec<u8>,
    /// Largest file the installer may write (`RLIMIT_FSIZE`).
    pub file_size_limit: u64,
}

impl SandboxRun<'_> {
    /// The protocol step (`get-options`, `install`) for messages.
    fn step(&self) -> &str {
        self.argv.get(1).map_or("run", String::as_str)
    }

    /// bwrap's arguments for this run (`status_fd`: the `--json-status-fd` number).
    fn bwrap_args(&self, status_fd: i32) -> Vec<String> {
        let mut a: Vec<String> = [
            "--unshare-all",
            "--unshare-user",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--uid",
            SANDBOX_ID,
            "--gid",
            SANDBOX_ID,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let path = |p: &Path| p.display().to_string();
        a.extend([
            "--ro-bind".into(),
            path(self.overlay),
            SANDBOX_OVERLAY.into(),
        ]);
        a.extend(["--bind".into(), path(self.work), SANDBOX_TMP.into()]);
        if let Some(image) = self.image {
            a.extend(["--bind".into(), path(image), SANDBOX_IMAGE.into()]);
        }
        // No `/proc`: mounting one needs a fully visible host /proc, which the appliance's
        // unit hides (ProtectKernelTunables, ProcSubset); installers do not need it.
        a.extend(["--dev", "/dev", "--remount-ro", "/"].map(String::from));
        a.extend(["--chdir".into(), SANDBOX_TMP.into()]);
        a.extend([
            "--json-status-fd".into(),
            status_fd.to_string(),
            "--".into(),
        ]);
        a.extend(self.argv.iter().cloned());
        a
    }
}

/// Runs `run` in the sandbox under the build's tool settings; answers the installer's stdout.
pub fn run_sandboxed(tools: &ToolRun, run: &SandboxRun<'_>) -> Result<Vec<u8>, ImagerError> {
    let refuse = |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
        ImagerError::OverlaySandbox {
            name: run.name.to_string(),
            reason,
            source,
        }
    };
    let Some(bwrap) = tools.tools.locate(BWRAP) else {
        return Err(refuse(
            format!("{BWRAP} not found: install Debian package bubblewrap"),
            None,
        ));
    };
    std::fs::create_dir_all(run.work)?;
    let (status_read, status_write) = std::io::pipe()?;
    let status_fd = OwnedFd::from(status_write);
    let raw = status_fd.as_raw_fd();
    let mut cmd = Command::new(&bwrap);
    cmd.args(run.bwrap_args(raw))
        .env_clear()
        .env("PATH", "/overlay/bin:/overlay/installers")
        .env("HOME", SANDBOX_TMP);
    let limit = run.file_size_limit;
    // SAFETY: the closure runs in the forked child before exec and only makes two system
    // calls (fcntl, setrlimit), both async-signal-safe; it touches no allocator or lock.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        cmd.pre_exec(move || {
            // the status pipe is close-on-exec everywhere else; only bwrap inherits it
            let fd = rustix::fd::BorrowedFd::borrow_raw(raw);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            rustix::process::setrlimit(
                rustix::process::Resource::Fsize,
                rustix::process::Rlimit {
                    current: Some(limit),
                    maximum: Some(limit),
                },
            )?;
            Ok(())
        });
    }
    let tool = format!("overlay installer {} {}", run.name, run.step());
    let result = tools
        .tools
        .run_with_input(&tool, cmd, &tools.cancel, Some(run.stdin.clone()));
    drop(status_fd);
    let mut status = String::new();
    let _ = status_read.take(MAX_STATUS).read_to_string(&mut status);
    let ran = status.contains("\"exit-code\"");
    match result {
        Ok(out) if ran => Ok(out),
        Ok(_) => Err(refuse(
            "bwrap reported no exit of the installer".into(),
            None,
        )),
        Err(e @ (ToolError::TimedOut { .. } | ToolError::Cancelled { .. })) => {
            Err(ImagerError::OverlayInstaller {
                name: run.name.to_string(),
                source: Box::new(e),
            })
        }
        Err(e) if !ran => {
            let reason = match &e {
                ToolError::Failed { lines, .. } => lines.clone(),
                other => other.to_string(),
            };
            Err(refuse(reason, Some(Box::new(e))))
        }
        Err(e) => Err(ImagerError::OverlayInstaller {
            name: run.name.to_string(),
            source: Box::new(e),
        }),
    }
}
