//! `image-factory schematic …`: offline ID/canonical computation and a small API client.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::error::{CliError, finish};
use super::remote::{send, text};
use crate::schematic::Schematic;

/// Schematic subcommands.
#[derive(Debug, Subcommand)]
pub enum SchematicCommand {
    /// Print the schematic ID (64 hex characters) of a schematic file.
    Id {
        /// Schematic YAML file; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Print the canonical YAML (the bytes that are hashed into the ID).
    Canonical {
        /// Schematic YAML file; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Upload a schematic to a running factory and print its ID.
    Create {
        /// Base URL of the factory, e.g. http://localhost:8080.
        #[arg(long, value_name = "URL")]
        server: String,
        /// Schematic YAML file; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Fetch a schematic's canonical YAML from a running factory.
    Get {
        /// Base URL of the factory, e.g. http://localhost:8080.
        #[arg(long, value_name = "URL")]
        server: String,
        /// Schematic ID.
        id: String,
    },
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            buf = std::fs::read(p).map_err(CliError::input(p))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(CliError::input(Path::new("-")))?;
        }
    }
    Ok(buf)
}

fn parse(file: Option<&PathBuf>) -> Result<Schematic, CliError> {
    Ok(Schematic::parse(&read_input(file)?)?)
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::io("cannot write", Path::new("stdout")))
}

fn url(server: &str, path: &str) -> String {
    format!("{}/{path}", server.trim_end_matches('/'))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CliError::Io {
            context: "cannot start the async runtime".into(),
            source,
        })
}

async fn create(server: &str, body: Vec<u8>) -> Result<String, CliError> {
    let url = parse_url(&url(server, "schematics"))?;
    let req = reqwest::Client::new()
        .post(url.clone())
        .header("Content-Type", "application/yaml")
        .body(body);
    let resp = send("POST", &url, req).await?;
    let body = text("POST", &url, resp).await?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| CliError::Unexpected {
        url: url.to_string(),
        body: body.clone(),
    })?;
    v.get("id")
        .and_then(|id| id.as_str())
        .map(|id| format!("{id}\n"))
        .ok_or_else(|| CliError::Unexpected {
            url: url.to_string(),
            body,
        })
}

async fn get(server: &str, id: &str) -> Result<String, CliError> {
    let url = parse_url(&url(server, &format!("schematics/{id}")))?;
    let resp = send("GET", &url, reqwest::Client::new().get(url.clone())).await?;
    text("GET", &url, resp).await
}

fn parse_url(s: &str) -> Result<url::Url, CliError> {
    url::Url::parse(s).map_err(CliError::server_url(format!("{s:?}")))
}

fn execute(cmd: SchematicCommand) -> Result<(), CliError> {
    match cmd {
        SchematicCommand::Id { file } => print(&format!("{}\n", parse(file.as_ref())?.id())),
        SchematicCommand::Canonical { file } => print(&parse(file.as_ref())?.canonical()),
        SchematicCommand::Create { server, file } => {
            let body = read_input(file.as_ref())?;
            let id = runtime()?.block_on(create(&server, body))?;
            print(&id)
        }
        SchematicCommand::Get { server, id } => {
            let yaml = runtime()?.block_on(get(&server, &id))?;
            print(&yaml)
        }
    }
}

/// Runs a schematic subcommand; invalid input exits with code 2.
pub fn run(cmd: SchematicCommand) -> ExitCode {
    finish("schematic", execute(cmd))
}
