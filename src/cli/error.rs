//! The command line's error type and how a failed command ends: its message with every cause
//! on stderr, and an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::assets::AssetError;
use crate::catalog::CatalogError;
use crate::causes::Causes;
use crate::config::ConfigError;
use crate::node::{ImportJobError, NodeError};
use crate::oci::OciError;
use crate::schematic::SchematicError;
use crate::store::StoreError;
use crate::synth::KitError;
use crate::trust::TrustError;

/// Exit code of invalid input (a bad schematic or flag, an unreadable input file, a request the
/// server rejected as invalid).
pub const EXIT_INVALID: u8 = 2;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Flags that do not go together, or a value of the wrong form.
    #[error("{0}")]
    Usage(String),
    /// The `--server` address (or a URL made from it) does not parse.
    #[error("--server {server}: {source}")]
    ServerUrl {
        /// The address as given (quoted) or the base URL.
        server: String,
        /// The URL parser's error.
        #[source]
        source: url::ParseError,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A running appliance holds the data directory.
    #[error(
        "data directory {dir} is in use by a running appliance; stop it, or go through it with --server {admin}"
    )]
    DataDirInUse {
        /// The data directory.
        dir: PathBuf,
        /// Where the appliance's admin API listens (`unix:PATH` or an address).
        admin: String,
        /// The lock error.
        #[source]
        source: Box<NodeError>,
    },
    /// The data directory could not be opened.
    #[error(transparent)]
    Node(Box<NodeError>),
    /// The server failed to start or stopped with an error.
    #[error(transparent)]
    Serve(Box<crate::frontend::ServeError>),
    /// An input file (a schematic, a key) could not be read.
    #[error("{context}")]
    Input {
        /// What was being read.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A schematic is invalid.
    #[error("invalid schematic")]
    Schematic(#[from] SchematicError),
    /// Building or reading an asset failed.
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An import failed.
    #[error(transparent)]
    Import(#[from] ImportJobError),
    /// Reading a release for a bundle failed.
    #[error("copying {version} failed")]
    Export {
        /// The version tag.
        version: String,
        /// Why.
        #[source]
        source: CatalogError,
    },
    /// Reading or writing images failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// A key could not be read.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// Secure Boot keys could not be generated.
    #[error(transparent)]
    SecureBoot(#[from] crate::trust::secureboot::SecureBootError),
    /// The synthetic release could not be built.
    #[error(transparent)]
    Kit(#[from] KitError),
    /// A request to a running appliance could not be made.
    #[error("{method} {url} failed")]
    Http {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// A running appliance answered with an error status.
    #[error("{method} {url}: {status}: {body}")]
    Server {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// The status.
        status: reqwest::StatusCode,
        /// Its answer.
        body: String,
    },
    /// A running appliance answered something this command does not understand.
    #[error("{url}: unexpected answer {body:?}")]
    Unexpected {
        /// The URL.
        url: String,
        /// The answer.
        body: String,
    },
    /// A running appliance reported that the job it ran failed (its text, with causes).
    #[error("the appliance reports: {0}")]
    Remote(String),
}

impl From<NodeError> for CliError {
    fn from(e: NodeError) -> Self {
        CliError::Node(Box::new(e))
    }
}

impl From<crate::frontend::ServeError> for CliError {
    fn from(e: crate::frontend::ServeError) -> Self {
        CliError::Serve(Box::new(e))
    }
}

impl CliError {
    /// Maps a failure to parse a URL of `--server` `server` (for `map_err`).
    pub fn server_url(server: impl Into<String>) -> impl FnOnce(url::ParseError) -> Self {
        let server = server.into();
        move |source| CliError::ServerUrl { server, source }
    }

    /// A failed file operation on `path`.
    pub fn io(what: &str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let context = format!("{what} {}", path.display());
        move |source| CliError::Io { context, source }
    }

    /// An input file that could not be read (`-` is stdin).
    pub fn input(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let context = if path.as_os_str() == "-" {
            "cannot read stdin".to_string()
        } else {
            format!("cannot read {}", path.display())
        };
        move |source| CliError::Input { context, source }
    }

    /// The exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_)
            | CliError::ServerUrl { .. }
            | CliError::Config(_)
            | CliError::Input { .. }
            | CliError::Schematic(_) => ExitCode::from(EXIT_INVALID),
            CliError::Server { status, .. } if status.is_client_error() => {
                ExitCode::from(EXIT_INVALID)
            }
            _ => ExitCode::FAILURE,
        }
    }
}

/// Opening a node for a command, with a clear message when a server holds the directory.
pub fn open_error(cfg: &crate::config::Config) -> impl FnOnce(NodeError) -> CliError + use<> {
    let dir = cfg.data_dir().to_path_buf();
    let admin = match cfg.admin_listen() {
        Ok(crate::config::AdminListen::Unix(p)) => format!("unix:{}", p.display()),
        Ok(crate::config::AdminListen::Tcp(a)) => format!("http://{}", a.0),
        Err(_) => "URL".to_string(),
    };
    move |e| {
        if e.is_locked() {
            CliError::DataDirInUse {
                dir,
                admin,
                source: Box::new(e),
            }
        } else {
            CliError::from(e)
        }
    }
}

/// Ends command `name`: success, or the error and its causes on stderr and its exit code.
pub fn finish(name: &str, result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-factory {name}: {}", Causes(&e));
            e.exit_code()
        }
    }
}
