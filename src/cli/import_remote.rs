//! `image-factory import --server URL`: stream a bundle to a running appliance (or ask it to
//! pull from a registry) through the admin API, and render its progress lines.

use std::path::PathBuf;

use base64::Engine as _;
use futures_util::StreamExt;

use super::import::{BarProgress, ImportArgs};
use crate::catalog::ImportProgress;
use crate::config::Config;
use crate::frontend::http::admin::TRUST_KEY_HEADER;

fn token(args: &ImportArgs, cfg: &Config) -> Result<String, String> {
    let path: PathBuf = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| cfg.admin_token_path());
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            format!(
                "admin token {}: {e} (give --admin-token-file)",
                path.display()
            )
        })
}

/// Runs the server-mode import.
pub fn run(args: &ImportArgs, cfg: &Config, server: &str) -> Result<(), String> {
    let token = token(args, cfg)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut url = url::Url::parse(server)
            .and_then(|u| u.join("admin/import"))
            .map_err(|e| format!("--server {server:?}: {e}"))?;
        {
            let mut q = url.query_pairs_mut();
            if !args.source.versions.is_empty() {
                q.append_pair("version", &args.source.versions.join(","));
            }
            if !args.source.arch.is_empty() {
                q.append_pair("arch", &args.source.arch.join(","));
            }
            q.append_pair("extensions", &args.source.extensions);
            if let Some(r) = &args.source.from_registry {
                q.append_pair("fromRegistry", r);
            }
            if args.source.insecure_registry {
                q.append_pair("insecureRegistry", "true");
            }
            if args.insecure_skip_signature_verification {
                q.append_pair("insecureSkipSignatureVerification", "true");
            }
        }
        let client = reqwest::Client::new();
        let mut req = client.post(url.clone()).bearer_auth(&token);
        for k in &args.trust_keys {
            let pem = std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?;
            req = req.header(
                TRUST_KEY_HEADER,
                base64::engine::general_purpose::STANDARD.encode(pem),
            );
        }
        let progress = BarProgress::new();
        eprintln!(
            "server mode: importing through {server} (the appliance holds its data directory)"
        );
        match (&args.bundle, &args.source.from_registry) {
            (Some(path), None) => {
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let size = file.metadata().await.map_err(|e| e.to_string())?.len();
                progress.step(&format!(
                    "uploading {} ({:.1} MB)",
                    path.display(),
                    size as f64 / 1e6
                ));
                progress.add_total(size);
                let bar = progress.clone_handle();
                let stream =
                    tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect(move |c| {
                        if let Ok(c) = c {
                            bar.inc(c.len() as u64);
                        }
                    });
                req = req.body(reqwest::Body::wrap_stream(stream));
            }
            (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err("give either a BUNDLE or --from-registry, not both".into());
            }
            (None, None) => {
                return Err("give a BUNDLE file or --from-registry HOST[/NAMESPACE]".into());
            }
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(format!("{status}: {}", text.trim()));
        }
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut outcome: Option<Result<(), String>> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reading progress: {e}"))?;
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(s) = v.get("step").and_then(|s| s.as_str()) {
                    progress.step(s);
                } else if let Some(n) = v.get("total").and_then(|n| n.as_u64()) {
                    progress.add_total(n);
                } else if let Some(n) = v.get("advance").and_then(|n| n.as_u64()) {
                    progress.advance(n);
                } else if let Some(i) = v.get("imported") {
                    progress.step(&format!("imported {}", i));
                    eprintln!(
                        "imported {}",
                        i.get("version").and_then(|x| x.as_str()).unwrap_or("?")
                    );
                } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                    outcome = Some(Err(e.to_string()));
                } else if v.get("done").is_some() {
                    outcome = Some(Ok(()));
                }
            }
        }
        progress.finish();
        outcome.unwrap_or_else(|| Err("the server closed the progress stream early".into()))
    })
}
