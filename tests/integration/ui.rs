//! The web UI over HTTP against the real server, with releases seeded into its data
//! directory: every step renders, the wizard's schematic ID is the CLI's, bad inputs answer
//! 400, and no page names another origin.

use std::collections::BTreeMap;
use std::sync::Arc;

use image_factory::catalog::{
    Arch, ArchRelease, ExtensionEntry, OverlayEntry, Release, ReleaseStore, Signatures,
};
use image_factory::oci::Digest;
use image_factory::store::{BlobStore, MetaStore, SledStore};

use crate::common::TestServer;

fn extension(name: &str, description: &str) -> ExtensionEntry {
    ExtensionEntry {
        name: name.into(),
        reference: format!("ghcr.io/{name}:1.0"),
        digest: Digest::of(name.as_bytes()),
        author: "Test".into(),
        description: description.into(),
        images: BTreeMap::new(),
    }
}

fn release(version: &str) -> Release {
    let mut arches = BTreeMap::new();
    arches.insert(Arch::Amd64, ArchRelease::default());
    arches.insert(Arch::Arm64, ArchRelease::default());
    Release {
        version: version.into(),
        imported_at: "2026-12-01T00:00:00Z".into(),
        source: "test".into(),
        signatures: Signatures::Verified {
            keys: vec!["k".into()],
        },
        partial: false,
        arches,
        extensions: vec![
            extension("siderolabs/kmod-test", "Kernel modules for <tests>."),
            extension("siderolabs/fw-test", "Firmware and MICROCODE."),
            extension("siderolabs/svc-test", "A plain service."),
        ],
        overlays: vec![OverlayEntry {
            name: "rpi_generic".into(),
            image: "siderolabs/sbc-raspberrypi".into(),
            reference: "ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0".into(),
            digest: Digest::of(b"o"),
            images: BTreeMap::new(),
        }],
        catalogs: Vec::new(),
        talosctl: None,
        revision: None,
    }
}

/// A server whose data directory holds releases v1.11.0 and v1.12.0 (amd64 and arm64, no
/// images: the UI reads catalogs only).
pub(crate) async fn server() -> TestServer {
    let data = tempfile::tempdir().expect("tempdir");
    {
        let meta: Arc<dyn MetaStore> =
            Arc::new(SledStore::open(&data.path().join("meta")).expect("open"));
        let blobs = BlobStore::open(&data.path().join("blobs"), meta).expect("blobs");
        let releases = ReleaseStore::new(&blobs);
        for v in ["v1.11.0", "v1.12.0"] {
            releases.put(&release(v)).await.expect("seed");
        }
    }
    let dir = data.path().display().to_string();
    let mut srv = TestServer::start_with(move |c| c.storage.data_dir = dir).await;
    // Keep the seeded directory alive as long as the server.
    srv.dir = data;
    srv
}

pub(crate) fn client() -> reqwest::Client {
    crate::common::init();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// What a page shows once its HTML escapes are undone (the ones minijinja writes).
pub(crate) fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// GETs `path`; returns status, headers and body.
pub(crate) async fn get(srv: &TestServer, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client().get(srv.url(path)).send().await.expect("get");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.expect("body"))
}

/// GETs a wizard page that must render: 200, HTML with our CSP, the title in `<h1>`.
async fn page(srv: &TestServer, path: &str, h1: &str) -> String {
    let (status, headers, body) = get(srv, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(
        headers["content-type"], "text/html; charset=utf-8",
        "{path}"
    );
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
    assert!(body.contains(&format!("<h1>{h1}</h1>")), "{path}: {body}");
    body
}

/// `pairs` urlencoded, as a browser posts a form.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// POSTs the customization form; returns the `303`'s `Location`.
pub(crate) async fn submit(srv: &TestServer, form: &[(&str, &str)]) -> String {
    let r = client()
        .post(srv.url("/ui/wizard"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("location").to_string());
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 303, "{body}");
    location.expect("location")
}

/// The ID on a result page.
fn shown_id(body: &str) -> String {
    let start = body.find("id=\"schematic-id\"").expect("id shown");
    let rest = &body[start..];
    let open = rest.find('>').expect(">") + 1;
    let close = rest.find("</pre>").expect("</pre>");
    rest[open..close].to_string()
}

/// The ID `image-factory schematic id` prints for `yaml`.
pub(crate) fn cli_id(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, yaml).expect("write");
    crate::common::kit::schematic_id(&path)
}

