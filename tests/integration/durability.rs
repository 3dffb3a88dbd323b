//! Durability with the real binary: a 201 survives `kill -9`; SIGTERM shuts down cleanly.

use crate::common::{VECTORS, client, spawn_bin};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_schematic_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    for round in 0..3 {
        let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let (input, canonical, id) = VECTORS[round % VECTORS.len()];
        let resp = c
            .post(format!("http://{}/schematics", srv.http))
            .body(input)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        // SIGKILL right after the acknowledgement: no graceful flush can happen.
        srv.child.kill().unwrap();
        srv.child.wait().unwrap();

        let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let resp = c
            .get(format!("http://{}/schematics/{id}", srv.http))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "round {round}");
        assert_eq!(resp.text().await.unwrap(), canonical);
        srv.child.kill().unwrap();
        srv.child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_graceful_and_a_second_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let status: serde_json::Value = client()
        .get(format!("http://{}/status", srv.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["listeners"]["http"], srv.http.to_string());

    // Same data directory: refused, naming the directory.
    let err = match spawn_bin(dir.path()) {
        Ok(mut other) => {
            let _ = other.child.kill();
            panic!("second instance started on a locked data directory");
        }
        Err(e) => e,
    };
    assert!(err.contains("locked"), "{err}");
    assert!(
        err.contains(&dir.path().join("meta").display().to_string()),
        "{err}"
    );

    let pid = srv.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = srv.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("storage flushed"), "{log}");
}
