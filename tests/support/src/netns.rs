//! Network namespaces for netboot tests: a private Ethernet segment (a bridge in an "appliance"
//! namespace, a veth to a "site" namespace running `dnsmasq` as the site's DHCP server, and
//! one tap per QEMU machine). Nothing touches the host's own network namespace; everything is
//! removed when the [`Segment`] is dropped. Needs root (`ip netns`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The segment's IPv4 prefix (a /24 private to the namespaces).
pub const SUBNET: &str = "10.77.0";
/// Address of the appliance on the segment (the bridge).
pub const APPLIANCE_IP: &str = "10.77.0.1";
/// Address of the site DHCP server.
pub const SITE_IP: &str = "10.77.0.2";
/// Bridge name inside the appliance namespace.
pub const BRIDGE: &str = "br0";

/// Whether this process may create network namespaces (root and `ip`/`dnsmasq` present).
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    root && which("ip") && which("dnsmasq")
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip` with `args`; the error names the command and its stderr.
pub fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named `<prefix>-<pid>-<n>` with its loopback up.
    pub fn create(prefix: &str) -> std::io::Result<NetNs> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args…`.
    pub fn ip(&self, args: &[&str]) -> std::io::Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// The wrapper prefix (`ip netns exec <ns>`) for helpers that take one.
    pub fn wrapper(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A private Ethernet segment: the appliance namespace with bridge [`BRIDGE`] at
/// [`APPLIANCE_IP`]/24, and a site namespace whose `dnsmasq` hands out addresses only (no boot
/// options), like a site DHCP server that knows nothing about netboot.
pub struct Segment {
    /// Where the appliance (and QEMU) run.
    pub appliance: NetNs,
    site: NetNs,
    dnsmasq: Child,
    dir: tempfile::TempDir,
    taps: u32,
}

impl Segment {
    /// Builds the segment and starts the site DHCP server (waits until it listens).
    pub fn create() -> std::io::Result<Segment> {
        let appliance = NetNs::create("ifnb-app")?;
        let site = NetNs::create("ifnb-site")?;
        appliance.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        // No spanning tree: a port forwards as soon as it is up (firmware DHCP does not wait).
        appliance.ip(&[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        appliance.ip(&["addr", "add", &format!("{APPLIANCE_IP}/24"), "dev", BRIDGE])?;
        appliance.ip(&["link", "set", BRIDGE, "up"])?;
        appliance.ip(&[
            "link", "add", "vapp", "type", "veth", "peer", "name", "vsite",
        ])?;
        appliance.ip(&["link", "set", "vsite", "netns", site.name()])?;
        appliance.ip(&["link", "set", "vapp", "master", BRIDGE, "up"])?;
        site.ip(&["addr", "add", &format!("{SITE_IP}/24"), "dev", "vsite"])?;
        site.ip(&["link", "set", "vsite", "up"])?;

        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("dnsmasq.log"))?;
        let dnsmasq = site
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--log-dhcp",
                "--log-facility=-",
                "--port=0",
                "--no-resolv",
                "--no-hosts",
                "--interface=vsite",
                "--bind-interfaces",
                "--dhcp-authoritative",
                &format!("--dhcp-range={SUBNET}.100,{SUBNET}.199,255.255.255.0,10m"),
                &format!("--dhcp-leasefile={}", dir.path().join("leases").display()),
                &format!("--pid-file={}", dir.path().join("pid").display()),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut seg = Segment {
            appliance,
            site,
            dnsmasq,
            dir,
            taps: 0,
        };
        seg.wait_for_dnsmasq()?;
        Ok(seg)
    }

    fn wait_for_dnsmasq(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.dnsmasq.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "dnsmasq exited ({status}):\n{}",
                    self.dhcp_log()
                )));
            }
            if self.dhcp_log().contains("DHCP, IP range") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "dnsmasq did not start:\n{}",
                    self.dhcp_log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The site DHCP server's log so far.
    pub fn dhcp_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// A scratch directory that lives as long as the segment.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Adds a tap port to the bridge for one QEMU machine; returns its name.
    pub fn add_tap(&mut self) -> std::io::Result<String> {
        let tap = format!("tap{}", self.taps);
        self.taps += 1;
        self.appliance
            .ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.appliance
            .ip(&["link", "set", &tap, "master", BRIDGE, "up"])?;
        Ok(tap)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        // the namespaces (and every link in them) go with the NetNs drops
        let _ = &self.site;
    }
}
