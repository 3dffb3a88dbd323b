//! `image-factory peers`: the cluster as the running appliance sees it — its own peer ID and
//! cluster, and every peer with its state, connection (`SILENT` when it is connected but
//! answers no ping), round trip, what it holds (schematics,
//! releases, models, bytes, as it last announced), the blob bytes moved to and from it in this
//! run, and its addresses; then the blobs being fetched from members, with their progress.

use std::process::ExitCode;

use clap::Args;

use super::error::{CliError, finish};
use super::remote::{Conn, client, get_json};
use super::runtime;

/// Flags of `peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// How to reach the appliance.
    #[command(flatten)]
    pub conn: Conn,
    /// Print the appliance's JSON (`replication` of `GET /admin/status`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `peers`.
pub fn run(args: PeersArgs) -> ExitCode {
    finish("peers", run_inner(&args))
}

fn run_inner(args: &PeersArgs) -> Result<(), CliError> {
    let admin = client(&args.conn)?;
    let (status, _) = runtime()?.block_on(get_json::<serde_json::Value>(&admin, "admin/status"))?;
    let r = &status["replication"];
    if args.json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        return Ok(());
    }
    print!("{}", table(r));
    Ok(())
}

fn table(r: &serde_json::Value) -> String {
    let s = text;
    if r["enabled"] != true {
        return "replication is off on this appliance (replication.enabled)\n".into();
    }
    let mut out = format!("this node  {}\n", s(&r["peerId"]));
    match r["cluster"].as_object() {
        Some(c) => {
            out += &format!(
                "cluster    {}  factory URL {}{}\n",
                c.get("id").map(s).unwrap_or_default(),
                c.get("factoryURL").map(s).unwrap_or_default(),
                if c.get("removed") == Some(&serde_json::Value::Bool(true)) {
                    "  (this node was REMOVED)"
                } else {
                    ""
                }
            );
        }
        None => out += "cluster    none (cluster invite founds one)\n",
    }
    if r["holds"].is_object() {
        out += &format!("holds      {}\n", holds(&r["holds"]));
    }
    let peers = r["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        out += "no peers\n";
    } else {
        out += &peer_table(&peers);
    }
    out += &transfers(
        r["transfers"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
    );
    out
}

/// The blobs being fetched: what for, bytes received of the size, since when.
fn transfers(list: &[serde_json::Value]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let s = text;
    let mut out = format!(
        "\n{:<20} {:<26} {:>28}  {}\n",
        "FETCHING (BLAKE3)", "FOR", "RECEIVED", "SINCE"
    );
    for t in list {
        let (got, size) = (
            t["received"].as_u64().unwrap_or(0),
            t["size"].as_u64().unwrap_or(0),
        );
        let pct = (got as f64 * 100.0 / size.max(1) as f64).min(100.0);
        // The BLAKE3, and a model's purpose (it names the 64-hex key), cut to their columns
        // (`--json` has them whole).
        out += &format!(
            "{:<20} {:<26} {:>28}  {}\n",
            cut(&s(&t["blob"]), 16),
            cut(&s(&t["purpose"]), 25),
            format!("{} of {} ({pct:.0}%)", bytes(got), bytes(size)),
            s(&t["startedAt"])
        );
    }
    out
}

/// One line per peer, under a header.
fn peer_table(peers: &[serde_json::Value]) -> String {
    let s = text;
    let mut out = format!(
        "{:<54} {:<10} {:<9} {:>8}  {:<40} {:>19}  {}\n",
        "PEER",
        "STATE",
        "CONNECTED",
        "RTT",
        "HOLDS (SCHEMATICS/RELEASES/MODELS/BYTES)",
        "IN/OUT",
        "ADDRESSES / REASON"
    );
    for p in peers {
        let rtt = p["rttMs"]
            .as_f64()
            .map(|ms| format!("{ms:.1}ms"))
            .unwrap_or_else(|| "-".into());
        // Connected but answering no ping: a stopped or hung process.
        let silent = p["connected"] == true && p["responding"] == false;
        let mut detail = match p["reason"].as_str() {
            Some(reason) => reason.to_string(),
            None => p["addrs"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        };
        if silent {
            detail = format!("no answer since {}  {detail}", s(&p["lastAnswer"]));
        }
        let moved = format!(
            "{}/{}",
            bytes(p["bytesReceived"].as_u64().unwrap_or(0)),
            bytes(p["bytesSent"].as_u64().unwrap_or(0))
        );
        out += &format!(
            "{:<54} {:<10} {:<9} {:>8}  {:<40} {:>19}  {}\n",
            s(&p["peerId"]),
            s(&p["state"]),
            match (p["connected"] == true, silent) {
                (true, true) => "SILENT",
                (true, false) => "yes",
                _ => "no",
            },
            rtt,
            holds(&p["holds"]),
            moved,
            detail
        );
    }
    out
}

/// `text` cut to its first `chars` characters, marked with `…` when cut.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// A string field's text, `-` when absent.
fn text(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

/// `schematics/releases/models/bytes` of a `holds` object, `-` when unknown.
fn holds(h: &serde_json::Value) -> String {
    if !h.is_object() {
        return "-".into();
    }
    let n = |k: &str| h[k].as_u64().unwrap_or(0);
    format!(
        "{}/{}/{}/{}",
        n("schematics"),
        n("releases"),
        n("models"),
        bytes(n("bytes"))
    )
}

/// Bytes in binary units.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_every_peer_with_state_rtt_and_reason() {
        let r = serde_json::json!({
            "enabled": true, "peerId": "12D3Self",
            "cluster": {"id": "c1", "factoryURL": "http://f/", "member": true, "removed": false},
            "peers": [
                {"peerId": "12D3A", "addrs": ["/ip4/10.0.0.2/tcp/4001"], "connected": true,
                 "rttMs": 1.3, "state": "member",
                 "holds": {"schematics": 12, "releases": 2, "models": 5, "bytes": 3221225472u64},
                 "bytesReceived": 1048576, "bytesSent": 0},
                {"peerId": "12D3B", "addrs": [], "connected": false, "rttMs": null,
                 "state": "refused", "reason": "expired"},
                {"peerId": "12D3C", "addrs": ["/ip4/10.0.0.3/tcp/4001"], "connected": true,
                 "responding": false, "lastAnswer": "2026-12-06T12:00:00Z", "rttMs": 0.8,
                 "state": "member"}
            ]
        });
        let t = table(&r);
        assert!(t.contains("this node  12D3Self"), "{t}");
        assert!(t.contains("cluster    c1  factory URL http://f/"), "{t}");
        let a = t.lines().find(|l| l.starts_with("12D3A")).expect("A");
        assert!(
            a.contains("member") && a.contains("yes") && a.contains("1.3ms"),
            "{a}"
        );
        assert!(a.ends_with("/ip4/10.0.0.2/tcp/4001"), "{a}");
        assert!(a.contains("12/2/5/3.0GiB"), "{a}");
        assert!(a.contains("1.0MiB/0B"), "{a}");
        let b = t.lines().find(|l| l.starts_with("12D3B")).expect("B");
        assert!(
            b.contains("refused") && b.contains(" no ") && b.ends_with("expired"),
            "{b}"
        );
        assert!(b.contains(" - "), "unknown holdings shown as -: {b}");
        let c = t.lines().find(|l| l.starts_with("12D3C")).expect("C");
        assert!(
            c.contains(" SILENT ")
                && c.ends_with("no answer since 2026-12-06T12:00:00Z  /ip4/10.0.0.3/tcp/4001"),
            "{c}"
        );
        assert!(!t.contains("FETCHING"), "no transfer, no section: {t}");
        let off = table(&serde_json::json!({"enabled": false, "peers": []}));
        assert!(off.contains("replication is off"));
    }

    #[test]
    fn table_shows_each_blob_being_fetched_with_its_progress() {
        let r = serde_json::json!({
            "enabled": true, "peerId": "12D3Self", "peers": [],
            "transfers": [
                {"blob": "ab".repeat(32), "purpose": "release v1.11.0", "size": 1073741824u64,
                 "received": 268435456u64, "startedAt": "2026-12-07T18:00:00Z"},
                {"blob": "cd".repeat(32), "purpose": "model 9f2e", "size": 0,
                 "received": 0, "startedAt": "2026-12-07T18:01:00Z"}
            ]
        });
        let t = table(&r);
        let a = t
            .lines()
            .find(|l| l.starts_with("abababab"))
            .expect("first");
        assert!(
            a.contains("release v1.11.0")
                && a.contains("256.0MiB of 1.0GiB (25%)")
                && a.ends_with("2026-12-07T18:00:00Z"),
            "{a}"
        );
        let b = t
            .lines()
            .find(|l| l.starts_with("cdcdcdcd"))
            .expect("second");
        assert!(
            b.contains("model 9f2e") && b.contains("0B of 0B (0%)"),
            "{b}"
        );
        assert!(t.contains("no peers"), "{t}");
        // A model's 64-hex key is cut to the column, and the columns stay aligned.
        let long = serde_json::json!({
            "enabled": true, "peerId": "12D3Self", "peers": [],
            "transfers": [{"blob": "ef".repeat(32), "purpose": format!("model {}", "7f".repeat(32)),
                           "size": 10, "received": 5, "startedAt": "2026-12-07T18:02:00Z"}]
        });
        let t2 = table(&long);
        let c = t2
            .lines()
            .find(|l| l.starts_with("efefefef"))
            .expect("third");
        assert!(c.contains(" model 7f7f7f7f7f7f7f7f7f7… "), "{c}");
        // Columns in characters (the cut marks are multi-byte).
        let col = |l: &str, pat: &str| l.find(pat).map(|i| l[..i].chars().count());
        assert_eq!(
            col(c, "  2026-12-07T18:02"),
            col(a, "  2026-12-07T18:00"),
            "{t}{t2}"
        );
    }
}
