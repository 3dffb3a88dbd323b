//! PXE end to end: QEMU's iPXE (Debian `ipxe-qemu`) gets our `/pxe/...` URL from DHCP, runs
//! the script, fetches kernel and initramfs from `/image/...` over HTTP (built on the miss),
//! and the test kit's marker shows the schematic's kernel args and extensions.

use std::net::TcpListener;
use std::path::Path;

use crate::common::kit;
use image_factory::synth::Marker;
use testsupport::qemu;

/// A loopback port that was free a moment ago (the guest must know it before we bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipxe_boots_kernel_and_initramfs_from_the_factory() {
    let Some(k) = kit::imported(0) else { return };
    if !qemu::available() || !Path::new(qemu::IPXE_VIRTIO_ROM).exists() {
        panic!("qemu-system-x86_64 and ipxe-qemu are required (test.sh installs them)");
    }
    let port = free_port();
    let data = k.data.display().to_string();
    let s = crate::common::TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.http.http_listen_addr = format!("127.0.0.1:{port}");
        // Inside QEMU's user-mode network the host's loopback is 10.0.2.2.
        c.http.external_url = format!("http://127.0.0.1:{port}/");
        c.http.external_pxe_url = format!("http://10.0.2.2:{port}/");
        c.cache.gc_interval_seconds = 0;
    })
    .await;
    let id = crate::common::assets::create_schematic(&s, kit::SCHEMATIC).await;

    let script =
        crate::common::assets::get(&s, &format!("/pxe/{id}/v1.11.0/metal-x86_64"), &[]).await;
    assert_eq!(script.status, 200, "{}", script.text());
    let lines: Vec<String> = script.text().lines().map(str::to_string).collect();
    assert_eq!(lines[0..3], ["#!ipxe", "", "imgfree"]);
    let base = format!("http://10.0.2.2:{port}/image/{id}/v1.11.0");
    assert!(
        lines[3].starts_with(&format!("kernel {base}/kernel-amd64 talos.platform=metal ")),
        "{}",
        lines[3]
    );
    assert!(lines[3].ends_with(" if.test=hello"), "{}", lines[3]);
    assert_eq!(lines[4], format!("initrd {base}/initramfs-amd64.xz"));
    assert_eq!(lines[5], "boot");
    assert_eq!(lines.len(), 6);
    // Without SecureBoot keys the SecureBoot variant answers as upstream does.
    let sb = crate::common::assets::get(
        &s,
        &format!("/pxe/{id}/v1.11.0/metal-amd64-secureboot"),
        &[],
    )
    .await;
    assert_eq!(
        (sb.status, sb.text()),
        (
            400,
            "error enhancing profile from schematic: secure boot is disabled\n".into()
        )
    );

    let boot = qemu::Boot::pxe(&format!(
        "http://10.0.2.2:{port}/pxe/{id}/v1.11.0/metal-x86_64"
    ));
    let run = tokio::task::spawn_blocking(move || boot.run())
        .await
        .unwrap()
        .expect("qemu");
    let m = match Marker::find(&run.console) {
        Some(Ok(m)) => m,
        Some(Err(e)) => panic!("{e}\nconsole:\n{}", run.console),
        None => panic!("no marker; console:\n{}", run.console),
    };
    assert!(m.cmdline.contains("if.test=hello"), "{}", m.cmdline);
    assert!(m.cmdline.contains("talos.platform=metal"), "{}", m.cmdline);
    kit::check_kit_extensions(&m, "pxe");
    assert_eq!(m.schematic, id);
    assert_eq!(
        m.meta.get("0xa").map(String::as_str),
        Some("{\"addr\":\"1.2.3.4\"}")
    );
    s.stop().await;
}
