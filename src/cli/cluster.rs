//! `image-factory cluster`: invite a new member (founding the cluster on first use), join with
//! an invitation, remove a member — on a stopped node's data directory, or (invite, remove)
//! through a running node's admin API (`--server`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::error::{CliError, finish, open_error};
use super::remote::{AdminClient, send, text};
use super::{load_config, runtime};
use crate::config::Config;
use crate::node::NodeError;
use crate::replication::invitation::{self, DEFAULT_DAYS};
use crate::replication::{Cluster, Envelope, Removed, ReplicationError, parse_peer_id};
use crate::trust::SigningKey;

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Write an invitation for a new member (the first one founds the cluster).
    Invite(InviteArgs),
    /// Install an invitation in this node's data directory, before it serves with replication.
    Join(JoinArgs),
    /// Remove a member: its credential is revoked on every member.
    Remove(RemoveArgs),
}

/// Where a command works: a stopped node's data directory, or a running node.
#[derive(Debug, Args)]
pub struct Target {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (direct mode; no server may be running on it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Go through this running appliance's admin API instead (`unix:PATH` or a URL).
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// Admin token file for `--server` (default: `admin.tokenFile`, else the data
    /// directory's that holds the `--server` socket, else `<dataDir>/keys/admin-token`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// Flags of `cluster invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Where to work.
    #[command(flatten)]
    pub target: Target,
    /// Days the invitation and the new member's credential stay valid.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DAYS)]
    pub days: u64,
    /// A member address the new node dials first (multiaddr ending in /p2p/<peer id>);
    /// repeatable. A running node adds its own bound addresses.
    #[arg(long, value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// The invitation file to write (mode 0600; it must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Flags of `cluster join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the joining node (it must not be running).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Refuse an invitation for any other cluster (its ID, or the first 16+ characters, as
    /// any member's /status shows).
    #[arg(long, value_name = "ID")]
    pub expect_cluster: Option<String>,
    /// The invitation file.
    #[arg(value_name = "FILE")]
    pub invitation: PathBuf,
}

/// Flags of `cluster remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Where to work.
    #[command(flatten)]
    pub target: Target,
    /// The member's peer ID (as /status shows it, or as `cluster invite` printed it).
    #[arg(value_name = "PEER_ID")]
    pub peer_id: String,
}

/// Runs a `cluster` subcommand.
pub fn run(cmd: ClusterCommand) -> ExitCode {
    match cmd {
        ClusterCommand::Invite(a) => finish("cluster invite", invite(&a)),
        ClusterCommand::Join(a) => finish("cluster join", join(&a)),
        ClusterCommand::Remove(a) => finish("cluster remove", remove(&a)),
    }
}

impl From<ReplicationError> for CliError {
    fn from(e: ReplicationError) -> Self {
        CliError::Node(Box::new(NodeError::from(e)))
    }
}

/// The lock of a stopped node's data directory, and its cluster state.
fn open_offline(cfg: &Config) -> Result<(std::fs::File, Cluster), CliError> {
    let lock = crate::store::lock_data_dir(cfg.data_dir())
        .map_err(|e| open_error(cfg)(NodeError::Store(e)))?;
    let path = cfg.signing_key_path();
    let (key, created) = SigningKey::load_or_generate(&path)?;
    if created {
        eprintln!("generated the signing key {}", path.display());
    }
    let cluster = Cluster::open(cfg.data_dir(), Arc::new(key))?;
    Ok((lock, cluster))
}

/// Writes the invitation to `out` (0600), refusing to replace a file.
fn write_invitation(out: &Path, bytes: &[u8]) -> Result<(), CliError> {
    if out.exists() {
        return Err(CliError::Usage(format!(
            "--out {}: the file exists; choose another name",
            out.display()
        )));
    }
    crate::trust::write_private(out, bytes).map_err(CliError::io("cannot write", out))
}

/// What a stopped node's configuration says members can dial: its listen addresses with a
/// concrete IP and port.
fn configured_bootstrap(cfg: &Config, cluster: &Cluster) -> Result<Vec<String>, CliError> {
    let (key, _) = cluster.identity()?;
    let me = key.public().to_peer_id();
    Ok(cfg
        .replication
        .listen_addrs
        .iter()
        .filter(|a| {
            a.parse::<libp2p::Multiaddr>()
                .is_ok_and(|m| crate::replication::dialable(&m))
        })
        .map(|a| format!("{a}/p2p/{me}"))
        .collect())
}

