//! Builds are admitted, not just started (issue 14 item 3): a flood of distinct cold requests
//! meets a bounded queue — the excess is refused with `503` and `Retry-After` while the server
//! keeps answering everything else, and a request for a build already admitted always joins it.

use std::time::{Duration, Instant};

use crate::common::assets::{V, create_schematic, metric};
use crate::common::kit;
use crate::common::{TestServer, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_distinct_cold_isos_meets_the_queue_bound() {
    let Some(k) = kit::imported(0) else { return };
    let data = k.data.display().to_string();
    let s = TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.build.max_concurrency = 2;
        c.build.max_queue = 4;
    })
    .await;
    // 300 schematics, hence 300 distinct cache keys for the same output.
    let mut ids = Vec::new();
    for i in 0..300 {
        let yaml = format!("customization:\n  extraKernelArgs:\n    - if.flood={i}\n");
        ids.push(create_schematic(&s, &yaml).await);
    }
    // One client for the flood and one for the probes, made before it starts (making a client
    // loads the system's root certificates: 300 of them at once would starve the process).
    let flood = client();
    let probe = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        if i == 1 {
            // The first build is surely admitted before the flood; it is joined below.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let url = s.url(&format!("/image/{id}/{V}/metal-amd64.iso"));
        let flood = flood.clone();
        tasks.push(tokio::spawn(async move {
            let resp = flood
                .get(url)
                .timeout(Duration::from_secs(600))
                .send()
                .await
                .expect("get");
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, retry, text)
        }));
    }
    // While the flood is admitted or refused, the server answers other requests at once.
    let mut health = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let resp = probe
            .get(s.url("/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("healthz during the flood");
        assert_eq!(resp.status(), 200);
        health.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A request for a build already admitted joins it, whatever the queue holds.
    let joined = probe
        .get(s.url(&format!("/image/{}/{V}/metal-amd64.iso", ids[0])))
        .timeout(Duration::from_secs(600));
    let joined = tokio::spawn(async move { joined.send().await.map(|r| r.status().as_u16()) });

    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, retry, text) = t.await.expect("task");
        match status {
            200 => ok += 1,
            503 => {
                refused += 1;
                let retry = retry.expect("a refusal carries Retry-After");
                assert!((1..=600).contains(&retry), "{retry}");
                assert!(text.contains("build queue is full"), "{text}");
            }
            other => panic!("unexpected status {other}: {text}"),
        }
    }
    // At most concurrency + queue were admitted (a slot freed during the flood may admit a
    // few more); the rest were refused.
    assert!(ok >= 6, "only {ok} builds admitted");
    assert!(refused >= 250, "only {refused} refused of 300");
    assert_eq!(ok + refused, 300);
    // A liveness bound with wide slack (a refusal costs almost nothing), not a speed check.
    assert!(
        health.iter().all(|d| *d < Duration::from_secs(2)),
        "healthz stalled during the flood: {health:?}"
    );
    assert_eq!(joined.await.expect("join task").expect("joined get"), 200);
    let refused_metric = metric(&s, "image_factory_assets_build_refused_total", &[]).await;
    assert_eq!(refused_metric, refused as f64);
    eprintln!(
        "flood: {ok} built, {refused} refused in {:?}; healthz {:?}",
        started.elapsed(),
        health
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_tool_is_killed_at_its_deadline_and_its_slot_reused() {
    let Some(k) = kit::imported(0) else { return };
    // A fake xorriso that records its PID and hangs.
    let tools = tempfile::tempdir().unwrap();
    let pid_file = tools.path().join("xorriso.pid");
    let fake = tools.path().join("xorriso");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 300\n",
            pid_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, dir) = (
        k.data.display().to_string(),
        tools.path().display().to_string(),
    );
    let s = TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
        c.build.max_concurrency = 1;
        c.build.tool_dirs = vec![dir];
        c.build.tool_timeout_seconds = 2;
    })
    .await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    let c = client();
    let resp = c
        .get(s.url(&format!("/image/{id}/{V}/metal-amd64.iso")))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("iso");
    assert_eq!(resp.status(), 500);
    // The tool was killed.
    let pid = std::fs::read_to_string(&pid_file).expect("the fake xorriso ran");
    let pid = pid.trim();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the hung tool {pid} is still running"
    );
    // The only build slot is free again: another build runs and succeeds.
    let resp = c
        .get(s.url(&format!("/image/{id}/{V}/initramfs-amd64.xz")))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("initramfs");
    assert_eq!(resp.status(), 200);
    // And the failed build left no scratch behind.
    let leftovers: Vec<_> = std::fs::read_dir(k.data.join("tmp"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
    s.stop().await;
}
