//! `/pxe/boot.ipxe` with a real iPXE: QEMU's SeaBIOS runs Debian's iPXE ROM, user-mode DHCP
//! hands it the bare `/pxe/boot.ipxe` URL, and iPXE follows the chain script (so `${netX/mac}`,
//! `${serial:uristring}` and `chain --replace` are what this iPXE understands) to the Talos
//! script of its assignment. A machine assigned by MAC boots its schematic with the
//! assignment's extra kernel argument; a machine with another MAC boots the default.

use std::net::TcpListener;
use std::path::Path;

use super::{V, machines_ok};
use crate::common::assets::create_schematic;
use crate::common::kit;
use image_factory::synth::Marker;
use testsupport::qemu;

/// QEMU's default MAC of the first NIC.
const QEMU_MAC: &str = "52:54:00:12:34:56";

/// A loopback port that was free a moment ago (the guest must know it before we bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Boots QEMU from `bootfile` with the NIC's MAC set to `mac`; returns the marker.
async fn boot(bootfile: &str, mac: &str) -> Marker {
    let mut b = qemu::Boot::pxe(bootfile);
    for arg in b.args.iter_mut() {
        if arg.starts_with("virtio-net-pci,") {
            arg.push_str(&format!(",mac={mac}"));
        }
    }
    let run = tokio::task::spawn_blocking(move || b.run())
        .await
        .expect("join")
        .expect("qemu");
    match Marker::find(&run.console) {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{e}\nconsole:\n{}", run.console),
        None => panic!("no marker; console:\n{}", run.console),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipxe_follows_boot_ipxe_to_its_assignment_or_the_default() {
    let Some(k) = kit::imported(0) else { return };
    if !qemu::available() || !Path::new(qemu::IPXE_VIRTIO_ROM).exists() {
        panic!("qemu-system-x86_64 and ipxe-qemu are required (test.sh installs them)");
    }
    let port = free_port();
    let data = k.data.display().to_string();
    let s = crate::common::TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.http_listen_addr = format!("127.0.0.1:{port}");
        c.http.external_url = format!("http://127.0.0.1:{port}/");
        // Inside QEMU's user-mode network the host's loopback is 10.0.2.2.
        c.http.external_pxe_url = format!("http://10.0.2.2:{port}/");
        c.cache.gc_interval_seconds = 0;
    })
    .await;
    let id = create_schematic(&s, kit::SCHEMATIC).await;
    machines_ok(
        &k.data,
        &[
            "set",
            "qemu-node",
            "--mac",
            "52-54-00-12-34-56",
            "--arch",
            "amd64",
            "--schematic",
            &id,
            "--version",
            V,
            "--extra-kernel-arg",
            "if.machine=assigned",
        ],
    )
    .await;
    machines_ok(
        &k.data,
        &[
            "set",
            "rest",
            "--default",
            "--schematic",
            &id,
            "--version",
            V,
            "--extra-kernel-arg",
            "if.machine=default",
        ],
    )
    .await;
    let bootfile = format!("http://10.0.2.2:{port}/pxe/boot.ipxe");

    let m = boot(&bootfile, QEMU_MAC).await;
    assert!(m.cmdline.contains("if.machine=assigned"), "{}", m.cmdline);
    assert!(!m.cmdline.contains("if.machine=default"), "{}", m.cmdline);
    assert!(m.cmdline.contains("if.test=hello"), "{}", m.cmdline);
    assert_eq!(m.schematic, id);
    kit::check_kit_extensions(&m, "boot.ipxe");

    let other = boot(&bootfile, "52:54:00:12:34:99").await;
    assert!(
        other.cmdline.contains("if.machine=default"),
        "{}",
        other.cmdline
    );
    assert!(
        !other.cmdline.contains("if.machine=assigned"),
        "{}",
        other.cmdline
    );

    // Each machine's boot is on record, with what iPXE reported.
    let boots: serde_json::Value =
        serde_json::from_str(&machines_ok(&k.data, &["boots", "--json"]).await).expect("json");
    let boots = boots["boots"].as_array().expect("boots");
    let of = |mac: &str| {
        boots
            .iter()
            .find(|b| b["mac"] == mac)
            .unwrap_or_else(|| panic!("no record of {mac}: {boots:?}"))
    };
    let assigned = of(QEMU_MAC);
    assert_eq!(assigned["assignment"], "qemu-node", "{assigned}");
    assert_eq!(assigned["outcome"], "booted");
    assert_eq!(assigned["arch"], "amd64");
    let rest = of("52:54:00:12:34:99");
    assert_eq!(rest["assignment"], "rest", "{rest}");
    assert_eq!(
        boots.len(),
        2,
        "one record per boot (the bare request is not one): {boots:?}"
    );
    s.stop().await;
}
