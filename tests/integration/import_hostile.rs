//! Hostile releases and requests refused at import, with nothing outside the data directory
//! read, moved or created: layers whose `usr/lib/grub` or `usr/install/<arch>` (or a file in
//! them) is a symlink out of the extraction root, architectures that are paths, and signatures
//! replayed under another image's name; and the mirror re-signing that must keep working.

use std::path::Path;
use std::process::Output;

use crate::common::release::{Mini, mini_release};
use crate::import::{import, key, release, stderr, write_pub};
use image_factory::synth::Tree;

const IMAGER: &str = "ghcr.io/siderolabs/imager:v1.11.0";
/// Content that must never reach the blob store.
const SECRET: &[u8] = b"outside the extraction root: must never be stored";

/// Builds the mini release, lets `spoil` change it, and imports it into `<tmp>/data` trusting
/// the key that signed it.
fn import_spoiled(spoil: impl FnOnce(&mut Mini)) -> (tempfile::TempDir, Output) {
    let t = tempfile::tempdir().expect("tmp");
    let mut mini = mini_release(&t.path().join("layout"), "v1.11.0", key(1), 4096);
    spoil(&mut mini);
    mini.layout.finish();
    let pubkey = write_pub(t.path(), &key(1));
    let out = import(&[
        t.path().join("layout").to_str().unwrap(),
        "--data-dir",
        t.path().join("data").to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ]);
    (t, out)
}

/// Replaces the imager image by one whose only layer is `tree` (signed like the original).
fn replace_imager(m: &mut Mini, tree: &Tree) {
    let d = m.layout.digests[IMAGER].clone();
    m.layout.remove_root(IMAGER);
    m.layout
        .remove_root(&format!("ghcr.io/siderolabs/imager:{}", d.signature_tag()));
    m.layout
        .image_tree("siderolabs/imager", Some("v1.11.0"), tree, true);
}

/// The amd64 boot assets of an imager.
fn boot_assets() -> Tree {
    let mut t = Tree::new();
    for f in [
        "vmlinuz",
        "initramfs.xz",
        "systemd-stub.efi",
        "systemd-boot.efi",
    ] {
        t.file(&format!("usr/install/amd64/{f}"), 0o644, f.as_bytes());
    }
    t
}

/// The boot assets and GRUB modules of a well-formed imager.
fn imager_tree() -> Tree {
    let mut t = boot_assets();
    t.file("usr/lib/grub/i386-pc/boot.img", 0o644, &b"bootimg"[..]);
    t
}

/// A directory outside the extraction root holding files with [`SECRET`] content.
fn outside(names: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tmp");
    for n in names {
        std::fs::write(d.path().join(n), SECRET).expect("write");
    }
    d
}

/// Asserts the import failed naming `expect`, published nothing, left every file of `outside`
/// in place and stored none of their bytes.
fn assert_refused(t: &Path, out: &Output, outside: &Path, names: &[&str], expect: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "import unexpectedly succeeded: {err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    let data = t.join("data");
    assert!(
        release(&data, "v1.11.0").is_none(),
        "a refused import became visible"
    );
    for n in names {
        assert_eq!(
            std::fs::read(outside.join(n)).ok().as_deref(),
            Some(SECRET),
            "{n} was moved or changed"
        );
    }
    let mut stack = vec![data.join("blobs")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("stat");
            if meta.is_dir() {
                stack.push(p);
            } else {
                assert!(
                    !meta.file_type().is_symlink(),
                    "{}: a symlink in the store",
                    p.display()
                );
                let bytes = std::fs::read(&p).expect("read blob");
                assert_ne!(bytes, SECRET, "{}: outside content stored", p.display());
            }
        }
    }
}

/// Imports an imager whose layer is `tree` plus a symlink at `link` pointing at
/// `target(<a directory outside holding secret files>)`, and asserts the refusal names `link`
/// with nothing of that directory moved or stored.
fn refused_link(mut tree: Tree, link: &str, target: impl FnOnce(&Path) -> String) {
    let names = ["vmlinuz", "initramfs.xz", "secret.mod"];
    let out_dir = outside(&names);
    let target = target(out_dir.path());
    tree.symlink(link, &target);
    let (t, out) = import_spoiled(|m| replace_imager(m, &tree));
    let named = format!("{link} is a symlink");
    assert_refused(t.path(), &out, out_dir.path(), &names, &[&named, &target]);
}

/// `dir` as a string.
fn text(dir: &Path) -> String {
    dir.to_str().expect("UTF-8 path").to_string()
}

#[test]
fn symlinked_grub_tree_is_refused_and_nothing_outside_is_moved() {
    // (A layer that also had files below the link would be refused while extracting.)
    refused_link(boot_assets(), "usr/lib/grub", text);
}

#[test]
fn symlinked_arch_directory_or_boot_asset_is_refused() {
    // The architecture's directory itself points outside.
    let mut grub_only = Tree::new();
    grub_only.file("usr/lib/grub/i386-pc/boot.img", 0o644, &b"bootimg"[..]);
    refused_link(grub_only, "usr/install/amd64", text);
    // One file inside it points outside (today's main silently skipped it).
    refused_link(imager_tree(), "usr/install/amd64/vmlinuz.efi", |d| {
        text(&d.join("vmlinuz"))
    });
    // A relative link that climbs out through `..` is no better.
    refused_link(imager_tree(), "usr/lib/grub/x86_64-efi", |d| {
        format!("{}{}", "../".repeat(32), text(d).trim_start_matches('/'))
    });
}

