//! Durability with the real binary: a 201 survives `kill -9`; SIGTERM shuts down cleanly; a
//! damaged metadata store is detected, reported and rebuilt from the schematic documents.

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
    let status = status(&srv).await;
    assert_eq!(status["listeners"]["http"], srv.http.to_string());

    // Same data directory: refused, naming the directory.
    let err = refused(
        dir.path(),
        "second instance started on a locked data directory",
    );
    assert!(err.contains("locked"), "{err}");
    assert!(
        err.contains(&dir.path().join("meta").display().to_string()),
        "{err}"
    );

    stop(&mut srv);
    let log = srv.log.lock().unwrap().join("\n");
    assert!(log.contains("storage flushed"), "{log}");
}

/// The error of a server start on `data` that must fail (`why` otherwise).
fn refused(data: &std::path::Path, why: &str) -> String {
    match spawn_bin(data) {
        Ok(mut srv) => {
            let _ = srv.child.kill();
            panic!("{why}");
        }
        Err(e) => e,
    }
}

/// Sends SIGTERM to the server and waits for its clean exit (storage flushed).
fn stop(srv: &mut crate::common::BinServer) {
    let pid = srv.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = srv.child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

/// POSTs `n` distinct schematics; returns (ID, canonical YAML) of each.
async fn post_schematics(srv: &crate::common::BinServer, n: usize) -> Vec<(String, String)> {
    let c = client();
    let mut out = Vec::new();
    for i in 0..n {
        let resp = c
            .post(format!("http://{}/schematics", srv.http))
            .body(format!(
                "customization: {{extraKernelArgs: [durability.test={i}]}}"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let v: serde_json::Value = resp.json().await.unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        out.push((id, v["schematic"].as_str().unwrap().to_string()));
    }
    out
}

/// How many of `stored` the server answers with their canonical YAML.
async fn servable(srv: &crate::common::BinServer, stored: &[(String, String)]) -> usize {
    let c = client();
    let mut n = 0;
    for (id, canonical) in stored {
        let resp = c
            .get(format!("http://{}/schematics/{id}", srv.http))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK && resp.text().await.unwrap() == *canonical {
            n += 1;
        }
    }
    n
}

/// `GET /status`.
async fn status(srv: &crate::common::BinServer) -> serde_json::Value {
    client()
        .get(format!("http://{}/status", srv.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halved_metadata_log_is_detected_and_the_schematics_restored_from_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let stored = post_schematics(&srv, 50).await;
    stop(&mut srv);

    // A torn or damaged log: its second half is gone.
    let db = dir.path().join("meta/db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let st = status(&srv).await;
    let restored = st["storage"]["restoredSchematics"].as_u64().unwrap_or(0);
    // The halved log lost acknowledged schematics (as measured on a sled-only store) ...
    assert!(restored > 0, "nothing was lost? {st}");
    assert_eq!(st["storage"]["state"], "restored", "{st}");
    assert_eq!(st["schematics"], 50, "{st}");
    // ... which was said loudly ...
    let log = srv.log.lock().unwrap().join("\n");
    let reported = log.lines().any(|l| {
        l.contains("\"level\":\"ERROR\"")
            && l.contains(&format!("had lost {restored} schematic(s)"))
    });
    assert!(reported, "{log}");
    // ... and every one of them is served again.
    assert_eq!(servable(&srv, &stored).await, 50);
    stop(&mut srv);

    // Restored for good: the next start finds nothing to restore.
    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status(&srv).await["storage"]["state"], "ok");
    assert_eq!(servable(&srv, &stored).await, 50);
    stop(&mut srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_store_that_does_not_open_is_refused_and_rebuilt_by_doctor_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let stored = post_schematics(&srv, 10).await;
    stop(&mut srv);

    // A torn snapshot file: the metadata store refuses to open.
    std::fs::write(dir.path().join("meta/snap.0000000000000ABC"), b"torn").unwrap();
    let err = refused(
        dir.path(),
        "the server started on a metadata store that does not open",
    );
    assert!(err.contains("is damaged and cannot be opened"), "{err}");
    assert!(err.contains("image-factory doctor --repair"), "{err}");

    let doctor = |repair: bool| {
        let mut cmd = std::process::Command::new(crate::common::bin());
        cmd.arg("doctor").arg("--data-dir").arg(dir.path());
        if repair {
            cmd.arg("--repair");
        }
        let out = cmd.env_remove("RUST_LOG").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let checked = doctor(false);
    assert!(
        checked.contains("[FAIL] storage: metadata store") && checked.contains("damaged"),
        "{checked}"
    );
    let repaired = doctor(true);
    assert!(
        repaired.contains("[ ok ] metadata store: moved aside to"),
        "{repaired}"
    );
    assert!(
        repaired.contains("[ ok ] schematic index: 0 indexed, 10 document(s); 10 restored"),
        "{repaired}"
    );
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("meta.damaged-"));
    assert!(aside, "the damaged store was not kept for inspection");

    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(servable(&srv, &stored).await, 10);
    assert_eq!(status(&srv).await["storage"]["state"], "ok");
    stop(&mut srv);
}
