//! Hostile schematic documents against the real binary (issue 14 item 1): an alias bomb and a
//! flood of duplicate keys are refused, a flood of distinct keys is a valid schematic, each
//! answered promptly with the server's peak memory bounded and other clients served meanwhile.

use std::time::{Duration, Instant};

use crate::common::{client, hostile, spawn_bin};

/// The peak resident memory of process `pid`, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_schematics_are_answered_promptly_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = spawn_bin(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{}/schematics", srv.http);
    let c = client();
    let dup_error = hostile::duplicate_keys_error();
    let cases = [
        (
            "alias bomb",
            hostile::alias_bomb(),
            400,
            hostile::ALIAS_BOMB_ERROR,
        ),
        (
            "deep aliases",
            hostile::deep_alias(),
            400,
            hostile::DEEP_ALIAS_ERROR,
        ),
        (
            "duplicate keys",
            hostile::duplicate_keys(),
            400,
            &dup_error[..],
        ),
        (
            "distinct keys",
            hostile::distinct_keys(),
            201,
            hostile::DISTINCT_KEYS_ID,
        ),
    ];
    for (name, body, status, needle) in cases {
        assert!(
            body.len() <= hostile::BODY_LIMIT,
            "{name}: {} bytes",
            body.len()
        );
        let started = Instant::now();
        let post = {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let resp = c
                    .post(url)
                    .body(body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("post");
                let code = resp.status().as_u16();
                (code, resp.text().await.unwrap_or_default())
            })
        };
        // Meanwhile another client is served.
        let health = c
            .get(format!("http://{}/healthz", srv.http))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("healthz while a hostile document is parsed");
        assert_eq!(health.status(), 200, "{name}");
        let (code, text) = post.await.expect("task");
        let took = started.elapsed();
        assert_eq!(code, status, "{name}: {}", &text[..text.len().min(300)]);
        assert!(
            text.contains(needle),
            "{name}: {}",
            &text[..text.len().min(300)]
        );
        if code != 201 {
            // A refusal's report is capped, however many errors the document holds.
            assert!(
                text.len() < 64 << 10,
                "{name}: a {} byte answer",
                text.len()
            );
        }
        // A liveness bound with wide slack, not a speed check.
        assert!(took < Duration::from_secs(30), "{name} took {took:?}");
        eprintln!("{name}: {code} in {took:?}");
    }
    let peak = peak_rss_kib(srv.child.id());
    eprintln!("server peak RSS {} MiB", peak / 1024);
    assert!(peak < 256 * 1024, "server peak RSS {} MiB", peak / 1024);
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
}
