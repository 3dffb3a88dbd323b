//! `image-factory schematic …`: offline ID/canonical computation and a small API client.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::schematic::Schematic;

/// Exit code for invalid input (bad schematic, unreadable file, rejected by the server).
const EXIT_INVALID: u8 = 2;

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

/// A CLI failure: message for stderr plus exit code.
struct Failure(String, u8);

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    match file {
        Some(p) if p.as_os_str() != "-" => {
            buf = std::fs::read(p)
                .map_err(|e| Failure(format!("cannot read {}: {e}", p.display()), EXIT_INVALID))?;
        }
        _ => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure(format!("cannot read stdin: {e}"), EXIT_INVALID))?;
        }
    }
    Ok(buf)
}

fn parse(file: Option<&PathBuf>) -> Result<Schematic, Failure> {
    let input = read_input(file)?;
    Schematic::parse(&input).map_err(|e| Failure(format!("invalid schematic: {e}"), EXIT_INVALID))
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure(format!("cannot write stdout: {e}"), 1))
}

fn base(server: &str) -> String {
    server.trim_end_matches('/').to_string()
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(format!("cannot start runtime: {e}"), 1))
}

async fn create(server: &str, body: Vec<u8>) -> Result<String, Failure> {
    let url = format!("{}/schematics", base(server));
    let resp = reqwest::Client::new()
        .post(&url)
        .header("Content-Type", "application/yaml")
        .body(body)
        .send()
        .await
        .map_err(|e| Failure(format!("POST {url}: {e}"), 1))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Failure(format!("POST {url}: {e}"), 1))?;
    if status.is_client_error() {
        return Err(Failure(
            format!(
                "server rejected the schematic ({status}): {}",
                text.trim_end()
            ),
            EXIT_INVALID,
        ));
    }
    if !status.is_success() {
        return Err(Failure(
            format!("POST {url}: {status}: {}", text.trim_end()),
            1,
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Failure(format!("POST {url}: unexpected response {text:?}: {e}"), 1))?;
    v.get("id")
        .and_then(|id| id.as_str())
        .map(|id| format!("{id}\n"))
        .ok_or_else(|| Failure(format!("POST {url}: response has no id: {text:?}"), 1))
}

async fn get(server: &str, id: &str) -> Result<String, Failure> {
    let url = format!("{}/schematics/{id}", base(server));
    let resp = reqwest::get(&url)
        .await
        .map_err(|e| Failure(format!("GET {url}: {e}"), 1))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| Failure(format!("GET {url}: {e}"), 1))?;
    if !status.is_success() {
        return Err(Failure(
            format!("GET {url}: {status}: {}", text.trim_end()),
            1,
        ));
    }
    Ok(text)
}

fn execute(cmd: SchematicCommand) -> Result<(), Failure> {
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
    match execute(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("image-factory: {msg}");
            ExitCode::from(code)
        }
    }
}
