//! The registry client against an in-process fake v2 registry (bearer tokens, pagination,
//! redirects, tampering) and, when installed, Debian's `docker-registry` and `skopeo`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::oci_support::{E, Image, gzip, tar};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use image_factory::oci::{
    Descriptor, Digest, ImageIndex, ImageManifest, ImageSource, LayoutKind, LayoutSource,
    MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST, OciError, Platform, Reference, RegistryOptions,
    RegistrySource,
};
use testsupport::tools;
use tokio::io::AsyncReadExt;

#[derive(Default)]
struct Fake {
    addr: String,
    /// (repo, tag or digest) → (media type, bytes).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    tags: BTreeMap<String, Vec<String>>,
    token_requests: usize,
    /// Ask for basic auth instead of bearer tokens.
    basic_only: bool,
}

type Shared = Arc<Mutex<Fake>>;

const TOKEN: &str = "tok-123";

fn challenge(addr: &str, repo: &str) -> Response {
    let value = format!(
        "Bearer realm=\"http://{addr}/token\",service=\"fake\",scope=\"repository:{repo}:pull\""
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        "",
    )
        .into_response()
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut fake = state.lock().unwrap();
    let path = uri.path().to_string();
    if path == "/token" {
        fake.token_requests += 1;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:pass")
        );
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(want.as_str())
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        return axum::Json(serde_json::json!({"token": TOKEN})).into_response();
    }
    if let Some(digest) = path.strip_prefix("/raw/") {
        // Redirect target for blobs (like a storage backend): no auth required.
        return match fake.blobs.get(digest) {
            Some(b) => b.clone().into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let repo = rest.split("/manifests/").next().unwrap_or_default();
    let repo = repo.split("/blobs/").next().unwrap_or_default();
    let repo = repo.split("/tags/").next().unwrap_or_default().to_string();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:pass")
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if fake.basic_only && auth != Some(basic.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"fake\"")],
            "",
        )
            .into_response();
    }
    if !fake.basic_only
        && headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(bearer.as_str())
    {
        return challenge(&fake.addr, &repo);
    }
    if let Some((_, r)) = rest.split_once("/manifests/") {
        let Some((mt, bytes)) = fake.manifests.get(&(repo.clone(), r.to_string())) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let digest = Digest::of(bytes).to_string();
        let body = if method == Method::HEAD {
            Vec::new()
        } else {
            bytes.clone()
        };
        let mut resp = (
            [
                (header::CONTENT_TYPE, mt.clone()),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    digest,
                ),
            ],
            body,
        )
            .into_response();
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, bytes.len().into());
        return resp;
    }
    if let Some((_, d)) = rest.split_once("/blobs/") {
        if !fake.blobs.contains_key(d) {
            return StatusCode::NOT_FOUND.into_response();
        }
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, format!("/raw/{d}"))],
        )
            .into_response();
    }
    if rest.ends_with("/tags/list") {
        let q: HashMap<String, String> =
            url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let n: usize = q
            .get("n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(100)
            .min(2);
        let all = fake.tags.get(&repo).cloned().unwrap_or_default();
        let page: Vec<String> = all
            .iter()
            .filter(|t| q.get("last").is_none_or(|l| t.as_str() > l.as_str()))
            .take(n)
            .cloned()
            .collect();
        let mut resp = axum::Json(serde_json::json!({"name": repo, "tags": page})).into_response();
        if let Some(last) = page.last().filter(|l| all.last() != Some(l)) {
            let link = format!("</v2/{repo}/tags/list?n={n}&last={last}>; rel=\"next\"");
            resp.headers_mut()
                .insert(header::LINK, link.parse().unwrap());
        }
        return resp;
    }
    StatusCode::NOT_FOUND.into_response()
}

async fn start_fake() -> (SocketAddr, Shared) {
    let state: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    state.lock().unwrap().addr = addr.to_string();
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, state)
}

fn creds() -> RegistryOptions {
    RegistryOptions {
        credentials: Some(("user".into(), "pass".into())),
        ..RegistryOptions::default()
    }
}

async fn read_all(
    src: &impl ImageSource,
    r: &Reference,
    d: &Descriptor,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    src.blob(r, d)
        .await
        .map_err(std::io::Error::other)?
        .read_to_end(&mut out)
        .await?;
    Ok(out)
}

