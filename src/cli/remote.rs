//! Talking to a running appliance's admin API (`--server`): the bearer token and requests whose
//! failures keep their causes.

use std::path::{Path, PathBuf};

use clap::Args;

use super::error::CliError;
use super::load_config;
use crate::config::Config;

/// An admin API client for one appliance.
pub struct AdminClient {
    base: url::Url,
    token: String,
    client: reqwest::Client,
}

impl AdminClient {
    /// A client for the admin listener `server` (`unix:PATH` for its Unix socket, or the
    /// `http(s)://HOST:PORT` of a TCP admin listener), authenticated with the token in
    /// `token_file` (default: [`default_token_file`]).
    pub fn new(server: &str, token_file: Option<&Path>, cfg: &Config) -> Result<Self, CliError> {
        let path: PathBuf = token_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| default_token_file(server, cfg));
        let token = std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|source| CliError::Io {
                context: format!(
                    "cannot read the admin token {} (give --admin-token-file)",
                    path.display()
                ),
                source,
            })?;
        let (base, client) = match server.strip_prefix("unix:") {
            Some(path) => {
                let client = reqwest::Client::builder()
                    .unix_socket(PathBuf::from(path))
                    .build()
                    .map_err(|source| CliError::Http {
                        method: "connect",
                        url: server.to_string(),
                        source,
                    })?;
                // Every request of this client goes through the socket; the host is a label.
                let base = url::Url::parse("http://image-factory.admin/")
                    .map_err(CliError::server_url(format!("{server:?}")))?;
                (base, client)
            }
            None => {
                let base =
                    url::Url::parse(server).map_err(CliError::server_url(format!("{server:?}")))?;
                (base, reqwest::Client::new())
            }
        };
        Ok(Self {
            base,
            token,
            client,
        })
    }

    /// The URL of `path` (relative, may carry a query) on the appliance.
    pub fn url(&self, path: &str) -> Result<url::Url, CliError> {
        self.base
            .join(path)
            .map_err(CliError::server_url(self.base.as_str()))
    }

    /// A `POST` to `url` with the bearer token.
    pub fn post(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client.post(url).bearer_auth(&self.token)
    }

    /// A `GET` of `url` with the bearer token.
    pub fn get(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client.get(url).bearer_auth(&self.token)
    }

    /// A `PUT` to `url` with the bearer token.
    pub fn put(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client.put(url).bearer_auth(&self.token)
    }

    /// Checks that the server is an admin listener that accepts the token, before a request
    /// whose body is too large to send only to learn that (a server that refuses a request early
    /// may close the connection while its body is still being written, hiding its answer).
    pub async fn probe(&self) -> Result<(), CliError> {
        let url = self.url("admin/status")?;
        send("GET", &url, self.get(url.clone())).await.map(drop)
    }

    /// A `DELETE` of `url` with the bearer token.
    pub fn delete(&self, url: url::Url) -> reqwest::RequestBuilder {
        self.client.delete(url).bearer_auth(&self.token)
    }
}

/// The configured admin listener as `--server` takes it: `unix:<path>` (by default
/// `<dataDir>/admin.sock`) or `http://HOST:PORT` (`https` when it has a certificate).
pub fn default_server(cfg: &Config) -> Result<String, CliError> {
    Ok(match cfg.admin_listen()? {
        crate::config::AdminListen::Unix(p) => format!("unix:{}", p.display()),
        crate::config::AdminListen::Tcp(a) if cfg.admin.cert_file.is_empty() => {
            format!("http://{}", a.0)
        }
        crate::config::AdminListen::Tcp(a) => format!("https://{}", a.0),
    })
}

/// Sends `req` (a `method` to `url`) and checks the status; the error carries the answer's text.
pub async fn send(
    method: &'static str,
    url: &url::Url,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, CliError> {
    let resp = req.send().await.map_err(|source| CliError::Http {
        method,
        url: url.to_string(),
        source,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let mut body = resp.text().await.unwrap_or_default().trim_end().to_string();
    if status == reqwest::StatusCode::NOT_FOUND && url.path().starts_with("/admin/") {
        // The public HTTP port has no admin API since it moved to its own listener.
        body.push_str(
            " (is --server the admin listener? By default it is the Unix socket \
             unix:<dataDir>/admin.sock, not the HTTP port; see admin.listenAddr)",
        );
    }
    Err(CliError::Server {
        method,
        url: url.to_string(),
        status,
        body,
    })
}

/// Reads the whole answer as text.
pub async fn text(
    method: &'static str,
    url: &url::Url,
    resp: reqwest::Response,
) -> Result<String, CliError> {
    resp.text().await.map_err(|source| CliError::Http {
        method,
        url: url.to_string(),
        source,
    })
}

/// The admin token file of `server` when none is named: `admin.tokenFile` when set; for a Unix
/// socket, the token of the data directory that holds the socket (where `serve` puts both),
/// when it is there; else `<dataDir>/keys/admin-token`.
pub fn default_token_file(server: &str, cfg: &Config) -> PathBuf {
    if cfg.admin.token_file.is_empty()
        && let Some(socket) = server.strip_prefix("unix:")
        && let Some(dir) = Path::new(socket).parent()
    {
        let beside = dir.join("keys").join("admin-token");
        if beside.is_file() {
            return beside;
        }
    }
    cfg.admin_token_path()
}

/// How to reach the appliance.
#[derive(Debug, Args)]
pub struct Conn {
    /// The appliance's admin listener (default: `admin.listenAddr`, i.e. the Unix socket
    /// `unix:<dataDir>/admin.sock`).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Admin token file (default: `admin.tokenFile`, else the data directory's that holds
    /// the `--server` socket, else `<dataDir>/keys/admin-token`).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// YAML configuration file (for the default server and token).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory of the appliance (for the default server and token).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

/// The admin client of `conn`.
pub fn client(conn: &Conn) -> Result<AdminClient, CliError> {
    let cfg = load_config(conn.config.as_deref(), conn.data_dir.as_deref())?;
    let server = match &conn.server {
        Some(s) => s.clone(),
        None => default_server(&cfg)?,
    };
    AdminClient::new(&server, conn.admin_token_file.as_deref(), &cfg)
}

/// `GET path` on the admin API, decoded.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    admin: &AdminClient,
    path: &str,
) -> Result<(T, String), CliError> {
    let url = admin.url(path)?;
    let resp = send("GET", &url, admin.get(url.clone())).await?;
    let body = text("GET", &url, resp).await?;
    let value = serde_json::from_str(&body).map_err(|_| CliError::Unexpected {
        url: url.to_string(),
        body: body.clone(),
    })?;
    Ok((value, body))
}
