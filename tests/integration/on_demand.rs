//! Releases on demand (upstream's mode for connected sites): a release that only a registry
//! holds is listed, imported once — verified — when first asked for, and served; a registry
//! that does not answer never delays the start and is only reported.

use std::time::{Duration, Instant};

use crate::common::assets::{create_schematic, get, metric};
use crate::common::release::mini_release;
use crate::common::{TestServer, client};
use image_factory::trust::SigningKey;

async fn status(s: &TestServer) -> serde_json::Value {
    client()
        .get(s.url("/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_only_the_registry_has_is_listed_imported_once_and_served() {
    let Some(reg) = crate::common::registry::start() else {
        return;
    };
    let t = tempfile::tempdir().expect("tmp");
    let key = SigningKey::from_seed(&[5; 32]);
    let mini = mini_release(&t.path().join("layout"), "v1.11.0", key.clone(), 1 << 20);
    crate::common::registry::push_layout(&t.path().join("layout"), &reg.addr, "mirror").await;
    let pubkey = t.path().join("k.pub");
    std::fs::write(&pubkey, key.public_key_pem().expect("pem")).expect("write");

    let (addr, pubkey) = (reg.addr.clone(), pubkey.display().to_string());
    let s = TestServer::start_with(move |c| {
        c.artifacts.core.registry = addr;
        c.artifacts.core.namespace = "mirror".into();
        c.trust.public_keys = vec![pubkey];
        c.http.external_url = "http://factory.test:8080/".into();
    })
    .await;
    // Listed once the tag list is read (in the background), before anything is imported.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get(&s, "/versions", &[]).await.text() == "[\"v1.11.0\"]\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{}", status(&s).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = status(&s).await;
    assert_eq!(st["releases"], serde_json::json!([]), "{st}");
    assert_eq!(
        st["onDemand"]["listed"],
        serde_json::json!(["v1.11.0"]),
        "{st}"
    );

    // Five requests at once: one import, every request served the release's kernel.
    let id = create_schematic(&s, "customization: {}\n").await;
    let url = s.url(&format!("/image/{id}/v1.11.0/kernel-amd64"));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client().get(url).send().await.expect("get");
                (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
            })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.expect("join");
        assert_eq!(status, 200);
        assert!(body == mini.vmlinuz, "not the release's kernel");
    }
    assert_eq!(
        metric(
            &s,
            "image_factory_on_demand_imports_total",
            &["result=\"ok\""]
        )
        .await,
        1.0
    );
    let st = status(&s).await;
    assert_eq!(st["releases"][0]["version"], "v1.11.0", "{st}");
    assert_eq!(st["releases"][0]["verified"], true, "{st}");
    // The catalog of the imported release answers like any other.
    let ext = get(&s, "/version/v1.11.0/extensions/official", &[]).await;
    assert_eq!(ext.status, 200);
    assert!(
        ext.text().contains("siderolabs/kmod-test"),
        "{}",
        ext.text()
    );
    s.stop().await;
}

#[tokio::test]
async fn an_unreachable_registry_delays_nothing_and_is_reported() {
    let t = tempfile::tempdir().expect("tmp");
    let key = SigningKey::from_seed(&[6; 32]);
    let pubkey = t.path().join("k.pub");
    std::fs::write(&pubkey, key.public_key_pem().expect("pem")).expect("write");
    // A loopback port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let pubkey = pubkey.display().to_string();
    let started = Instant::now();
    let s = TestServer::start_with(move |c| {
        c.artifacts.core.registry = closed.to_string();
        c.trust.public_keys = vec![pubkey];
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(get(&s, "/versions", &[]).await.text(), "[]\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st = status(&s).await;
        if st["onDemand"]["error"].is_string() {
            break st;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st["onDemand"]["listed"], serde_json::json!([]), "{st}");
    let worker = st["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == "release-tags"))
        .cloned()
        .expect("release-tags worker");
    assert!(worker["errors"].as_u64() >= Some(1), "{worker}");
    let g = get(&s, "/version/v1.11.0/extensions/official", &[]).await;
    assert_eq!(g.status, 404);
    s.stop().await;
}

#[tokio::test]
async fn without_a_trusted_key_nothing_is_imported_on_demand() {
    // Upstream's default configuration names ghcr.io; without a key to verify with, the
    // appliance never contacts it.
    let s = TestServer::start_with(|c| c.artifacts.core.registry = "ghcr.io".into()).await;
    let st = status(&s).await;
    assert!(st["onDemand"].is_null(), "{st}");
    assert!(
        !st["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["name"] == "release-tags")),
        "{st}"
    );
    s.stop().await;
}
