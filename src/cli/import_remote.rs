//! `image-factory import --server URL`: stream a bundle to a running appliance (or ask it to
//! pull from a registry) through the admin API, and render its progress lines.

use base64::Engine as _;
use futures_util::StreamExt;

use super::error::CliError;
use super::import::{BarProgress, ImportArgs, source_error};
use super::remote::{AdminClient, send};
use super::runtime;
use crate::catalog::ImportProgress;
use crate::config::Config;
use crate::frontend::http::admin::TRUST_KEY_HEADER;

/// Runs the server-mode import.
pub fn run(args: &ImportArgs, cfg: &Config, server: &str) -> Result<(), CliError> {
    let admin = AdminClient::new(server, args.admin_token_file.as_deref(), cfg)?;
    match (&args.bundle, &args.source.from_registry) {
        (Some(_), Some(_)) => return Err(source_error(true)),
        (None, None) => return Err(source_error(false)),
        _ => {}
    }
    let mut url = admin.url("admin/import")?;
    {
        let mut q = url.query_pairs_mut();
        if !args.source.versions.is_empty() {
            q.append_pair("version", &args.source.versions.join(","));
        }
        if !args.source.arch.is_empty() {
            let arches: Vec<&str> = args.source.arch.iter().map(|a| a.as_str()).collect();
            q.append_pair("arch", &arches.join(","));
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
    let mut req = admin.post(url.clone());
    for k in &args.trust_keys {
        let pem = std::fs::read(k).map_err(CliError::input(k))?;
        req = req.header(
            TRUST_KEY_HEADER,
            base64::engine::general_purpose::STANDARD.encode(pem),
        );
    }
    let rt = runtime()?;
    rt.block_on(async {
        let progress = BarProgress::new();
        eprintln!(
            "server mode: importing through {server} (the appliance holds its data directory)"
        );
        if let Some(path) = &args.bundle {
            admin.probe().await?;
            let file = tokio::fs::File::open(path)
                .await
                .map_err(CliError::input(path))?;
            let size = file.metadata().await.map_err(CliError::input(path))?.len();
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
        let resp = send("POST", &url, req).await?;
        let outcome = follow_progress(&url, resp, &progress).await;
        progress.finish();
        outcome
    })
}

/// Renders the appliance's progress lines until it reports the outcome.
async fn follow_progress(
    url: &url::Url,
    resp: reqwest::Response,
    progress: &BarProgress,
) -> Result<(), CliError> {
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| CliError::Http {
            method: "POST",
            url: url.to_string(),
            source,
        })?;
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
                progress.step(&format!("imported {i}"));
                progress.println(&format!(
                    "imported {}",
                    i.get("version").and_then(|x| x.as_str()).unwrap_or("?")
                ));
            } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                return Err(CliError::Remote(e.to_string()));
            } else if v.get("done").is_some() {
                return Ok(());
            }
        }
    }
    Err(CliError::Remote(
        "the progress stream ended before the import did".into(),
    ))
}
