//! `image-factory machines set|list|rm|boots|reload`: machine assignments for netboot, through
//! the running appliance's admin API (the appliance holds the data directory; by default its
//! admin socket `<dataDir>/admin.sock`).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::error::{CliError, finish};
use super::remote::{Conn, client, get_json, send, text};
use super::runtime;
use crate::frontend::http::admin::{BootsList, MachinesList};
use crate::netboot::{AssignmentSpec, AssignmentView, BootRecord, HttpBoot, Outcome, SelectorSpec};

/// Subcommands of `machines`.
#[derive(Debug, Subcommand)]
pub enum MachinesCommand {
    /// Assign what a machine (or every machine: --default) boots; replaces an assignment of
    /// the same name.
    #[command(disable_version_flag = true)]
    Set(Box<SetArgs>),
    /// List the assignments (admin API and machines file) with each one's last boot.
    List(ListArgs),
    /// Remove an assignment made with `set` (the machines file's are edited in the file).
    Rm(RmArgs),
    /// Show the boot records, newest first.
    Boots(BootsArgs),
    /// Read `netboot.machinesFile` again (as SIGHUP does).
    Reload(Conn),
}

/// Flags of `machines set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Name of the assignment (letters, digits, '.', '_', '-').
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Match the MAC address of the booting interface (any of aa:bb:.., aa-bb-.., upper case).
    #[arg(long)]
    pub mac: Option<String>,
    /// Match the SMBIOS UUID.
    #[arg(long)]
    pub uuid: Option<String>,
    /// Match the SMBIOS serial number (ASCII case ignored).
    #[arg(long)]
    pub serial: Option<String>,
    /// Match the host name DHCP gave the machine.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Match the architecture (amd64, arm64).
    #[arg(long)]
    pub arch: Option<String>,
    /// The default assignment: matches every machine nothing more specific matches (give no
    /// selector with it).
    #[arg(long, conflicts_with_all = ["mac", "uuid", "serial", "hostname", "arch"])]
    pub default: bool,
    /// Schematic ID to boot (create it first with `schematic create`).
    #[arg(long, value_name = "ID")]
    pub schematic: String,
    /// Talos version to boot, e.g. v1.11.0.
    #[arg(long, value_name = "vX.Y.Z")]
    pub version: String,
    /// Platform (default metal).
    #[arg(long)]
    pub platform: Option<String>,
    /// UEFI HTTP Boot firmware loads the assignment's UKI directly (matched by MAC and
    /// architecture; the UKI's own command line applies) instead of iPXE.
    #[arg(long = "http-boot-uki")]
    pub http_boot_uki: bool,
    /// Kernel argument appended to the schematic's command line (repeatable).
    #[arg(long = "extra-kernel-arg", value_name = "ARG")]
    pub extra_kernel_args: Vec<String>,
    /// How to reach the appliance.
    #[command(flatten)]
    pub conn: Conn,
}

/// Flags of `machines list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the admin API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How to reach the appliance.
    #[command(flatten)]
    pub conn: Conn,
}

/// Flags of `machines rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Name of the assignment.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// How to reach the appliance.
    #[command(flatten)]
    pub conn: Conn,
}

/// Flags of `machines boots`.
#[derive(Debug, Args)]
pub struct BootsArgs {
    /// Only this machine's records, as records name it (`mac:aa:bb:cc:dd:ee:ff`, `uuid:..`).
    #[arg(long)]
    pub machine: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print the admin API's JSON answer instead of lines.
    #[arg(long)]
    pub json: bool,
    /// How to reach the appliance.
    #[command(flatten)]
    pub conn: Conn,
}

/// Runs `machines`.
pub fn run(cmd: MachinesCommand) -> ExitCode {
    finish("machines", run_inner(cmd))
}

