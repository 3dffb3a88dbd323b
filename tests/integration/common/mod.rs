//! Shared helpers for integration tests: in-process servers and the real binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use image_factory::config::Config;
use image_factory::frontend::{BoundAddrs, Running, serve};

/// Spec §2.5 vectors: (input YAML, canonical YAML, ID).
pub const VECTORS: &[(&str, &str, &str)] = &[
    (
        "{}",
        "customization: {}\n",
        "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba",
    ),
    (
        "customization: {extraKernelArgs: [noapic, nolapic]}",
        "customization:\n    extraKernelArgs:\n        - noapic\n        - nolapic\n",
        "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c",
    ),
    (
        "{\"customization\":{\"secureboot\": {\"includeWellKnownCertificates\": true}}}",
        "customization:\n    secureboot:\n        includeWellKnownCertificates: true\n",
        "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6",
    ),
    (
        "customization:\n  bootloader: grub\n",
        "customization:\n    bootloader: grub\n",
        "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb",
    ),
    (
        "customization:\n  bootloader: sd-boot\n",
        "customization:\n    bootloader: sd-boot\n",
        "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3",
    ),
    (
        "{\"overlay\": {\"name\": \"rpi_generic\", \"image\": \"siderolabs/sbc-raspberrypi\"}}",
        "overlay:\n    image: siderolabs/sbc-raspberrypi\n    name: rpi_generic\ncustomization: {}\n",
        "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9",
    ),
];

/// Installs the rustls provider once (reqwest needs one; both backends are compiled in).
pub fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An in-process server on loopback port 0 with its own data directory.
pub struct TestServer {
    /// Bound addresses.
    pub addrs: BoundAddrs,
    /// Data directory (kept alive for the server's lifetime).
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<Running>,
}

impl TestServer {
    /// Starts a server with default config except loopback listeners and a temp data dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting `tweak` adjust the config.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        init();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::default();
        cfg.storage.data_dir = dir.path().display().to_string();
        cfg.http.http_listen_addr = "127.0.0.1:0".into();
        cfg.metrics.addr = "127.0.0.1:0".into();
        cfg.tftp.listen_addr = "127.0.0.1:0".into();
        tweak(&mut cfg);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = serve(cfg, async move {
            let _ = rx.await;
        })
        .await
        .unwrap_or_else(|e| panic!("server starts: {e:?}"));
        Self {
            addrs: running.addrs.clone(),
            dir,
            stop: Some(tx),
            running: Some(running),
        }
    }

    /// URL of `path` on the HTTP listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addrs.http, path)
    }

    /// The anonymous `/status` document.
    pub async fn status(&self) -> serde_json::Value {
        client()
            .get(self.url("/status"))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    /// A client for the admin listener (its Unix socket) and the URL of `path` on it.
    pub fn admin(&self, path: &str) -> (reqwest::Client, String) {
        let image_factory::frontend::AdminAddr::Unix(sock) = &self.addrs.admin else {
            panic!("the test server's admin listener is a Unix socket");
        };
        let c = reqwest::Client::builder()
            .unix_socket(sock.clone())
            .build()
            .expect("admin client");
        (c, format!("http://image-factory.admin{path}"))
    }

    /// The admin listener as `--server` takes it.
    pub fn admin_server_arg(&self) -> String {
        self.addrs.admin.to_string()
    }

    /// URL of `path` on the metrics listener.
    pub fn metrics_url(&self, path: &str) -> String {
        let addr = self.addrs.metrics.expect("metrics enabled");
        format!("http://{addr}{path}")
    }

    /// Stops the server and hands back its data directory (for restart tests).
    pub async fn stop_keep_dir(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        let empty = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, empty)
    }

    /// Triggers graceful shutdown and waits for it (storage flushed).
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(r) = self.running.take() {
            r.wait().await.expect("clean shutdown");
        }
    }
}

/// The data directory's metadata store, opened in-process after a [`TestServer`] on it stopped.
#[allow(dead_code)]
pub async fn open_data_dir_after_stop(data: &std::path::Path) -> image_factory::store::SledStore {
    image_factory::store::open_data_dir(data).expect("open data dir")
}

