//! `kill -9` in the middle of a build: the restarted appliance sweeps the half-written files
//! and rebuilds a correct asset.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{client, kit, spawn_bin};

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn in_flight(data: &Path) -> usize {
    files_in(&data.join("tmp")) + files_in(&data.join("blobs/tmp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_build_leaves_no_orphans_after_restart() {
    let Some(k) = kit::imported(0) else { return };
    let server = spawn_bin(&k.data).expect("serve");
    let base = format!("http://{}", server.http);
    let http = client();
    let id: serde_json::Value = http
        .post(format!("{base}/schematics"))
        .body(kit::SCHEMATIC)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("schematic");
    let id = id["id"].as_str().expect("id").to_string();
    let url = format!("{base}/image/{id}/v1.11.0/installer-amd64.tar");
    let bg = tokio::spawn(client().get(url.clone()).send());
    // Wait until the build has files in flight, then kill the appliance without warning.
    let start = Instant::now();
    while in_flight(&k.data) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the build never wrote a temporary file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut child = server.child;
    // SIGKILL: no destructor, no flush.
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let _ = bg.await;
    let orphans = in_flight(&k.data);
    assert!(
        orphans > 0,
        "nothing left behind: the kill came too late to test"
    );

    let server = spawn_bin(&k.data).expect("restart");
    assert_eq!(
        in_flight(&k.data),
        0,
        "orphaned temporary files survived the restart"
    );
    let base = format!("http://{}", server.http);
    let resp = http
        .get(format!("{base}/image/{id}/v1.11.0/installer-amd64.tar"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let body = resp.bytes().await.expect("body");
    assert_eq!(
        etag,
        format!(
            "\"{}\"",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
        )
    );
    // The rebuilt installer is a well-formed docker-archive.
    let tar = k.dir.path().join("installer.tar");
    std::fs::write(&tar, &body).expect("write");
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .expect("tar");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifest.json"));
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("interrupted"),
        "the restart did not report sweeping leftovers:\n{log}"
    );
    let mut child = server.child;
    let _ = child.kill();
    let _ = child.wait();
}
