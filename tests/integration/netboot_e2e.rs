//! Netboot end to end (issue 17): in network namespaces of our own, `dnsmasq` plays the site's
//! DHCP server (addresses only, nothing about netboot), and the appliance runs its ProxyDHCP,
//! TFTP and HTTP on the same segment. Four QEMU machines boot by firmware:
//!
//! - SeaBIOS with QEMU's iPXE ROM → ProxyDHCP names `/pxe/boot.ipxe` → assignment by MAC;
//! - OVMF's own UEFI PXE → `ipxe.efi` over our TFTP → iPXE → `/pxe/boot.ipxe` → assignment;
//! - OVMF UEFI HTTP Boot → `ipxe.efi` over our HTTP → iPXE → `/pxe/boot.ipxe` → assignment;
//! - a machine with no assignment → the default assignment's schematic.
//!
//! Each loads kernel and initramfs over our HTTP, and the test kit's marker shows the
//! schematic, its extensions and the assignment's kernel argument. The boot records then name
//! each machine and what it was served.

use std::path::Path;
use std::time::Duration;

use crate::common::{BinServer, kit, spawn_serve};
use crate::netboot_machines::machines_ok;
use image_factory::synth::Marker;
use testsupport::netns::{self, Segment};
use testsupport::qemu::{self, Boot, NetFirmware};

/// Port of the appliance's HTTP listener inside its namespace (the namespace is ours alone).
const HTTP_PORT: u16 = 8080;

/// A schematic the default assignment boots: no extensions, its own kernel argument.
const DEFAULT_SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - if.test=default\n";

/// One machine of the rack.
struct Machine {
    name: &'static str,
    mac: &'static str,
    firmware: NetFirmware,
    /// Kernel argument its assignment adds (`None`: no assignment, the default applies).
    arg: Option<&'static str>,
}

