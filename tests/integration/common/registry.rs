//! Debian's `docker-registry` on loopback, and a helper that pushes every image of an OCI
//! layout (with its signature images) into it under a namespace.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image_factory::oci::{
    Descriptor, ImageIndex, ImageManifest, ImageSource, LayoutSource, Reference, RegistryOptions,
    RegistrySource,
};

/// A running `docker-registry`, killed on drop.
pub struct DockerRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `docker-registry` on a free loopback port, or `None` (with a notice) when it is not
/// installed (`./test.sh` installs it).
pub fn start() -> Option<DockerRegistry> {
    let bin = Path::new("/usr/bin/docker-registry");
    if !testsupport::tools::require(
        bin.exists(),
        "/usr/bin/docker-registry is not installed (Debian package docker-registry)",
    ) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).expect("config");
    let child = Command::new(bin)
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn docker-registry");
    let reg = DockerRegistry {
        child,
        addr,
        _dir: dir,
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(&reg.addr).is_ok() {
            return Some(reg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not start on {}", reg.addr);
}

async fn push_manifest_graph(
    src: &LayoutSource,
    reg: &RegistrySource,
    repo: &str,
    any_ref: &Reference,
    d: &Descriptor,
) {
    let bytes = src
        .manifest(any_ref, &d.digest, 4 << 20)
        .await
        .expect("manifest");
    if d.is_index() {
        let index: ImageIndex = serde_json::from_slice(&bytes).expect("index");
        for child in &index.manifests {
            Box::pin(push_manifest_graph(src, reg, repo, any_ref, child)).await;
        }
    } else {
        let m: ImageManifest = serde_json::from_slice(&bytes).expect("manifest json");
        for blob in std::iter::once(&m.config).chain(m.layers.iter()) {
            let reader = src.blob(any_ref, blob).await.expect("blob");
            reg.push_blob(repo, blob, reader).await.expect("push blob");
        }
    }
    reg.push_manifest(repo, d.digest.as_str(), &d.media_type, bytes)
        .await
        .expect("push manifest");
}

/// Pushes every named image of `layout` (`ghcr.io/<repo>:<tag>` or `…@<digest>`) to
/// `<addr>/<namespace>/<repo>`, keeping tags (signature tags included).
pub async fn push_layout(layout: &Path, addr: &str, namespace: &str) {
    let src = LayoutSource::open_async(layout.to_path_buf())
        .await
        .expect("open layout");
    let reg = RegistrySource::new(addr, RegistryOptions::default()).expect("registry client");
    for (name, d) in src.refs().to_vec() {
        let r: Reference = name.parse().expect("ref name");
        let repo = format!("{namespace}/{}", r.repository);
        push_manifest_graph(&src, &reg, &repo, &r, &d).await;
        if let Some(tag) = &r.tag {
            let bytes = src
                .manifest(&r, &d.digest, 4 << 20)
                .await
                .expect("manifest");
            reg.push_manifest(&repo, tag, &d.media_type, bytes)
                .await
                .expect("push tag");
        }
    }
}