#[tokio::test]
async fn bearer_flow_pagination_redirects_and_tampering() {
    let (addr, state) = start_fake().await;
    let img = Image::new(vec![gzip(&tar(&[E::File("a", b"a")]))]);
    {
        let mut f = state.lock().unwrap();
        let repo = "siderolabs/imager".to_string();
        for tag in ["v1.10.0", "v1.10.1", "v1.11.0", "v1.11.1", "v1.9.0"] {
            f.manifests.insert(
                (repo.clone(), tag.into()),
                (MEDIA_OCI_MANIFEST.into(), img.manifest.clone()),
            );
        }
        f.manifests.insert(
            (repo.clone(), img.manifest_desc.digest.to_string()),
            (MEDIA_OCI_MANIFEST.into(), img.manifest.clone()),
        );
        f.tags.insert(
            repo,
            vec![
                "v1.10.0".into(),
                "v1.10.1".into(),
                "v1.11.0".into(),
                "v1.11.1".into(),
                "v1.9.0".into(),
            ],
        );
        for b in img.blobs() {
            f.blobs.insert(Digest::of(&b).to_string(), b);
        }
    }
    let reg = RegistrySource::new(&addr.to_string(), creds()).unwrap();
    let tags = reg.list_tags("siderolabs/imager").await.unwrap();
    assert_eq!(tags.len(), 5, "{tags:?}");
    let reference: Reference = "ghcr.io/siderolabs/imager:v1.11.0".parse().unwrap();
    let desc = reg.resolve(&reference).await.unwrap().expect("resolves");
    assert_eq!(desc, img.manifest_desc);
    assert_eq!(
        reg.manifest(&reference, &desc.digest, 1 << 20)
            .await
            .unwrap(),
        img.manifest
    );
    let m: ImageManifest = serde_json::from_slice(&img.manifest).unwrap();
    assert_eq!(
        read_all(&reg, &reference, &m.layers[0]).await.unwrap(),
        img.layers[0].1
    );
    assert_eq!(
        read_all(&reg, &reference, &m.config).await.unwrap(),
        img.config
    );
    assert!(
        reg.resolve(&reference.with_tag("v0.0.1"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        state.lock().unwrap().token_requests,
        1,
        "token cached per scope"
    );

    // The manifest size limit and a digest that does not match.
    assert!(matches!(
        reg.manifest(&reference, &desc.digest, 10).await,
        Err(OciError::Limit(_))
    ));

    // A tampered blob: same size, other bytes.
    {
        let mut f = state.lock().unwrap();
        let b = f.blobs.get_mut(m.layers[0].digest.as_str()).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
    }
    let err = read_all(&reg, &reference, &m.layers[0]).await.unwrap_err();
    assert!(
        err.to_string().contains(m.layers[0].digest.as_str()),
        "{err}"
    );

    // Without credentials the token endpoint refuses.
    let anon = RegistrySource::new(&addr.to_string(), RegistryOptions::default()).unwrap();
    assert!(matches!(
        anon.resolve(&reference).await,
        Err(OciError::Registry { .. })
    ));
}

/// A running `docker-registry`, killed on drop.
struct DockerRegistry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_docker_registry() -> Option<DockerRegistry> {
    let bin = Path::new("/usr/bin/docker-registry");
    if !tools::require(
        bin.exists(),
        "/usr/bin/docker-registry is not installed (Debian package docker-registry)",
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        dir.path().join("data").display()
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = Command::new(bin)
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = DockerRegistry {
        child,
        addr,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&reg.addr).is_ok() {
            return Some(reg);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not start on {}", reg.addr);
}

/// Pushes `img` to `repo:tag` (blobs, manifest, and an index pointing at it under `tag-index`).
async fn push_image(reg: &RegistrySource, repo: &str, tag: &str, img: &Image) -> Descriptor {
    let m: ImageManifest = serde_json::from_slice(&img.manifest).unwrap();
    reg.push_blob(repo, &m.config, std::io::Cursor::new(img.config.clone()))
        .await
        .unwrap();
    for (d, b) in &img.layers {
        reg.push_blob(repo, d, std::io::Cursor::new(b.clone()))
            .await
            .unwrap();
    }
    // A second push of the same blob is a no-op.
    reg.push_blob(repo, &m.config, std::io::Cursor::new(img.config.clone()))
        .await
        .unwrap();
    let d = reg
        .push_manifest(repo, tag, MEDIA_OCI_MANIFEST, img.manifest.clone())
        .await
        .unwrap();
    assert_eq!(d, img.manifest_desc.digest);
    let mut entry = img.manifest_desc.clone();
    entry.platform = Some(Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
    });
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(MEDIA_OCI_INDEX.into()),
        manifests: vec![entry],
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&index).unwrap();
    reg.push_manifest(
        repo,
        &format!("{tag}-index"),
        MEDIA_OCI_INDEX,
        bytes.clone(),
    )
    .await
    .unwrap();
    Descriptor::for_bytes(MEDIA_OCI_INDEX, &bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_registry_push_pull_and_skopeo() {
    let Some(server) = start_docker_registry() else {
        return;
    };
    let reg = RegistrySource::new(&server.addr, RegistryOptions::default()).unwrap();
    let img = Image::new(vec![
        gzip(&tar(&[E::File("usr/install/amd64/vmlinuz", b"kernel")])),
        gzip(&tar(&[E::File("etc/extra", &[3u8; 200_000])])),
    ]);
    let repo = "siderolabs/imager";
    let index_desc = push_image(&reg, repo, "v1.11.0", &img).await;
    for t in ["v1.10.0", "v1.10.1", "v1.9.0"] {
        reg.push_manifest(repo, t, MEDIA_OCI_MANIFEST, img.manifest.clone())
            .await
            .unwrap();
    }
    // A cosign-style signature tag points at the manifest digest.
    let sig_tag = img.manifest_desc.digest.signature_tag();
    reg.push_manifest(repo, &sig_tag, MEDIA_OCI_MANIFEST, img.manifest.clone())
        .await
        .unwrap();

    let mut tags = reg.list_tags(repo).await.unwrap();
    tags.sort();
    assert_eq!(tags.len(), 6, "{tags:?}");
    assert!(tags.contains(&sig_tag));

    let reference: Reference = format!("{}/{repo}:v1.11.0-index", server.addr)
        .parse()
        .unwrap();
    let idx = reg.resolve(&reference).await.unwrap().expect("index");
    assert_eq!(idx, index_desc);
    let index: ImageIndex = serde_json::from_slice(
        &reg.manifest(&reference, &idx.digest, 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    let chosen = index.select("amd64").expect("amd64").clone();
    let by_digest = reg
        .resolve(&reference.with_digest(chosen.digest.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_digest.digest, img.manifest_desc.digest);
    let m: ImageManifest = serde_json::from_slice(
        &reg.manifest(&reference, &chosen.digest, 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    for (d, b) in &img.layers {
        assert_eq!(&read_all(&reg, &reference, d).await.unwrap(), b);
    }
    assert!(
        reg.resolve(&reference.with_tag("nope"))
            .await
            .unwrap()
            .is_none()
    );
    let missing = Descriptor::for_bytes("application/octet-stream", b"missing");
    assert!(matches!(
        reg.blob(&reference, &missing).await,
        Err(OciError::NotFound(_))
    ));

    // Flatten straight from the registry.
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    tokio::task::block_in_place(|| {
        let mut open =
            image_factory::oci::source_opener(&reg, &reference, tokio::runtime::Handle::current());
        image_factory::oci::flatten(&m.layers, &mut open, &dest, &Default::default())
    })
    .unwrap();
    assert_eq!(
        std::fs::read(dest.join("usr/install/amd64/vmlinuz")).unwrap(),
        b"kernel"
    );

    // skopeo (a real client) copies what we pushed into layouts our reader must understand.
    if !tools::have("skopeo", "skopeo") {
        return;
    }
    let src = format!("docker://{}/{repo}:v1.11.0", server.addr);
    let layout = tmp.path().join("layout");
    let archive = tmp.path().join("oci.tar");
    let docker = tmp.path().join("docker.tar");
    for dest in [
        format!("oci:{}:v1.11.0", layout.display()),
        format!(
            "oci-archive:{}:ghcr.io/siderolabs/imager:v1.11.0",
            archive.display()
        ),
        format!(
            "docker-archive:{}:ghcr.io/siderolabs/imager:v1.11.0",
            docker.display()
        ),
    ] {
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--src-tls-verify=false",
                &src,
                &dest,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wanted: Reference = "ghcr.io/siderolabs/imager:v1.11.0".parse().unwrap();
    for (path, kind) in [
        (layout, LayoutKind::Directory),
        (archive, LayoutKind::OciArchive),
        (docker, LayoutKind::DockerArchive),
    ] {
        let src = LayoutSource::open(&path).unwrap();
        assert_eq!(src.kind(), kind);
        let d = src
            .resolve(&wanted)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{kind:?} resolves"));
        let m: ImageManifest =
            serde_json::from_slice(&src.manifest(&wanted, &d.digest, 1 << 20).await.unwrap())
                .unwrap();
        let dest = tmp.path().join(format!("flat-{kind:?}"));
        tokio::task::block_in_place(|| {
            let mut open =
                image_factory::oci::source_opener(&src, &wanted, tokio::runtime::Handle::current());
            image_factory::oci::flatten(&m.layers, &mut open, &dest, &Default::default())
        })
        .unwrap();
        assert_eq!(
            std::fs::read(dest.join("usr/install/amd64/vmlinuz")).unwrap(),
            b"kernel",
            "{kind:?}"
        );
        assert_eq!(
            std::fs::read(dest.join("etc/extra")).unwrap().len(),
            200_000,
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn basic_auth() {
    let (addr, state) = start_fake().await;
    {
        let mut f = state.lock().unwrap();
        f.basic_only = true;
        f.tags.insert("a/b".into(), vec!["t1".into()]);
    }
    let reg = RegistrySource::new(&addr.to_string(), creds()).unwrap();
    assert_eq!(reg.list_tags("a/b").await.unwrap(), vec!["t1".to_string()]);
    // Basic credentials are then sent up front.
    assert_eq!(reg.list_tags("a/b").await.unwrap().len(), 1);
    assert_eq!(state.lock().unwrap().token_requests, 0);
    let anon = RegistrySource::new(&addr.to_string(), RegistryOptions::default()).unwrap();
    let err = anon.list_tags("a/b").await.unwrap_err();
    assert!(err.to_string().contains("authentication required"), "{err}");
}
