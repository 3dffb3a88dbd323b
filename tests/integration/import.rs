//! `image-factory import` with the real binary: verified import, refusal of tampered, unsigned
//! and unknown-key content with nothing made visible, a locked data directory, `kill -9`
//! in the middle of an import followed by a completing re-run, and the explicit, warned-about
//! skipping of signature verification.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::release::mini_release;
use image_factory::catalog::{Release, ReleaseStore};
use image_factory::store::{BlobStore, MetaStore, SledStore};
use image_factory::trust::SigningKey;

/// The test signing key of `seed`.
pub(crate) fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32])
}

/// Writes the public half of `k` into `dir` and returns its path.
pub(crate) fn write_pub(dir: &Path, k: &SigningKey) -> std::path::PathBuf {
    let p = dir.join("signing-key.pub");
    std::fs::write(&p, k.public_key_pem().expect("pem")).expect("write key");
    p
}

/// Runs `image-factory import ARGS`.
pub(crate) fn import(args: &[&str]) -> Output {
    Command::new(crate::common::bin())
        .arg("import")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run import")
}

/// The standard error of a finished command.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reads the published release (the store is opened and closed again).
pub(crate) fn release(data: &Path, tag: &str) -> Option<std::sync::Arc<Release>> {
    let meta: Arc<dyn MetaStore> =
        Arc::new(SledStore::open(&data.join("meta")).expect("open meta"));
    let blobs = BlobStore::open(&data.join("blobs"), meta).expect("open blobs");
    ReleaseStore::new(&blobs).get(tag).expect("get")
}

