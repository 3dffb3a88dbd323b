//! A full data volume is handled, not discovered (issue 14 item 8): with the data directory on
//! a small filesystem filled by builds, the build that no longer fits answers `507` with
//! `Retry-After` and says why, wakes garbage collection at once, and the same request then
//! succeeds because the least recently served assets were evicted down to the free-space
//! watermark. `gc --server` takes a quota for one pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::assets::{V, create_schematic, get};
use crate::common::{TestServer, kit};

/// Size of the data volume: the imported kit (~55 MB) and four 62 MB ISOs fit, a fifth does not.
const VOLUME_MIB: u64 = 320;
/// The free-space watermark: more than one ISO build needs, so that space for a retry is freed.
const MIN_FREE: u64 = 100 << 20;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB; `None` (reported as a missing prerequisite: a failure under
    /// `IF_REQUIRE_TOOLS=1`) when this process may not mount one.
    fn mount(mib: u64) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Some(e.to_string()),
        };
        let ok = testsupport::tools::require(
            why.is_none(),
            &format!(
                "cannot mount a tmpfs for a small data volume (needs root): {}",
                why.as_deref().unwrap_or_default()
            ),
        );
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a test that failed with the server running): detach it anyway.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// The `gc` worker's state in `/status`.
async fn gc_worker(s: &TestServer) -> serde_json::Value {
    s.status().await["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == "gc")
        .cloned()
        .expect("a gc worker")
}

/// Where the store keeps the blob holding `bytes`.
fn blob_path(data: &Path, bytes: &[u8]) -> PathBuf {
    let name = blake3::hash(bytes).to_hex().to_string();
    data.join("blobs").join(&name[..2]).join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_volume_answers_507_and_recovers_by_eviction() {
    let started = Instant::now();
    if !testsupport::tools::have("xorriso", "xorriso") {
        return;
    }
    let Some(k) = kit::imported(0) else { return };
    let Some(volume) = Tmpfs::mount(VOLUME_MIB) else {
        return;
    };
    let data = volume.path().join("data");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&k.data)
        .arg(&data)
        .status()
        .expect("cp");
    assert!(copied.success(), "copying the imported kit onto the volume");
    let dir = data.display().to_string();
    let s = TestServer::start_with(move |c| {
        c.storage.data_dir = dir;
        c.http.external_url = "http://factory.test:8080/".into();
        c.build.max_concurrency = 1;
        c.cache.scrub_interval_seconds = 0;
        // Passes at start and then hourly: any later pass is one woken by running out of space.
        c.cache.gc_interval_seconds = 3600;
        c.cache.max_bytes = 1 << 40;
        c.cache.min_free_bytes = MIN_FREE;
    })
    .await;
    // Schematics first: once the volume is full, nothing but builds should meet it.
    let mut ids = Vec::new();
    for i in 0..8 {
        let yaml = format!("customization:\n  extraKernelArgs:\n    - if.full={i}\n");
        ids.push(create_schematic(&s, &yaml).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while gc_worker(&s).await["runs"] != 1 {
        assert!(Instant::now() < deadline, "the first gc pass did not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Distinct ISOs until one no longer fits.
    let mut built: Vec<Vec<u8>> = Vec::new();
    let mut full = None;
    for id in &ids {
        let path = format!("/image/{id}/{V}/metal-amd64.iso");
        let got = get(&s, &path, &[]).await;
        match got.status {
            200 => built.push(got.body),
            507 => {
                full = Some((path, got));
                break;
            }
            other => panic!("GET {path}: {other}: {}", got.text()),
        }
    }
    let Some((path, refused)) = full else {
        panic!("{} ISOs fit on a {VOLUME_MIB} MiB volume", built.len());
    };
    assert!(built.len() >= 3, "only {} ISO(s) fit", built.len());
    let retry_after: u64 = refused
        .header("retry-after")
        .parse()
        .expect("a 507 carries Retry-After in seconds");
    assert!(retry_after > 0);
    let text = refused.text();
    assert!(
        text.contains("insufficient storage") && text.contains("data volume is full"),
        "{text}"
    );

    // The failure woke garbage collection (its period is an hour away).
    let deadline = Instant::now() + Duration::from_secs(30);
    let worker = loop {
        let w = gc_worker(&s).await;
        if w["runs"].as_u64() >= Some(2) {
            break w;
        }
        assert!(Instant::now() < deadline, "gc was not woken: {w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let progress = worker["progress"].as_str().unwrap_or_default().to_string();
    assert_eq!(worker["errors"], 0, "{worker}");
    assert!(
        progress.starts_with("after running out of space:") && !progress.contains("evicted 0 "),
        "{progress}"
    );
    let free = image_factory::assets::disk_space(&data).expect("statvfs");
    assert!(
        free.available >= MIN_FREE,
        "{} bytes free after gc: {progress}",
        free.available
    );
    // Least recently served first: the first ISO went, the last one built is still there.
    assert!(!blob_path(&data, &built[0]).exists(), "{progress}");
    assert!(
        blob_path(&data, built.last().expect("built")).exists(),
        "{progress}"
    );

    // The same request succeeds now.
    let again = get(&s, &path, &[]).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body.len(), built[0].len());

    // `gc --server` takes a quota for one pass (the appliance's own is 1 TiB).
    let token = data.join("keys/admin-token");
    let out = Command::new(crate::common::bin())
        .args(["gc", "--dry-run", "--max-bytes", "1", "--server"])
        .arg(s.admin_server_arg())
        .arg("--admin-token-file")
        .arg(&token)
        .env_remove("RUST_LOG")
        .output()
        .expect("gc --server");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(quota 0.0 MiB)"), "{stderr}");
    assert!(
        stdout.contains(&format!("would evict {}", ids[built.len()])),
        "{stdout}"
    );
    s.stop().await;
    drop(volume);
    println!(
        "disk_full: {} ISOs fit, recovered in {:.1} s total",
        built.len(),
        started.elapsed().as_secs_f64()
    );
}
