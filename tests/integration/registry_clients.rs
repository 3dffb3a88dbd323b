//! Real registry clients against the registry frontend on loopback: skopeo (inspect, copy to an
//! OCI layout and to a docker-archive), containerd's `ctr images pull` through a `hosts.toml`
//! mirror of factory.talos.dev and ghcr.io, and the cosign signature checked with openssl
//! against the published key.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use crate::common::assets::{V, get, sha256_hex};
use crate::common::oci::{ACCEPT, installer_tarball, request, setup};
use crate::common::{TestServer, client, kit, spawn_bin};

/// Runs a command; panics with its output on failure; returns stdout.
pub(crate) fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The digests of `name:V`: its index, its amd64 image manifest, and that image's config and
/// layers (config first).
struct ImageDigests {
    index: String,
    manifest: String,
    blobs: Vec<String>,
}

async fn image_digests(s: &TestServer, name: &str) -> ImageDigests {
    let index = request(s, "GET", &format!("{name}/manifests/{V}"), &[ACCEPT]).await;
    assert_eq!(index.status, 200, "{}", index.text());
    let v: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let manifest = v["manifests"][0]["digest"].as_str().unwrap().to_string();
    let m = request(s, "GET", &format!("{name}/manifests/{manifest}"), &[ACCEPT]).await;
    let m: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    for l in m["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_string());
    }
    ImageDigests {
        index: index.header("docker-content-digest").to_string(),
        manifest,
        blobs,
    }
}

/// The tarball entry holding blob `digest` (config `sha256:<hex>`, layers `<hex>.tar.gz`).
fn tarball_blob<'a>(tarball: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    tarball
        .get(digest)
        .or_else(|| tarball.get(&format!("{hex}.tar.gz")))
        .unwrap_or_else(|| panic!("{digest} is not in the installer tarball"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_inspects_and_copies_the_installer_byte_identical_to_the_tarball() {
    if !testsupport::tools::have("skopeo", "skopeo") {
        return;
    }
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let ImageDigests {
        manifest, blobs, ..
    } = image_digests(&s, &name).await;
    let tarball = installer_tarball(&s.url(""), &id).await;
    let addr = s.addrs.http.to_string();
    let src = format!("docker://{addr}/{name}:{V}");
    let dir = tempfile::tempdir().unwrap();
    let (src2, dir2) = (src.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || {
        let (src, dir) = (src2, dir2);
        let out = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &src]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect json");
        assert_eq!(v["Architecture"], "amd64");
        assert_eq!(v["Os"], "linux");
        let layout = format!("oci:{}:installer", dir.join("layout").display());
        run(Command::new("skopeo").args(["copy", "--src-tls-verify=false", &src, &layout]));
        let archive = dir.join("installer.tar");
        let dest = format!("docker-archive:{}:installer:{V}", archive.display());
        run(Command::new("skopeo").args(["copy", "--src-tls-verify=false", &src, &dest]));
        run(Command::new("skopeo")
            .args(["inspect", &format!("docker-archive:{}", archive.display())]));
    })
    .await
    .unwrap();
    // The OCI layout holds exactly our config and layers, byte for byte.
    for b in &blobs {
        let hex = b.strip_prefix("sha256:").unwrap();
        let copied = std::fs::read(dir.path().join("layout/blobs/sha256").join(hex)).unwrap();
        assert_eq!(copied, tarball_blob(&tarball, b), "{b}");
    }
    // Without --all skopeo copies the image of its platform: our linux/amd64 manifest, as
    // served (its digest is the layout's only entry, its bytes the blob of that name).
    let layout_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("layout/index.json")).unwrap())
            .unwrap();
    let entries = layout_index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{layout_index}");
    assert_eq!(entries[0]["digest"], manifest.as_str());
    let served = request(
        &s,
        "GET",
        &format!("{name}/manifests/{manifest}"),
        &[ACCEPT],
    )
    .await;
    let hex = manifest.strip_prefix("sha256:").unwrap();
    let copied = std::fs::read(dir.path().join("layout/blobs/sha256").join(hex)).unwrap();
    assert_eq!(copied, served.body);
    // The docker-archive carries the same config.
    let mut archive =
        tar::Archive::new(std::fs::File::open(dir.path().join("installer.tar")).unwrap());
    let mut config_found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if format!("sha256:{}", sha256_hex(&bytes)) == blobs[0] {
            config_found = true;
            assert_eq!(bytes, tarball_blob(&tarball, &blobs[0]));
        }
    }
    assert!(config_found, "the docker-archive lacks our config");
    s.stop().await;
}

