//! `/talosctl`: the kit release's `talosctl-all` image, imported and verified with the release,
//! listed with upstream's shape and downloaded byte for byte.

use crate::common::assets::{get, start};
use crate::common::{client, kit};

#[tokio::test]
async fn talosctl_binaries_are_listed_and_downloaded() {
    let Some(k) = kit::imported(0) else { return };
    let s = start(&k).await;
    let list = get(&s, "/talosctl/v1.11.0", &[]).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.header("content-type"), "application/json");
    let base = "http://factory.test:8080/talosctl/v1.11.0";
    assert_eq!(
        list.text(),
        format!(
            "[\"{base}/talosctl-darwin-arm64\",\"{base}/talosctl-linux-amd64\",\"{base}/talosctl-linux-arm64\",\"{base}/talosctl-windows-amd64.exe\"]\n"
        )
    );
    // A `v` is added as everywhere else.
    assert_eq!(get(&s, "/talosctl/1.11.0", &[]).await.text(), list.text());

    let bin = get(&s, "/talosctl/v1.11.0/talosctl-linux-amd64", &[]).await;
    assert_eq!(bin.status, 200);
    assert!(bin.text().starts_with("#!/bin/sh"), "{}", bin.text());
    assert!(bin.text().contains("talosctl v1.11.0 (test kit)"));
    assert_eq!(
        bin.header("content-disposition"),
        "attachment; filename=\"talosctl-linux-amd64\""
    );
    assert_eq!(bin.header("content-length"), bin.body.len().to_string());
    let exe = get(&s, "/talosctl/v1.11.0/talosctl-windows-amd64.exe", &[]).await;
    assert_eq!((exe.status, exe.body.len()), (200, 4096));

    let head = client()
        .head(s.url("/talosctl/v1.11.0/talosctl-linux-amd64"))
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        bin.body.len().to_string()
    );

    for (path, status) in [
        ("/talosctl/v1.11.0/talosctl-plan9-amd64", 404),
        ("/talosctl/v1.11.0/kubectl", 404),
        ("/talosctl/v1.99.0", 404),
        ("/talosctl/v1.99.0/talosctl-linux-amd64", 404),
    ] {
        let g = get(&s, path, &[]).await;
        assert_eq!(g.status, status, "{path}: {}", g.text());
    }
    s.stop().await;
}

#[tokio::test]
async fn releases_before_talosctl_all_list_nothing() {
    let Some(k) = kit::imported_version("v1.10.3", 0) else {
        return;
    };
    let s = start(&k).await;
    let list = get(&s, "/talosctl/v1.10.3", &[]).await;
    assert_eq!((list.status, list.text()), (200, "[]\n".to_string()));
    let g = get(&s, "/talosctl/v1.10.3/talosctl-linux-amd64", &[]).await;
    assert_eq!(g.status, 404);
    s.stop().await;
}
