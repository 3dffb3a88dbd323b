//! The declarative machines file (`netboot.machinesFile`) with the real binary: loaded at
//! start, reloaded on SIGHUP and by `machines reload`, read-only through the API, a bad file
//! refused whole while the previous set stays, and a bad file at start an error naming it.

use std::process::Command;
use std::time::Duration;

use super::{V, listed, machines_ok, machines_refused};
use crate::common::{BinServer, client, spawn_bin_with};

/// A server that is killed if the test ends without stopping it (a failed assertion), so no
/// `serve` outlives its test.
struct Guarded(BinServer);

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.child.try_wait() {
            let _ = self.0.child.kill();
            let _ = self.0.child.wait();
        }
    }
}

impl std::ops::Deref for Guarded {
    type Target = BinServer;
    fn deref(&self) -> &BinServer {
        &self.0
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut BinServer {
        &mut self.0
    }
}

/// `serve` on `data` with `env`, guarded.
fn serve(data: &std::path::Path, env: &[(&str, &str)]) -> Guarded {
    Guarded(spawn_bin_with(data, env, false).unwrap_or_else(|e| panic!("{e}")))
}

/// Sends SIGHUP to the server and waits until it logged the outcome of reload number `n`
/// (counting every "SIGHUP:" line); returns that line.
fn hangup(srv: &BinServer, n: usize) -> String {
    let pid = srv.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    for _ in 0..200 {
        let lines: Vec<String> = srv
            .log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|l| l.contains("SIGHUP:"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no SIGHUP outcome logged");
}

/// Sends SIGTERM and waits for a clean exit.
fn stop(srv: &mut BinServer) {
    let pid = srv.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let exit = srv.child.wait().expect("wait");
    assert!(exit.success(), "exit {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machines_file_loads_at_start_and_reloads_on_sighup() {
    let t = tempfile::tempdir().expect("tmp");
    let data = t.path().join("data");
    let file = t.path().join("machines.yaml");
    std::fs::write(&file, "machines: []\n").expect("write");
    let env = [("IF_NETBOOT_MACHINESFILE", file.to_str().unwrap())];
    let mut srv = serve(&data, &env);
    let resp = client()
        .post(format!("http://{}/schematics", srv.http))
        .body("customization: {}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 201);
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let entry = |name: &str, selector: &str| {
        format!(
            "  - name: {name}\n    selector: {selector}\n    schematic: {id}\n    version: {V}\n    extraKernelArgs: [file.arg={name}]\n"
        )
    };
    let good = format!(
        "# rack 1\nmachines:\n{}{}",
        entry("f1", "{mac: \"52-54-00-00-00-01\"}"),
        entry("fdefault", "{}")
    );
    std::fs::write(&file, &good).expect("write");
    let line = tokio::task::block_in_place(|| hangup(&srv, 1));
    assert!(line.contains("SIGHUP: machines file reloaded"), "{line}");
    let (names, file_state) = listed(&data).await;
    let file_names = [
        ("f1".to_string(), "file".to_string()),
        ("fdefault".to_string(), "file".to_string()),
    ];
    assert_eq!(names, file_names);
    assert_eq!(file_state["assignments"], 2);
    assert_eq!(file_state["path"], file.to_str().unwrap());

    // File entries are read-only through the API.
    let rm = machines_refused(&data, &["rm", "f1"]).await;
    assert!(
        rm.contains("409 Conflict: assignment f1 comes from netboot.machinesFile"),
        "{rm}"
    );
    let over = machines_refused(
        &data,
        &[
            "set",
            "f1",
            "--mac",
            "52:54:00:00:00:02",
            "--schematic",
            &id,
            "--version",
            V,
        ],
    )
    .await;
    assert!(over.contains("comes from netboot.machinesFile"), "{over}");
    machines_ok(
        &data,
        &[
            "set",
            "api1",
            "--mac",
            "52:54:00:00:00:09",
            "--schematic",
            &id,
            "--version",
            V,
        ],
    )
    .await;

    // Bad files: each is refused whole and the previous set stays in force.
    let bad_files = [
        "machines: [\n".to_string(),
        format!("machines:\n{}", entry("f1", "{mac: \"not-a-mac\"}")),
        // Ties with the API's api1.
        format!("machines:\n{}", entry("f9", "{mac: \"52:54:00:00:00:09\"}")),
        format!("machinez:\n{}", entry("f1", "{}")),
    ];
    let mut all = vec![("api1".to_string(), "api".to_string())];
    all.extend(file_names.iter().cloned());
    for (i, bad) in bad_files.iter().enumerate() {
        std::fs::write(&file, bad).expect("write");
        let line = tokio::task::block_in_place(|| hangup(&srv, i + 2));
        assert!(
            line.contains("SIGHUP: machines file refused; the previous assignments stay in force"),
            "{bad}: {line}"
        );
        let (names, file_state) = listed(&data).await;
        assert_eq!(names, all, "{bad}");
        assert!(
            file_state["error"]
                .as_str()
                .unwrap_or("")
                .contains("machines file"),
            "{bad}: {file_state}"
        );
        // The file's assignment still boots.
        let r = client()
            .get(format!(
                "http://{}/pxe/boot.ipxe?mac=52:54:00:00:00:01",
                srv.http
            ))
            .send()
            .await
            .expect("boot")
            .text()
            .await
            .expect("text");
        assert!(r.contains("assignment f1 ("), "{bad}: {r}");
    }
    // `machines reload` says why, too.
    let reload = machines_refused(&data, &["reload"]).await;
    assert!(
        reload.contains("400 Bad Request: machines file"),
        "{reload}"
    );

    // A good file again; then a restart loads it at start.
    std::fs::write(&file, &good).expect("write");
    assert!(
        machines_ok(&data, &["reload"])
            .await
            .contains("\"assignments\":2")
    );
    stop(&mut srv);
    let mut srv = serve(&data, &env);
    let (names, file_state) = listed(&data).await;
    assert_eq!(names, all);
    assert!(file_state["loadedAt"].is_string(), "{file_state}");
    assert!(file_state.get("error").is_none(), "{file_state}");
    stop(&mut srv);

    // A bad file at start is an error naming the file.
    std::fs::write(&file, "machines: 3\n").expect("write");
    let refused = match spawn_bin_with(&data, &env, false) {
        Ok(mut srv) => {
            let _ = srv.child.kill();
            panic!("serve started with a bad machines file");
        }
        Err(e) => e,
    };
    assert!(
        refused.contains("cannot load the machine assignments")
            && refused.contains(file.to_str().unwrap()),
        "{refused}"
    );
}