#[tokio::test]
async fn every_step_renders_and_the_result_id_is_the_clis() {
    let srv = server().await;
    let body = page(&srv, "/", "Hardware type").await;
    assert!(
        body.contains("name=\"target\" value=\"metal\" checked"),
        "{body}"
    );
    let body = page(&srv, "/?target=metal", "Talos version").await;
    // Grouped by minor, newest first, the latest stable chosen.
    assert!(body.contains("Talos 1.12"), "{body}");
    assert!(body.contains("id=\"version-1.12.0\" name=\"version\" value=\"1.12.0\" checked"));
    let body = page(
        &srv,
        "/?target=metal&version=1.12.0",
        "Architecture and SecureBoot",
    )
    .await;
    assert!(body.contains("value=\"arm64\""), "{body}");
    assert!(body.contains("name=\"secureboot\""), "{body}");
    let body = page(&srv, "/?target=cloud&version=1.12.0", "Cloud platform").await;
    assert!(body.contains("value=\"oracle\"") && !body.contains("value=\"metal\""));
    page(&srv, "/?target=sbc&version=1.12.0", "Single-board computer").await;
    let ext = "/?target=metal&version=1.12.0&arch=amd64&secureboot=false";
    let body = page(&srv, ext, "System extensions").await;
    for e in ["kmod-test", "fw-test", "svc-test"] {
        assert!(
            unescape(&body).contains(&format!("value=\"siderolabs/{e}\"")),
            "{e}"
        );
    }
    // The no-JS filter: by description, case-insensitively; a ticked extension the filter
    // hides is kept in a hidden field.
    let filtered = page(
        &srv,
        &format!("{ext}&search=microcode&selected-extensions=siderolabs%2Fsvc-test"),
        "System extensions",
    )
    .await;
    assert!(
        filtered.contains("(1 of 3 shown; 1 selected but filtered out)"),
        "{filtered}"
    );
    assert!(unescape(&filtered).contains(
        "<input type=\"hidden\" name=\"selected-extensions\" value=\"siderolabs/svc-test\">"
    ));
    // `Next` redirects to the bookmarkable URL naming the extensions (sorted).
    let r = client()
        .get(srv.url(&format!(
            "{ext}&search=&selected-extensions=siderolabs%2Fsvc-test&selected-extensions=siderolabs%2Ffw-test&extensions-done=1"
        )))
        .send()
        .await
        .expect("next");
    assert_eq!(r.status().as_u16(), 303);
    let options_url = r.headers()["location"].to_str().expect("loc").to_string();
    assert_eq!(
        options_url,
        format!("{ext}&extensions=siderolabs%2Ffw-test&extensions=siderolabs%2Fsvc-test")
    );
    let body = page(&srv, &options_url, "Customization").await;
    for field in ["cmdline", "bootloader", "meta", "embedded-config"] {
        assert!(
            body.contains(&format!("<label for=\"{field}\"")),
            "{field} has a label: {body}"
        );
    }
    assert!(
        body.contains("<form method=\"post\" action=\"/ui/wizard\""),
        "{body}"
    );

    let config = "version: v1alpha1\nmachine:\n  type: worker\n";
    let location = submit(
        &srv,
        &[
            ("target", "metal"),
            ("version", "1.12.0"),
            ("arch", "amd64"),
            ("secureboot", "false"),
            ("extensions", "siderolabs/svc-test"),
            ("extensions", "siderolabs/fw-test"),
            ("cmdline-set", "true"),
            ("cmdline", " console=ttyS0 if.test=<x>&\"y\" "),
            ("bootloader", "sd-boot"),
            ("meta", "0xa={\"addr\":\"1.2.3.4\"}\n"),
            ("embedded-config", config),
        ],
    )
    .await;
    assert!(location.starts_with("/ui/schematics/"), "{location}");
    assert!(!location.contains("embedded"), "never in a URL: {location}");
    let body = page(&srv, &location, "Your schematic").await;
    let id = shown_id(&body);
    let yaml = "customization:
  embeddedMachineConfiguration: |
    version: v1alpha1
    machine:
      type: worker
  extraKernelArgs:
    - console=ttyS0
    - 'if.test=<x>&\"y\"'
  meta:
    - key: 10
      value: '{\"addr\":\"1.2.3.4\"}'
  systemExtensions:
    officialExtensions:
      - siderolabs/fw-test
      - siderolabs/svc-test
  bootloader: sd-boot
";
    assert_eq!(id, cli_id(yaml));
    // Escaped on the page, and the stored YAML is the one shown.
    assert!(body.contains("if.test=&lt;x&gt;&amp;"), "{body}");
    assert!(!body.contains("<x>"), "{body}");
    let (_, _, stored) = get(&srv, &format!("/schematics/{id}")).await;
    assert!(unescape(&body).contains(&stored), "{stored}");
    // Links to this schematic's media, same origin.
    let shown = unescape(&body);
    for path in [
        format!("/image/{id}/v1.12.0/metal-amd64.iso"),
        format!("/image/{id}/v1.12.0/metal-amd64.raw.zst"),
        format!("/image/{id}/v1.12.0/kernel-amd64"),
        format!("/image/{id}/v1.12.0/metal-amd64-uki.efi"),
        format!("/pxe/{id}/v1.12.0/metal-amd64"),
    ] {
        assert!(shown.contains(&format!("href=\"{path}\"")), "{path}");
    }
    let host = srv.addrs.http.to_string();
    assert!(shown.contains(&format!("{host}/metal-installer/{id}:v1.12.0")));
    // The machine-config snippet: Talos' name for the installer, this appliance as mirror.
    assert!(
        shown.contains(&format!(
            "    image: factory.talos.dev/metal-installer/{id}:v1.12.0\n  registries:\n    mirrors:\n      factory.talos.dev:\n        endpoints:\n          - http://{host}\n"
        )),
        "{shown}"
    );
    assert!(shown.contains(&format!(
        "chain http://{host}/pxe/{id}/v1.12.0/metal-amd64\n"
    )));
    srv.stop().await;
}