fn invite(args: &InviteArgs) -> Result<(), CliError> {
    let t = &args.target;
    let cfg = load_config(t.config.as_deref(), t.data_dir.as_deref())?;
    let (peer, cluster, expires, founded, bootstrap, bytes) = match &t.server {
        Some(server) => {
            let admin = AdminClient::new(server, t.admin_token_file.as_deref(), &cfg)?;
            let mut query = format!("admin/cluster/invite?days={}", args.days);
            if !args.bootstrap.is_empty() {
                query.push_str("&bootstrap=");
                query.push_str(
                    &url::form_urlencoded::byte_serialize(args.bootstrap.join(",").as_bytes())
                        .collect::<String>(),
                );
            }
            let url = admin.url(&query)?;
            let body = runtime()?.block_on(async {
                let resp = send("POST", &url, admin.post(url.clone())).await?;
                text("POST", &url, resp).await
            })?;
            let answer: RemoteInvite =
                serde_json::from_str(&body).map_err(|_| CliError::Unexpected {
                    url: url.to_string(),
                    body: "(an invitation answer that does not parse; not shown, it holds keys)"
                        .into(),
                })?;
            let mut bytes = serde_json::to_vec_pretty(&answer.invitation)
                .map_err(|e| CliError::Remote(format!("the invitation does not encode: {e}")))?;
            bytes.push(b'\n');
            (
                answer.peer_id,
                answer.cluster,
                answer.expires,
                answer.founded,
                answer.bootstrap,
                bytes,
            )
        }
        None => {
            let (_lock, cluster) = open_offline(&cfg)?;
            let mut bootstrap = args.bootstrap.clone();
            bootstrap.extend(configured_bootstrap(&cfg, &cluster)?);
            let pems = crate::node::secure_boot_paths(&cfg)
                .as_ref()
                .map(invitation::SecureBootPems::read)
                .transpose()?;
            let issued = cluster.invite(
                &cfg.http.external_url,
                args.days,
                bootstrap,
                pems,
                crate::clock::now_secs(),
            )?;
            (
                issued.peer_id.to_string(),
                issued.cluster,
                crate::clock::rfc3339_utc(issued.expires),
                issued.founded,
                issued.bootstrap,
                issued.bytes,
            )
        }
    };
    write_invitation(&args.out, &bytes)?;
    if founded {
        eprintln!(
            "founded cluster {cluster} (factory URL {})",
            cfg.http.external_url
        );
    }
    eprintln!(
        "invitation for the new member {peer} written to {} (valid until {expires}; cluster {cluster})",
        args.out.display()
    );
    if bootstrap.is_empty() {
        eprintln!(
            "the invitation names no member address: give the new node replication.bootstrapPeers \
             (an address of this node from its /status, ending in /p2p/<peer id>), or pass --bootstrap"
        );
    }
    eprintln!(
        "it holds the cluster key: move it like a private key, delete it after `image-factory cluster join`; \
         `image-factory cluster remove {peer}` revokes it"
    );
    println!("{peer}");
    Ok(())
}

/// The admin API's answer to an invitation request.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemoteInvite {
    peer_id: String,
    cluster: String,
    founded: bool,
    expires: String,
    bootstrap: Vec<String>,
    invitation: Envelope,
}

fn join(args: &JoinArgs) -> Result<(), CliError> {
    let cfg = load_config(args.config.as_deref(), args.data_dir.as_deref())?;
    let bytes = crate::replication::read_capped(&args.invitation, invitation::MAX_INVITATION_BYTES)
        .map_err(CliError::input(&args.invitation))?;
    let _lock = crate::store::lock_data_dir(cfg.data_dir())
        .map_err(|e| open_error(&cfg)(NodeError::Store(e)))?;
    let joined = invitation::join(
        cfg.data_dir(),
        &cfg.signing_key_path(),
        &cfg.secure_boot_dir(),
        &bytes,
        args.expect_cluster.as_deref(),
        crate::clock::now_secs(),
    )?;
    if let Some(dir) = &joined.secure_boot_dir {
        eprintln!(
            "the cluster's Secure Boot keys are installed in {} (secureBoot.file.* default there: set secureBoot.enabled to sign with them)",
            dir.display()
        );
    }
    for old in &joined.replaced_secure_boot {
        eprintln!(
            "this node's own Secure Boot key file was moved to {}",
            old.display()
        );
    }
    if let Some(old) = &joined.replaced_key {
        eprintln!(
            "this node's own signing key was moved to {}; it now signs with the cluster key",
            old.display()
        );
    }
    eprintln!(
        "joined cluster {} as {} (factory URL {}; credential valid until {}; {} member address(es) to dial)",
        joined.cluster,
        joined.peer_id,
        joined.factory_url,
        crate::clock::rfc3339_utc(joined.expires),
        joined.bootstrap
    );
    if !cfg.replication.enabled {
        eprintln!(
            "set replication.enabled (IF_REPLICATION_ENABLED=true) to take part when it serves"
        );
    }
    eprintln!(
        "delete {}: it holds the cluster key",
        args.invitation.display()
    );
    println!("{}", joined.peer_id);
    Ok(())
}

fn remove(args: &RemoveArgs) -> Result<(), CliError> {
    let t = &args.target;
    let cfg = load_config(t.config.as_deref(), t.data_dir.as_deref())?;
    let peer = parse_peer_id(&args.peer_id)?;
    if let Some(server) = &t.server {
        let admin = AdminClient::new(server, t.admin_token_file.as_deref(), &cfg)?;
        let url = admin.url(&format!("admin/cluster/remove?peerId={peer}"))?;
        let body = runtime()?.block_on(async {
            let resp = send("POST", &url, admin.post(url.clone())).await?;
            text("POST", &url, resp).await
        })?;
        eprintln!("{}", body.trim_end());
        return Ok(());
    }
    let (_lock, cluster) = open_offline(&cfg)?;
    match cluster.remove(&peer, crate::clock::now_secs())? {
        Removed::Now(_) => {
            eprintln!("removed {peer}; members learn of it when this node next connects to one")
        }
        Removed::Already(at) => eprintln!(
            "{peer} was removed already at {}",
            crate::clock::rfc3339_utc(at)
        ),
    }
    Ok(())
}