/// `openssl dgst -sha256 -verify key.pub -signature sig.der payload` in `dir`.
pub(crate) fn openssl_verify(dir: &Path) -> std::process::Output {
    Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "key.pub",
            "-signature",
            "sig.der",
            "payload",
        ])
        .current_dir(dir)
        .output()
        .expect("openssl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cosign_signature_verifies_with_openssl_against_the_published_key() {
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let ImageDigests {
        index: index_digest,
        manifest: arch_digest,
        ..
    } = image_digests(&s, &name).await;
    let key = get(&s, "/oci/cosign/signing-key.pub", &[]).await.text();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pub"), &key).unwrap();
    for signed in [&index_digest, &arch_digest] {
        let hex = signed.strip_prefix("sha256:").unwrap();
        // The tag form (`cosign verify`'s legacy lookup).
        let sig = request(
            &s,
            "GET",
            &format!("{name}/manifests/sha256-{hex}.sig"),
            &[],
        )
        .await;
        assert_eq!(sig.status, 200, "{}", sig.text());
        let tag_form: serde_json::Value = serde_json::from_slice(&sig.body).unwrap();
        // The OCI 1.1 form, listed by the referrers API.
        let refs = request(&s, "GET", &format!("{name}/referrers/{signed}"), &[]).await;
        let refs: serde_json::Value = serde_json::from_slice(&refs.body).unwrap();
        let referrer = refs["manifests"][0]["digest"].as_str().unwrap();
        let referrer = request(&s, "GET", &format!("{name}/manifests/{referrer}"), &[]).await;
        let referrer: serde_json::Value = serde_json::from_slice(&referrer.body).unwrap();
        assert_eq!(
            referrer["subject"]["digest"].as_str(),
            Some(signed.as_str())
        );
        for m in [&tag_form, &referrer] {
            let layer = &m["layers"][0];
            assert_eq!(
                layer["mediaType"],
                "application/vnd.dev.cosign.simplesigning.v1+json"
            );
            let payload = request(
                &s,
                "GET",
                &format!("{name}/blobs/{}", layer["digest"].as_str().unwrap()),
                &[],
            )
            .await;
            assert_eq!(payload.status, 200);
            let p: serde_json::Value = serde_json::from_slice(&payload.body).unwrap();
            assert_eq!(
                p["critical"]["image"]["docker-manifest-digest"].as_str(),
                Some(signed.as_str())
            );
            assert_eq!(p["critical"]["type"], "cosign container image signature");
            let signature = base64::engine::general_purpose::STANDARD
                .decode(
                    layer["annotations"]["dev.cosignproject.cosign/signature"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
            std::fs::write(dir.path().join("payload"), &payload.body).unwrap();
            std::fs::write(dir.path().join("sig.der"), &signature).unwrap();
            let out = openssl_verify(dir.path());
            assert!(out.status.success(), "{out:?}");
            assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
            // A changed payload does not verify: the check can fail.
            let mut forged = payload.body.clone();
            forged[0] ^= 1;
            std::fs::write(dir.path().join("payload"), &forged).unwrap();
            assert!(!openssl_verify(dir.path()).status.success());
        }
    }
    s.stop().await;
}

/// A containerd daemon of its own (state under `dir`), stopped on drop.
pub(crate) struct Containerd {
    child: std::process::Child,
    pub(crate) sock: std::path::PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_containerd(dir: &Path) -> Containerd {
    let sock = dir.join("containerd.sock");
    let config = format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{ttrpc}\"\n[debug]\n  address = \"\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        sock = sock.display(),
        ttrpc = dir.join("ttrpc.sock").display(),
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("containerd");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sock.exists(), "containerd did not start");
    Containerd { child, sock }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_pulls_factory_and_ghcr_installers_through_the_mirror() {
    if !testsupport::tools::have("containerd", "containerd")
        || !testsupport::tools::have("ctr", "containerd")
    {
        return;
    }
    let Some(k) = kit::imported(0) else { return };
    // The real binary, for its log: the mirror's `?ns=` requests must show there.
    let server = spawn_bin(&k.data).expect("server");
    let addr = server.http;
    let resp = client()
        .post(format!("http://{addr}/schematics"))
        .body(kit::SCHEMATIC)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let images = [
        format!("factory.talos.dev/metal-installer/{id}:{V}"),
        format!("ghcr.io/siderolabs/installer:{V}"),
    ];
    let (a, images2) = (addr.to_string(), images.clone());
    let ContainerdPull { listed, contents } =
        tokio::task::spawn_blocking(move || containerd_pull(&a, &images2))
            .await
            .unwrap();
    for image in &images {
        assert!(listed.contains(image.as_str()), "{image} not in:\n{listed}");
    }
    // What containerd stored is our installer, byte for byte.
    let tarball = installer_tarball(&format!("http://{addr}"), &id).await;
    let archive: serde_json::Value = serde_json::from_slice(&tarball["manifest.json"]).unwrap();
    let config = archive[0]["Config"].as_str().unwrap().to_string();
    let want = tarball.get(&config).expect("the tarball's config");
    assert_eq!(contents.get(&config), Some(want), "config");
    for layer in archive[0]["Layers"].as_array().unwrap() {
        let file = layer.as_str().unwrap();
        let digest = format!("sha256:{}", file.strip_suffix(".tar.gz").unwrap());
        let want = tarball.get(file).expect("the tarball's layer");
        assert_eq!(contents.get(&digest), Some(want), "{file}");
    }
    // The mirror requests carried containerd's `?ns=` and our log shows it.
    let log = server.log.lock().unwrap().join("\n");
    for ns in ["factory.talos.dev", "ghcr.io"] {
        assert!(
            log.lines()
                .any(|l| l.contains("registry request") && l.contains(&format!("\"ns\":\"{ns}\""))),
            "no registry request with ns={ns} in the log"
        );
    }
    let mut child = server.child;
    let _ = child.kill();
    let _ = child.wait();
}

/// What containerd holds after a pull: `ctr images ls` and its content by digest.
pub(crate) struct ContainerdPull {
    /// The output of `ctr images ls`.
    pub listed: String,
    /// Every blob containerd stored, by digest.
    pub contents: BTreeMap<String, Vec<u8>>,
}

/// Pulls `images` with containerd through a `hosts.toml` mirror of `ghcr.io` and
/// `factory.talos.dev` to `addr`; returns what containerd then holds. Blocking.
pub(crate) fn containerd_pull(addr: &str, images: &[String]) -> ContainerdPull {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    for upstream in ["factory.talos.dev", "ghcr.io"] {
        std::fs::create_dir_all(hosts.join(upstream)).unwrap();
        std::fs::write(
            hosts.join(upstream).join("hosts.toml"),
            format!(
                "server = \"https://{upstream}\"\n\n[host.\"http://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
    }
    let daemon = start_containerd(dir.path());
    let ctr = |args: &[&str]| {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&daemon.sock).args(args);
        c
    };
    for image in images {
        run(&mut ctr(&[
            "images",
            "pull",
            "--snapshotter",
            "native",
            "--platform",
            "linux/amd64",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            image,
        ]));
    }
    let listed = run(&mut ctr(&["images", "ls"]));
    let mut contents = BTreeMap::new();
    for line in run(&mut ctr(&["content", "ls", "-q"])).lines() {
        let digest = line.trim().to_string();
        if digest.starts_with("sha256:") {
            let out = ctr(&["content", "get", &digest]).output().unwrap();
            contents.insert(digest, out.stdout);
        }
    }
    ContainerdPull { listed, contents }
}

/// Fetches the index, the amd64 manifest and every blob of `name:tag` from `host` with the
/// `oras` Python client; prints `{"<digest>": "<sha256 of the downloaded file>"}`.
const ORAS_SCRIPT: &str = r#"
import hashlib, json, os, sys
import oras.provider
host, name, tag, out = sys.argv[1:5]
reg = oras.provider.Registry(hostname=host, insecure=True)
index = reg.get_manifest(f"{host}/{name}:{tag}", allowed_media_type=["application/vnd.oci.image.index.v1+json"])
digest = index["manifests"][0]["digest"]
manifest = reg.get_manifest(f"{host}/{name}@{digest}")
got = {}
for d in [manifest["config"]] + manifest["layers"]:
    path = os.path.join(out, d["digest"].replace(":", "-"))
    reg.download_blob(f"{host}/{name}:{tag}", d["digest"], path)
    got[d["digest"]] = "sha256:" + hashlib.sha256(open(path, "rb").read()).hexdigest()
print(json.dumps(got))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_oras_python_client_fetches_the_manifest_and_blobs() {
    let has_oras = Command::new("python3")
        .args(["-c", "import oras.provider"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !testsupport::tools::require(has_oras, "python3 module oras is not installed (PyPI oras)") {
        return;
    }
    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let ImageDigests { blobs, .. } = image_digests(&s, &name).await;
    let tarball = installer_tarball(&s.url(""), &id).await;
    let host = s.addrs.http.to_string();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_path_buf();
    let name2 = name.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("python3").args([
            "-c",
            ORAS_SCRIPT,
            &host,
            &name2,
            V,
            out_dir.to_str().unwrap(),
        ]))
    })
    .await
    .unwrap();
    let got: BTreeMap<String, String> = serde_json::from_str(out.trim()).expect("oras output");
    assert_eq!(got.len(), blobs.len());
    for b in &blobs {
        // Each downloaded blob hashes to its digest and is the tarball's entry.
        assert_eq!(got.get(b), Some(b), "{b}");
        let file = dir.path().join(b.replace(':', "-"));
        assert_eq!(std::fs::read(file).unwrap(), tarball_blob(&tarball, b));
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_oci_client_crate_pulls_the_index_image_tags_and_referrers() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::manifest::OciManifest;
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    let Some((_kit, s, id)) = setup().await else {
        return;
    };
    let name = format!("metal-installer/{id}");
    let ImageDigests {
        index: index_digest,
        blobs,
        ..
    } = image_digests(&s, &name).await;
    let tarball = installer_tarball(&s.url(""), &id).await;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;
    let reference: Reference = format!("{}/{name}:{V}", s.addrs.http).parse().unwrap();
    let (manifest, digest) = client.pull_manifest(&reference, &auth).await.unwrap();
    assert_eq!(digest, index_digest);
    let OciManifest::ImageIndex(index) = manifest else {
        panic!("not an index: {manifest:?}");
    };
    assert_eq!(index.manifests.len(), 1);
    // The client resolves the index to linux/amd64 and pulls every blob, digest-checked.
    let (image, _) = client.pull_image_manifest(&reference, &auth).await.unwrap();
    assert_eq!(image.config.digest, blobs[0]);
    for layer in std::iter::once(&image.config).chain(&image.layers) {
        let mut out = Vec::new();
        client.pull_blob(&reference, layer, &mut out).await.unwrap();
        assert_eq!(
            out,
            tarball_blob(&tarball, &layer.digest),
            "{}",
            layer.digest
        );
    }
    let tags = client
        .list_tags(&reference, &auth, Some(1), None)
        .await
        .unwrap();
    assert_eq!(tags.tags.len(), 1);
    let pinned: Reference = format!("{}/{name}@{index_digest}", s.addrs.http)
        .parse()
        .unwrap();
    let referrers = client
        .pull_referrers(
            &pinned,
            Some("application/vnd.dev.cosign.artifact.sig.v1+json"),
        )
        .await
        .unwrap();
    assert_eq!(referrers.manifests.len(), 1);
    s.stop().await;
}