#[tokio::test]
async fn an_upstream_final_url_creates_the_schematic_and_a_cloud_one_names_its_media() {
    let srv = server().await;
    // The spec's vector: extraKernelArgs [noapic, nolapic].
    let (status, headers, body) = get(
        &srv,
        "/?target=metal&version=1.11.0&arch=amd64&secureboot=false&extensions=-&cmdline-set=true&cmdline=noapic+nolapic",
    )
    .await;
    assert_eq!(status, 303, "{body}");
    let want = "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c";
    assert_eq!(
        headers["location"],
        format!("/ui/schematics/{want}?target=metal&version=1.11.0&arch=amd64&secureboot=false")
            .as_str()
    );
    let (status, _, _) = get(&srv, &format!("/schematics/{want}")).await;
    assert_eq!(status, 200, "stored");

    // A cloud platform with an extension: its own disk format, its installer.
    let location = submit(
        &srv,
        &[
            ("target", "cloud"),
            ("version", "1.11.0"),
            ("platform", "oracle"),
            ("arch", "arm64"),
            ("extensions", "siderolabs/kmod-test"),
            ("cmdline-set", "true"),
            ("cmdline", "console=ttyAMA0"),
        ],
    )
    .await;
    let body = unescape(&page(&srv, &location, "Your schematic").await);
    let id = shown_id(&body);
    assert_eq!(
        id,
        cli_id(
            "customization:\n  extraKernelArgs: [console=ttyAMA0]\n  systemExtensions:\n    officialExtensions: [siderolabs/kmod-test]\n"
        )
    );
    assert!(body.contains(&format!("href=\"/image/{id}/v1.11.0/oracle-arm64.qcow2\"")));
    assert!(body.contains(&format!("/oracle-installer/{id}:v1.11.0")));
    assert!(!body.contains("/pxe/"), "oracle has no PXE: {body}");
    srv.stop().await;
}