#[test]
fn verified_import_is_idempotent_and_complete() {
    let t = tempfile::tempdir().expect("tmp");
    let k = key(1);
    let mini = mini_release(&t.path().join("layout"), "v1.11.0", k.clone(), 4096);
    let pubkey = write_pub(t.path(), &k);
    let data = t.path().join("data");
    let layout = t.path().join("layout");
    let args = [
        layout.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ];
    let out = import(&args);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("direct mode: importing into data directory"),
        "{err}"
    );
    assert!(
        err.contains("imported v1.11.0 (verified by 1 key(s))"),
        "{err}"
    );
    assert!(err.contains("3 of 3 extension(s), 1 overlay(s)"), "{err}");

    let r = release(&data, "v1.11.0").expect("release visible");
    assert!(!r.partial);
    let amd64 = &r.arches["amd64"];
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-stub.efi",
        "systemd-boot.efi",
    ] {
        assert!(amd64.assets.contains_key(f), "missing {f}");
    }
    assert!(amd64.grub.contains_key("i386-pc/boot.img"));
    assert!(amd64.installer_base.is_some());
    assert_eq!(r.extensions.len(), 3);
    assert!(r.extensions.iter().all(|e| e.images.contains_key("amd64")));
    assert_eq!(r.extensions[1].name, "siderolabs/fw-test");
    assert_eq!(r.extensions[1].description, "The fw-test extension.\n");
    // The stored kernel is byte-identical to the one in the imager image.
    {
        let meta: Arc<dyn MetaStore> =
            Arc::new(SledStore::open(&data.join("meta")).expect("open meta"));
        let blobs = BlobStore::open(&data.join("blobs"), meta).expect("blobs");
        let stored = std::fs::read(
            blobs
                .path(&amd64.assets["vmlinuz"].blake3)
                .expect("blob name"),
        )
        .expect("read");
        assert_eq!(stored, mini.vmlinuz);
        // The catalogue images are named by the record, so GC keeps them and the scrub
        // checks them.
        assert_eq!(
            r.catalogs.len(),
            2,
            "the extensions and overlays catalogues"
        );
        let needed = r.needed_blobs(&blobs).expect("needed blobs");
        for c in &r.catalogs {
            let info = blobs
                .by_sha256(c.manifest.hex())
                .expect("index")
                .expect("catalogue manifest stored");
            assert!(needed.contains_key(&info.blake3), "{}", c.reference);
        }
    }

    // Re-import: same release, every blob already present.
    let again = import(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("0 blobs stored"),
        "{}",
        stderr(&again)
    );
    let r2 = release(&data, "v1.11.0").expect("still visible");
    assert_eq!(r2.imported_at, r.imported_at);
    assert_eq!(r2.arches, r.arches);

    // Only one extension: the release says it is partial.
    let data2 = t.path().join("data2");
    let out = import(&[
        t.path().join("layout").to_str().unwrap(),
        "--data-dir",
        data2.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
        "--extensions",
        "svc-test",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let p = release(&data2, "v1.11.0").expect("partial release");
    assert!(p.partial);
    let imported: Vec<&str> = p
        .extensions
        .iter()
        .filter(|e| !e.images.is_empty())
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(imported, ["siderolabs/svc-test"]);
}

/// Builds a fresh release, lets `spoil` damage it, imports it and expects a refusal naming
/// `expect` with no release made visible.
fn refused(
    spoil: impl FnOnce(&mut crate::common::release::Mini),
    trust: &SigningKey,
    expect: &[&str],
) {
    let t = tempfile::tempdir().expect("tmp");
    let mut mini = mini_release(&t.path().join("layout"), "v1.11.0", key(1), 4096);
    spoil(&mut mini);
    mini.layout.finish();
    let pubkey = write_pub(t.path(), trust);
    let data = t.path().join("data");
    let out = import(&[
        t.path().join("layout").to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "import unexpectedly succeeded: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert!(
        release(&data, "v1.11.0").is_none(),
        "a refused import became visible"
    );
}

#[test]
fn tampered_layer_is_refused() {
    refused(
        |m| {
            let layer = &m.layout.layers["ghcr.io/siderolabs/imager:v1.11.0"][0];
            let path = m.layout.blob_path(&layer.digest);
            let mut bytes = std::fs::read(&path).expect("read");
            let n = bytes.len() / 2;
            bytes[n] ^= 0xff;
            std::fs::write(&path, bytes).expect("write");
        },
        &key(1),
        &["import of v1.11.0 failed", "does not match"],
    );
}

#[test]
fn tampered_manifest_is_refused() {
    refused(
        |m| {
            let digest = m.layout.digests["ghcr.io/siderolabs/installer-base:v1.11.0"].clone();
            let path = m.layout.blob_path(&digest);
            let mut bytes = std::fs::read(&path).expect("read");
            bytes.push(b' ');
            std::fs::write(&path, bytes).expect("write");
        },
        &key(1),
        &["import of v1.11.0 failed"],
    );
}

#[test]
fn missing_signature_is_refused() {
    refused(
        |m| {
            let d = m.layout.digests["ghcr.io/siderolabs/extensions:v1.11.0"].clone();
            m.layout.remove_root(&format!(
                "ghcr.io/siderolabs/extensions:{}",
                d.signature_tag()
            ));
        },
        &key(1),
        &["ghcr.io/siderolabs/extensions:v1.11.0", "not signed"],
    );
}

#[test]
fn unknown_key_is_refused() {
    refused(
        |_| {},
        &key(2),
        &["refusing ghcr.io/siderolabs/imager:v1.11.0"],
    );
}

#[tokio::test]
async fn locked_data_directory_is_reported() {
    let t = tempfile::tempdir().expect("tmp");
    let k = key(1);
    mini_release(&t.path().join("layout"), "v1.11.0", k.clone(), 1024);
    let pubkey = write_pub(t.path(), &k);
    let data = t.path().join("data");
    let dir = data.display().to_string();
    let srv = crate::common::TestServer::start_with(move |c| c.storage.data_dir = dir).await;
    let out = import(&[
        t.path().join("layout").to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is in use by a running appliance"),
        "{}",
        stderr(&out)
    );
    srv.stop().await;
}

#[test]
fn kill_9_during_import_then_rerun_completes() {
    let t = tempfile::tempdir().expect("tmp");
    let k = key(1);
    // A large kernel so the import is still copying when it is killed.
    mini_release(&t.path().join("layout"), "v1.11.0", k.clone(), 96 << 20);
    let pubkey = write_pub(t.path(), &k);
    let data = t.path().join("data");
    let layout = t.path().join("layout");
    let args = [
        layout.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ];
    let mut child = Command::new(crate::common::bin())
        .arg("import")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill as soon as a blob is being written (a temporary file exists).
    let tmp = data.join("blobs").join("tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_partial = false;
    while Instant::now() < deadline {
        if std::fs::read_dir(&tmp)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
        {
            saw_partial = true;
            break;
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(saw_partial, "never observed the import writing a blob");
    assert!(
        release(&data, "v1.11.0").is_none(),
        "killed import is visible"
    );

    let out = import(&args);
    assert!(out.status.success(), "re-run failed: {}", stderr(&out));
    assert!(release(&data, "v1.11.0").is_some());
    assert_eq!(
        std::fs::read_dir(&tmp).expect("tmp dir").count(),
        0,
        "temporary blob files left behind"
    );
}

/// Packs a layout directory into an oci-archive tar (what `bundle create` writes).
fn tar_layout(dir: &Path, out: &Path) {
    let f = std::fs::File::create(out).expect("create tar");
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", dir).expect("tar layout");
    b.finish().expect("finish tar");
}

#[tokio::test]
async fn server_mode_import_through_the_admin_api() {
    let t = tempfile::tempdir().expect("tmp");
    let k = key(1);
    mini_release(&t.path().join("layout"), "v1.11.0", k.clone(), 1 << 20);
    let bundle = t.path().join("bundle.tar");
    tar_layout(&t.path().join("layout"), &bundle);
    let pubkey = write_pub(t.path(), &k);
    let data = t.path().join("data");
    let dir = data.display().to_string();
    let srv = crate::common::TestServer::start_with(move |c| c.storage.data_dir = dir).await;
    let token_file = data.join("keys").join("admin-token");
    let base = format!("http://{}", srv.addrs.http);
    // The admin API is not on the public listener.
    let public = crate::common::client()
        .post(format!("{base}/admin/import"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(public.status().as_u16(), 404);

    // A wrong token is refused before anything is read.
    let (admin, url) = srv.admin("/admin/import");
    let bad = admin
        .post(url)
        .bearer_auth("not-the-token")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status().as_u16(), 401);
    assert!(bad.headers().contains_key("www-authenticate"));

    // `image-factory import BUNDLE --server SERVER` with the key (and the token file, when
    // given), in a thread, from a directory that is not the data directory's parent.
    let import_through = |server: String, token: Option<&Path>| {
        let mut args = vec![
            "import".to_string(),
            bundle.display().to_string(),
            "--server".into(),
            server,
            "--trust-key".into(),
            pubkey.display().to_string(),
        ];
        if let Some(token) = token {
            args.extend(["--admin-token-file".into(), token.display().to_string()]);
        }
        tokio::task::spawn_blocking(move || {
            Command::new(crate::common::bin())
                .args(&args)
                .current_dir("/")
                .stdin(Stdio::null())
                .output()
                .expect("run")
        })
    };

    // The CLI pointed at the public port (the admin API's old place) says where it went.
    let out = import_through(base.clone(), Some(&token_file))
        .await
        .expect("join");
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "an import through the public port succeeded"
    );
    assert!(err.contains("is --server the admin listener?"), "{err}");

    // Through the Unix socket, the token is found beside it (the data directory's), as an
    // operator of the installed service types it: `--server unix:/var/lib/…/admin.sock`.
    let out = import_through(srv.admin_server_arg(), None)
        .await
        .expect("join");
    let err = stderr(&out);
    assert!(out.status.success(), "server-mode import failed: {err}");
    assert!(err.contains("server mode: importing through"), "{err}");
    assert!(err.contains("imported v1.11.0"), "{err}");

    let versions = reqwest::get(format!("{base}/versions"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert_eq!(versions, "[\"v1.11.0\"]\n");
    let status: serde_json::Value = reqwest::get(format!("{base}/status"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(status["releases"][0]["version"], "v1.11.0");
    assert_eq!(status["releases"][0]["verified"], true);
    assert_eq!(status["releases"][0]["extensions"], "3/3");
    // The upload was removed after the import.
    let leftovers = std::fs::read_dir(data.join("tmp"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("upload-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
    srv.stop().await;
}

#[test]
fn skipping_verification_is_explicit_and_warned_at_every_start() {
    let t = tempfile::tempdir().expect("tmp");
    // Unsigned content: refused unless verification is skipped on request.
    let mut mini = mini_release(&t.path().join("layout"), "v1.11.0", key(1), 4096);
    let d = mini.layout.digests["ghcr.io/siderolabs/imager:v1.11.0"].clone();
    mini.layout
        .remove_root(&format!("ghcr.io/siderolabs/imager:{}", d.signature_tag()));
    mini.layout.finish();
    let data = t.path().join("data");
    let layout = t.path().join("layout");
    let base = [
        layout.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let out = import(&base);
    assert!(!out.status.success(), "no key and no skip flag must fail");
    assert!(release(&data, "v1.11.0").is_none());

    let mut args = base.to_vec();
    args.push("--insecure-skip-signature-verification");
    let out = import(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = release(&data, "v1.11.0").expect("published");
    assert_eq!(r.signatures, image_factory::catalog::Signatures::Skipped);

    // Every start says so, naming the release.
    for _ in 0..2 {
        let mut s = crate::common::spawn_bin(&data).expect("serve");
        let deadline = Instant::now() + Duration::from_secs(10);
        let warned = loop {
            let lines = s.log.lock().map(|l| l.clone()).unwrap_or_default();
            let found = lines.iter().any(|l| {
                l.contains("\"WARN\"") && l.contains("v1.11.0") && l.contains("NOT verified")
            });
            if found || Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = s.child.kill();
        let _ = s.child.wait();
        assert!(
            warned,
            "no warning at start: {:?}",
            s.log.lock().map(|l| l.clone())
        );
    }
}