#[test]
fn a_well_formed_tree_layer_still_imports() {
    let (t, out) = import_spoiled(|m| replace_imager(m, &imager_tree()));
    assert!(out.status.success(), "{}", stderr(&out));
    let r = release(&t.path().join("data"), "v1.11.0").expect("published");
    assert!(r.arches["amd64"].grub.contains_key("i386-pc/boot.img"));
    assert_eq!(r.arches["amd64"].assets.len(), 4);
}

#[test]
fn signature_replayed_under_another_image_name_is_refused() {
    // The key also signed another imager-shaped image, as `siderolabs/imager-dev`. Presenting
    // it (with its genuine signature) as `siderolabs/imager` must not verify.
    let (t, out) = import_spoiled(|m| {
        let mut evil = imager_tree();
        evil.file("usr/install/amd64/vmlinuz", 0o644, SECRET);
        let d = m
            .layout
            .image_tree("siderolabs/imager-dev", Some("v1.11.0"), &evil, true);
        let original = m.layout.digests[IMAGER].clone();
        m.layout.remove_root(IMAGER);
        m.layout.remove_root(&format!(
            "ghcr.io/siderolabs/imager:{}",
            original.signature_tag()
        ));
        m.layout
            .alias("ghcr.io/siderolabs/imager-dev:v1.11.0", IMAGER);
        let sig = d.signature_tag();
        m.layout.alias(
            &format!("ghcr.io/siderolabs/imager-dev:{sig}"),
            &format!("ghcr.io/siderolabs/imager:{sig}"),
        );
    });
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a replayed signature verified: {err}"
    );
    for e in [
        "refusing ghcr.io/siderolabs/imager:v1.11.0",
        "signature names another repository",
        "ghcr.io/siderolabs/imager-dev",
    ] {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert!(release(&t.path().join("data"), "v1.11.0").is_none());
}

#[test]
fn images_re_signed_at_a_mirror_name_import() {
    // Operator guide §1.1: every image signed with the site key at the mirror's name.
    let (t, out) = import_spoiled(|m| {
        let images: Vec<(String, image_factory::oci::Digest)> = m
            .layout
            .digests
            .iter()
            .map(|(r, d)| (r.clone(), d.clone()))
            .collect();
        let k = m.layout.key.clone();
        for (reference, digest) in images {
            let repo = reference
                .strip_prefix("ghcr.io/")
                .and_then(|r| r.split(['@', ':']).next())
                .expect("upstream reference")
                .to_string();
            m.layout
                .remove_root(&format!("ghcr.io/{repo}:{}", digest.signature_tag()));
            m.layout.sign_as(
                &repo,
                &format!("registry.local:5000/mirror/{repo}"),
                &digest,
                &k,
            );
        }
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("3 of 3 extension(s), 1 overlay(s)"),
        "{}",
        stderr(&out)
    );
    assert!(release(&t.path().join("data"), "v1.11.0").is_some());
}

/// The names in `dir`.
fn listing(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    names
}

#[test]
fn an_architecture_that_is_a_path_is_refused_by_the_cli() {
    let t = tempfile::tempdir().expect("tmp");
    let layout = t.path().join("layout");
    mini_release(&layout, "v1.11.0", key(1), 4096);
    let pubkey = write_pub(t.path(), &key(1));
    let data = t.path().join("data");
    let before = listing(t.path());
    let (layout, data, pubkey) = (
        layout.to_str().unwrap(),
        data.to_str().unwrap(),
        pubkey.to_str().unwrap(),
    );
    let out_file = t.path().join("b.tar");
    let import_with = |arch| {
        vec![
            "import",
            layout,
            "--data-dir",
            data,
            "--trust-key",
            pubkey,
            "--arch",
            arch,
        ]
    };
    for args in [
        import_with("../../keys"),
        import_with("amd64,../../../../keys"),
        vec![
            "bundle",
            "create",
            "--from-registry",
            "127.0.0.1:1",
            "--version",
            "v1.11.0",
            "--arch",
            "../../keys",
            "--out",
            out_file.to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new(crate::common::bin())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid architecture"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        listing(t.path()),
        before,
        "the refused commands created files"
    );
}

#[tokio::test]
async fn an_architecture_that_is_a_path_is_refused_by_the_admin_api() {
    let t = tempfile::tempdir().expect("tmp");
    mini_release(&t.path().join("layout"), "v1.11.0", key(1), 4096);
    let pubkey = write_pub(t.path(), &key(1));
    let data = t.path().join("data");
    let dir = data.display().to_string();
    let srv = crate::common::TestServer::start_with(move |c| c.storage.data_dir = dir).await;
    let token_file = data.join("keys").join("admin-token");
    let token = std::fs::read_to_string(&token_file).expect("token");
    let before = listing(t.path());
    let pem = std::fs::read(&pubkey).expect("pem");
    use base64::Engine as _;
    let key_header = base64::engine::general_purpose::STANDARD.encode(pem);
    for arch in ["../../keys", "amd64,../../../../../keys", "x86_64"] {
        let (admin, url) = srv.admin("/admin/import");
        let resp = admin
            .post(format!("{url}?version=v1.11.0&arch={arch}"))
            .bearer_auth(token.trim())
            .header("x-if-trust-key", &key_header)
            .body(std::fs::read(t.path().join("layout/index.json")).expect("body"))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status().as_u16(), 400, "{arch}");
        let body = resp.text().await.expect("body");
        assert!(body.contains("invalid architecture"), "{arch}: {body}");
    }
    assert!(token_file.is_file(), "the admin token was moved");
    assert_eq!(
        listing(t.path()),
        before,
        "something was created next to the data directory"
    );
    let uploads = std::fs::read_dir(data.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(uploads, 0, "a refused request left an upload behind");
    srv.stop().await;
}