#[tokio::test]
async fn a_schematic_id_prefills_the_wizard() {
    let srv = server().await;
    let yaml = "overlay:\n  name: rpi_generic\n  image: siderolabs/sbc-raspberrypi\n  options:\n    configTxtAppend: dtoverlay=x\ncustomization:\n  extraKernelArgs: [a=1, b]\n  systemExtensions:\n    officialExtensions: [siderolabs/fw-test]\n";
    let r = client()
        .post(srv.url("/schematics"))
        .body(yaml)
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 201);
    let id = cli_id(yaml);
    // The overlay pre-selects the SBC hardware type.
    let body = page(&srv, &format!("/?schematic-id={id}"), "Hardware type").await;
    assert!(
        body.contains("name=\"target\" value=\"sbc\" checked"),
        "{body}"
    );
    let base = format!(
        "/?schematic-id={id}&target=sbc&version=1.12.0&board=rpi_generic&arch=arm64&secureboot=false"
    );
    let body = unescape(&page(&srv, &base, "System extensions").await);
    assert!(
        body.contains("value=\"siderolabs/fw-test\" checked"),
        "{body}"
    );
    assert!(
        !body.contains("value=\"siderolabs/svc-test\" checked"),
        "{body}"
    );
    let body = unescape(
        &page(
            &srv,
            &format!("{base}&extensions=siderolabs/fw-test"),
            "Customization",
        )
        .await,
    );
    assert!(body.contains("name=\"cmdline\" value=\"a=1 b\""), "{body}");
    assert!(
        body.contains(">configTxtAppend: dtoverlay=x\n</textarea>"),
        "{body}"
    );
    // Submitting the pre-filled values unchanged gives back the same schematic.
    let location = submit(
        &srv,
        &[
            ("target", "sbc"),
            ("version", "1.12.0"),
            ("board", "rpi_generic"),
            ("arch", "arm64"),
            ("extensions", "siderolabs/fw-test"),
            ("cmdline-set", "true"),
            ("cmdline", "a=1 b"),
            ("overlay-options", "configTxtAppend: dtoverlay=x\n"),
            ("schematic-id", &id),
        ],
    )
    .await;
    assert!(
        location.starts_with(&format!("/ui/schematics/{id}?")),
        "{location}"
    );
    assert!(!location.contains("schematic-id"), "{location}");
    let (status, _, _) = get(&srv, &format!("/?schematic-id={}", "0".repeat(64))).await;
    assert_eq!(status, 404);
    // The result page without a target asks the wizard for the rest, pre-filled.
    let (status, headers, _) = get(&srv, &format!("/ui/schematics/{id}?target=sbc")).await;
    assert_eq!(status, 303);
    assert_eq!(
        headers["location"],
        format!("/?target=sbc&schematic-id={id}").as_str()
    );
    srv.stop().await;
}

/// Every absolute URL (`scheme://…`) in `text`.
fn absolute_urls(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !c.is_ascii_alphanumeric() && c != '+' && c != '-' && c != '.')
            .map_or(0, |p| p + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '<' || c == ')')
            .map_or(rest.len(), |p| i + p);
        out.push(rest[start..end].to_string());
        rest = &rest[end..];
    }
    out
}

#[tokio::test]
async fn no_page_names_another_origin() {
    let srv = server().await;
    let origin = format!("http://{}", srv.addrs.http);
    let location = submit(
        &srv,
        &[
            ("target", "metal"),
            ("version", "1.12.0"),
            ("arch", "amd64"),
            ("extensions", "siderolabs/fw-test"),
            ("cmdline-set", "true"),
        ],
    )
    .await;
    let ext = "/?target=metal&version=1.12.0&arch=amd64&secureboot=false";
    let pages = [
        "/".to_string(),
        "/?target=metal".into(),
        "/?target=cloud&version=1.12.0".into(),
        "/?target=sbc&version=1.12.0".into(),
        "/?target=metal&version=1.12.0".into(),
        ext.into(),
        format!("{ext}&extensions=-"),
        location,
        "/ui/version-doc?version=1.12.0".into(),
        "/ui/extensions-list?version=1.12.0&search=firmware".into(),
        "/ui/static/style.css".into(),
        "/ui/static/wizard.js".into(),
    ];
    let mut seen = 0;
    for path in &pages {
        let (status, _, body) = get(&srv, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let body = unescape(&body);
        for url in absolute_urls(&body) {
            seen += 1;
            assert!(url.starts_with(&origin), "{path} names {url}");
        }
        // Every link, script, stylesheet and form stays on this origin.
        for attr in ["href=\"", "src=\"", "action=\""] {
            for (i, _) in body.match_indices(attr) {
                let value = &body[i + attr.len()..];
                assert!(
                    value.starts_with('/') && !value.starts_with("//") || value.starts_with('#'),
                    "{path}: {}",
                    &value[..value.len().min(60)]
                );
            }
        }
    }
    // The result page's snippets name this appliance (so the check above saw URLs).
    assert!(seen >= 3, "{seen}");
    // The fragment filters by description.
    let (_, _, list) = get(&srv, "/ui/extensions-list?version=1.12.0&search=FIRMWARE").await;
    let list = unescape(&list);
    assert!(
        list.contains("siderolabs/fw-test") && !list.contains("siderolabs/svc-test"),
        "{list}"
    );
    srv.stop().await;
}

/// A fresh appliance with no release says how to get one, and how to try it first.
#[tokio::test]
async fn an_empty_appliance_points_to_the_import_and_the_demo() {
    let srv = TestServer::start().await;
    let body = page(&srv, "/?target=metal", "Talos version").await;
    assert!(
        body.contains("No Talos release is imported on this appliance yet"),
        "{body}"
    );
    assert!(body.contains("image-factory serve --demo"), "{body}");
    srv.stop().await;
}
