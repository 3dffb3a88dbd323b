//! `serve --demo`: a fresh data directory serves the synthetic test-kit release at once,
//! labelled as the demo in `/status`, the release's source and every UI page; a second start
//! does not make it again.

use std::ffi::OsStr;

use crate::common::{client, kit, spawn_serve};

async fn text(url: String) -> (u16, String) {
    let r = client().get(url).send().await.expect("get");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test]
async fn a_demo_start_serves_the_kit_release_labelled_as_the_demo() {
    if kit::kit_inputs().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let demo: &[&OsStr] = &["--demo".as_ref()];
    let mut srv = spawn_serve(
        &data,
        &[],
        "127.0.0.1:0",
        Some("127.0.0.1:0"),
        &[],
        false,
        demo,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", srv.http);
    assert_eq!(
        text(format!("{base}/versions")).await,
        (200, "[\"v1.11.0\"]\n".to_string())
    );
    let (_, status) = text(format!("{base}/status")).await;
    let st: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(st["demo"], true, "{st}");
    assert_eq!(st["releases"][0]["verified"], true, "{st}");
    let (_, page) = text(format!("{base}/")).await;
    assert!(page.contains("not Talos"), "{page}");
    assert!(srv.log_text().contains("DEMO: release v1.11.0"));

    // The main job: a schematic's boot media download.
    let created = client()
        .post(format!("{base}/schematics"))
        .body("customization: {}\n")
        .send()
        .await
        .expect("post");
    let id = created.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let iso = client()
        .get(format!("{base}/image/{id}/v1.11.0/metal-amd64.iso"))
        .send()
        .await
        .expect("iso");
    assert_eq!(iso.status(), 200);
    assert!(iso.bytes().await.expect("bytes").len() > 1 << 20);
    assert!(srv.log_text().contains("demo: building"));
    let _ = srv.child.kill();
    let _ = srv.child.wait();

    // A second start finds the demo release and makes nothing again.
    let mut srv = spawn_serve(
        &data,
        &[],
        "127.0.0.1:0",
        Some("127.0.0.1:0"),
        &[],
        false,
        demo,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, status) = text(format!("http://{}/status", srv.http)).await;
    let st: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(st["demo"], true);
    assert_eq!(st["releases"].as_array().map(Vec::len), Some(1));
    assert!(!srv.log_text().contains("demo: building"));
    let _ = srv.child.kill();
    let _ = srv.child.wait();
}