/// A reqwest client for loopback tests.
pub fn client() -> reqwest::Client {
    init();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// A loopback client that gives up after `timeout` (a client that leaves before its answer).
pub fn impatient_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Path of the real binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_image-factory")
}

/// The real binary running `serve`, with its stderr drained into `log`.
pub struct BinServer {
    /// Child process.
    pub child: Child,
    /// HTTP address read from the log.
    pub http: SocketAddr,
    /// Metrics address read from the log, when the metrics listener was asked for.
    pub metrics: Option<SocketAddr>,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl BinServer {
    /// The log so far, one line per stderr line.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// Starts `image-factory serve` on `data_dir` with loopback port 0; waits for the bound address.
pub fn spawn_bin(data_dir: &std::path::Path) -> Result<BinServer, String> {
    spawn_bin_under(data_dir, &[])
}

/// [`spawn_bin`] run by `wrapper` (a command and its arguments, e.g. `strace -o …`), which
/// must pass the server's stderr through.
pub fn spawn_bin_under(data_dir: &std::path::Path, wrapper: &[&str]) -> Result<BinServer, String> {
    spawn_serve(data_dir, wrapper, LOOPBACK, Some(LOOPBACK), &[], false, &[])
}

/// Loopback, any port.
const LOOPBACK: &str = "127.0.0.1:0";

/// [`spawn_bin`] with the TFTP listener left at its default address (`:69`).
pub fn spawn_bin_default_tftp(data_dir: &std::path::Path) -> Result<BinServer, String> {
    spawn_serve(data_dir, &[], LOOPBACK, None, &[], false, &[])
}

/// [`spawn_bin`] with extra environment variables (`IF_*` configuration) and, with `metrics`,
/// the metrics listener on loopback port 0 ([`BinServer::metrics`]).
pub fn spawn_bin_with(
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    metrics: bool,
) -> Result<BinServer, String> {
    spawn_serve(data_dir, &[], LOOPBACK, Some(LOOPBACK), env, metrics, &[])
}

/// `image-factory serve` on `data_dir` (run by `wrapper` if any, e.g. `ip netns exec <ns>`),
/// HTTP on `http`, TFTP on `tftp` or, with `None`, on its default address, with the
/// variables of `env` set, the metrics listener on loopback port 0 when `metrics` and `extra`
/// arguments after serve's own (`--config FILE`, `--demo`); waits until the HTTP listener is
/// bound.
pub fn spawn_serve(
    data_dir: &std::path::Path,
    wrapper: &[&str],
    http: &str,
    tftp: Option<&str>,
    env: &[(&str, &str)],
    metrics: bool,
    extra: &[&std::ffi::OsStr],
) -> Result<BinServer, String> {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.args(["serve", "--log-format", "json", "--http-listen-addr", http])
        .args(["--metrics-addr", if metrics { "127.0.0.1:0" } else { "" }])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied());
    cmd.args(extra);
    match tftp {
        Some(addr) => cmd.env("IF_TFTP_LISTENADDR", addr),
        None => cmd.env_remove("IF_TFTP_LISTENADDR"),
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let (metrics_tx, metrics_rx) = mpsc::channel::<SocketAddr>();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok())
            {
                if v["message"] == "http listener bound" {
                    let _ = tx.send(addr);
                } else if v["message"] == "metrics listener bound" {
                    let _ = metrics_tx.send(addr);
                }
            }
            if let Ok(mut l) = log2.lock() {
                l.push(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(http) => {
            // The metrics listener is logged right after the HTTP one.
            let metrics = if metrics {
                metrics_rx.recv_timeout(Duration::from_secs(5)).ok()
            } else {
                None
            };
            Ok(BinServer {
                child,
                http,
                metrics,
                log,
            })
        }
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            let lines = log.lock().map(|l| l.join("\n")).unwrap_or_default();
            Err(format!(
                "server did not report its address (exit {status:?}):\n{lines}"
            ))
        }
    }
}
pub mod assets;
pub mod hostile;
pub mod kit;
pub mod layout_registry;
pub mod oci;
pub mod registry;
pub mod release;
pub mod strace;