const MACHINES: [Machine; 4] = [
    Machine {
        name: "bios-ipxe",
        mac: "52:54:00:4e:42:01",
        firmware: NetFirmware::SeabiosIpxe,
        arg: Some("if.machine=bios-ipxe"),
    },
    Machine {
        name: "uefi-pxe",
        mac: "52:54:00:4e:42:02",
        firmware: NetFirmware::OvmfPxe,
        arg: Some("if.machine=uefi-pxe"),
    },
    Machine {
        name: "uefi-http",
        mac: "52:54:00:4e:42:03",
        firmware: NetFirmware::OvmfHttp,
        arg: Some("if.machine=uefi-http"),
    },
    Machine {
        name: "unassigned",
        mac: "52:54:00:4e:42:04",
        firmware: NetFirmware::SeabiosIpxe,
        arg: None,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rack_netboots_through_proxy_dhcp_by_assignment() {
    let Some(k) = kit::imported(0) else { return };
    let ready = netns::available() && qemu::available() && Path::new(qemu::OVMF_CODE).exists();
    if !testsupport::tools::require(
        ready,
        "root, ip, dnsmasq, qemu-system-x86_64 and ovmf (test.sh installs them; run as root)",
    ) {
        return;
    }

    // 1. On loopback: the schematics, the assignments, and a warm cache (so the machines'
    //    HTTP requests do not wait on builds).
    let data = k.data.display().to_string();
    let s = crate::common::TestServer::start_with(move |c| {
        c.storage.data_dir = data;
        c.cache.gc_interval_seconds = 0;
    })
    .await;
    let assigned = crate::common::assets::create_schematic(&s, kit::SCHEMATIC).await;
    let default = crate::common::assets::create_schematic(&s, DEFAULT_SCHEMATIC).await;
    for id in [&assigned, &default] {
        for file in ["kernel-amd64", "initramfs-amd64.xz"] {
            let got =
                crate::common::assets::get(&s, &format!("/image/{id}/v1.11.0/{file}"), &[]).await;
            assert_eq!(got.status, 200, "{file} of {id}: {}", got.text());
        }
    }
    for m in &MACHINES {
        let Some(arg) = m.arg else { continue };
        machines_ok(
            &k.data,
            &[
                "set",
                m.name,
                "--mac",
                m.mac,
                "--schematic",
                &assigned,
                "--version",
                "v1.11.0",
                "--extra-kernel-arg",
                arg,
            ],
        )
        .await;
    }
    machines_ok(
        &k.data,
        &[
            "set",
            "rack-default",
            "--default",
            "--schematic",
            &default,
            "--version",
            "v1.11.0",
        ],
    )
    .await;
    s.stop().await;

    // 2. The segment, and the appliance inside it: HTTP, TFTP (Debian's iPXE binaries) and
    //    ProxyDHCP on the bridge.
    let mut seg = Segment::create().expect("network namespaces");
    let base = format!("http://{}:{HTTP_PORT}/", netns::APPLIANCE_IP);
    let wrapper = seg.appliance.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let http = format!("{}:{HTTP_PORT}", netns::APPLIANCE_IP);
    let tftp = format!("{}:69", netns::APPLIANCE_IP);
    let appliance = Appliance(
        spawn_serve(
            &k.data,
            &wrapper,
            &http,
            Some(&tftp),
            &[
                ("IF_HTTP_EXTERNALURL", &base),
                ("IF_NETBOOT_PROXYDHCP_ENABLED", "true"),
                ("IF_NETBOOT_PROXYDHCP_INTERFACE", netns::BRIDGE),
            ],
            false,
            &[],
        )
        .expect("serve in the appliance namespace"),
    );

    // 3. The machines, two at a time (each QEMU is one TCG thread; the host has two cores).
    let mut boots = Vec::new();
    for m in &MACHINES {
        let tap = seg.add_tap().expect("tap");
        let vars = seg.dir().join(format!("{}.vars.fd", m.name));
        std::fs::copy(qemu::OVMF_VARS, &vars).expect("OVMF vars");
        let mut boot = Boot::netboot(&tap, m.mac, m.firmware, &vars);
        boot.wrapper = seg.appliance.wrapper();
        boot.timeout = Duration::from_secs(400);
        boots.push((m, boot));
    }
    let mut results = Vec::new();
    for pair in boots.chunks(2) {
        let running: Vec<_> = pair
            .iter()
            .map(|(m, boot)| {
                let boot = boot.clone();
                (*m, std::thread::spawn(move || boot.run()))
            })
            .collect();
        for (m, handle) in running {
            let out = handle.join().expect("qemu thread").expect("qemu");
            results.push((m, out));
        }
    }

    let log = appliance.0.log_text();
    for (m, out) in &results {
        let ctx = format!(
            "{} ({:?})\n--- console:\n{}\n--- site DHCP:\n{}\n--- appliance:\n{}",
            m.name,
            m.firmware,
            out.console,
            seg.dhcp_log(),
            log
        );
        let marker = match Marker::find(&out.console) {
            Some(Ok(marker)) => marker,
            Some(Err(e)) => panic!("{e}: {ctx}"),
            None => panic!("no marker: {ctx}"),
        };
        match m.arg {
            Some(arg) => {
                assert_eq!(marker.schematic, assigned, "{ctx}");
                assert!(marker.cmdline.contains(arg), "{}: {ctx}", marker.cmdline);
                assert!(marker.cmdline.contains("if.test=hello"), "{ctx}");
                kit::check_kit_extensions(&marker, m.name);
            }
            None => {
                assert_eq!(marker.schematic, default, "{ctx}");
                assert!(marker.cmdline.contains("if.test=default"), "{ctx}");
                assert!(!marker.cmdline.contains("if.machine="), "{ctx}");
                // Only the layer every customized schematic gets (its ID), no kit extension.
                let names: Vec<&str> = marker.extensions.iter().map(|e| e.name.as_str()).collect();
                assert_eq!(names, ["schematic"], "{ctx}");
            }
        }
        // The machine's address came from the site's DHCP server, not from us.
        let leased = seg.dhcp_log();
        assert!(
            leased.contains(&format!("DHCPACK(vsite) {}", netns::SUBNET)) && leased.contains(m.mac),
            "{ctx}"
        );
    }

    // 4. The boot records name every machine and what it got (the admin socket is a file in
    //    the data directory: reachable from outside the namespace).
    let boots = machines_ok(&k.data, &["boots", "--json"]).await;
    for m in &MACHINES {
        let assignment = if m.arg.is_some() {
            m.name
        } else {
            "rack-default"
        };
        assert!(
            boots.contains(m.mac) && boots.contains(assignment),
            "{} / {assignment} not in the boot records:\n{boots}",
            m.mac
        );
    }
}

/// The appliance's process, killed when the test ends (also when it fails).
struct Appliance(BinServer);

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}