fn run_inner(cmd: MachinesCommand) -> Result<(), CliError> {
    let rt = runtime()?;
    match cmd {
        MachinesCommand::Set(args) => {
            let admin = client(&args.conn)?;
            let selector = SelectorSpec {
                mac: args.mac,
                uuid: args.uuid,
                serial: args.serial,
                hostname: args.hostname,
                arch: args.arch,
            };
            if selector == SelectorSpec::default() && !args.default {
                return Err(CliError::Usage(
                    "give a selector (--mac, --uuid, --serial, --hostname, --arch), or --default \
                     for the assignment of every machine nothing else matches"
                        .into(),
                ));
            }
            let spec = AssignmentSpec {
                name: None,
                selector,
                schematic: args.schematic,
                version: args.version,
                platform: args.platform,
                extra_kernel_args: args.extra_kernel_args,
                http_boot: if args.http_boot_uki {
                    HttpBoot::Uki
                } else {
                    HttpBoot::Ipxe
                },
            };
            let url = admin.url(&format!("admin/machines/{}", segment(&args.name)))?;
            rt.block_on(async {
                let resp = send("PUT", &url, admin.put(url.clone()).json(&spec)).await?;
                let created = resp.status() == reqwest::StatusCode::CREATED;
                let body = text("PUT", &url, resp).await?;
                let view: AssignmentView =
                    serde_json::from_str(&body).map_err(|_| CliError::Unexpected {
                        url: url.to_string(),
                        body,
                    })?;
                let verb = if created { "created" } else { "replaced" };
                println!("{verb} {}", describe(&view));
                Ok(())
            })
        }
        MachinesCommand::List(args) => {
            let admin = client(&args.conn)?;
            let (list, body): (MachinesList, String) =
                rt.block_on(get_json(&admin, "admin/machines"))?;
            if args.json {
                print!("{body}");
            } else {
                print_list(&list);
            }
            Ok(())
        }
        MachinesCommand::Rm(args) => {
            let admin = client(&args.conn)?;
            let url = admin.url(&format!("admin/machines/{}", segment(&args.name)))?;
            rt.block_on(async {
                send("DELETE", &url, admin.delete(url.clone())).await?;
                println!("removed {}", args.name);
                Ok(())
            })
        }
        MachinesCommand::Boots(args) => {
            let admin = client(&args.conn)?;
            let mut path = format!("admin/netboot/boots?limit={}", args.limit);
            if let Some(m) = &args.machine {
                path.push_str("&machine=");
                path.push_str(
                    &url::form_urlencoded::byte_serialize(m.as_bytes()).collect::<String>(),
                );
            }
            let (list, body): (BootsList, String) = rt.block_on(get_json(&admin, &path))?;
            if args.json {
                print!("{body}");
            } else {
                for b in &list.boots {
                    println!("{}", boot_line(b));
                }
            }
            Ok(())
        }
        MachinesCommand::Reload(conn) => {
            let admin = client(&conn)?;
            let url = admin.url("admin/netboot/reload")?;
            rt.block_on(async {
                let resp = send("POST", &url, admin.post(url.clone())).await?;
                let body = text("POST", &url, resp).await?;
                println!("machines file reloaded: {}", body.trim());
                Ok(())
            })
        }
    }
}

/// `name` as one URL path segment (percent-encoded; the appliance checks it).
fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `name: selector → schematic version platform +args`.
fn describe(v: &AssignmentView) -> String {
    let mut s = format!(
        "{}: {} -> {} {} {}",
        v.name,
        selector_text(&v.selector),
        v.schematic,
        v.version,
        v.platform
    );
    if !v.extra_kernel_args.is_empty() {
        s.push_str(&format!(" +[{}]", v.extra_kernel_args.join(" ")));
    }
    s
}

fn selector_text(s: &SelectorSpec) -> String {
    let parts: Vec<String> = [
        ("mac", &s.mac),
        ("uuid", &s.uuid),
        ("serial", &s.serial),
        ("hostname", &s.hostname),
        ("arch", &s.arch),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
    .collect();
    if parts.is_empty() {
        "(default)".into()
    } else {
        parts.join(",")
    }
}

/// One boot record as a line.
fn boot_line(b: &BootRecord) -> String {
    let what = match b.outcome {
        Outcome::Booted => format!(
            "booted {} {} {}",
            b.schematic.as_deref().unwrap_or("?"),
            b.version.as_deref().unwrap_or("?"),
            b.path.as_deref().unwrap_or("?")
        ),
        Outcome::Retry => format!("retry: {}", b.reason.as_deref().unwrap_or("")),
    };
    let assignment = b
        .assignment
        .as_deref()
        .map(|a| format!(" [{a}]"))
        .unwrap_or_default();
    format!("{} {}{assignment} {what}", b.time, b.machine)
}

/// The assignments as a table, then the machines file's state.
fn print_list(list: &MachinesList) {
    let mut rows = vec![[
        "NAME".to_string(),
        "SOURCE".into(),
        "SELECTOR".into(),
        "SCHEMATIC".into(),
        "VERSION".into(),
        "PLATFORM".into(),
        "EXTRA ARGS".into(),
        "LAST BOOT".into(),
    ]];
    for v in &list.assignments {
        let last = v.last_boot.as_ref().map_or_else(
            || "never".to_string(),
            |b| {
                let what = match b.outcome {
                    Outcome::Booted => format!("booted {}", b.path.as_deref().unwrap_or("?")),
                    Outcome::Retry => "retry".to_string(),
                };
                format!("{} {} {what}", b.time, b.machine)
            },
        );
        rows.push([
            v.name.clone(),
            v.source.to_string(),
            selector_text(&v.selector),
            v.schematic.clone(),
            v.version.clone(),
            v.platform.clone(),
            v.extra_kernel_args.join(" "),
            last,
        ]);
    }
    let mut widths = [0usize; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    let f = &list.machines_file;
    if !f.path.is_empty() {
        println!(
            "machines file {}: {} assignment(s){}",
            f.path,
            f.assignments,
            f.loaded_at
                .as_deref()
                .map(|t| format!(", loaded {t}"))
                .unwrap_or_default()
        );
        if let Some(e) = &f.error {
            println!("last reload refused (previous assignments kept): {e}");
        }
    }
}
