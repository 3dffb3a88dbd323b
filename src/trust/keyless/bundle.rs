//! Sigstore bundles (v0.3) attached to an image through the OCI 1.1 referrers API, as cosign 3
//! signs images (`--new-bundle-format`): a referrer manifest (subject = the image) whose one
//! layer is the bundle JSON. The bundle holds the Fulcio certificate, a Rekor entry (`dsse`
//! 0.0.1 with its signed entry timestamp, the "inclusion promise") and a DSSE envelope whose
//! payload is an in-toto statement of type `https://sigstore.dev/cosign/sign/v1` naming the
//! image digest. The same checks as the `.sig` form apply ([`super::KeylessPolicy::verify`]);
//! the referrers are found through a registry's referrers API, else the referrers tag schema
//! (`sha256-<hex>`, an index of them), which registries without the API, OCI layouts and offline
//! bundles hold ([`crate::oci::ImageSource::referrers`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Evidence;
use super::rekor::Entry;

/// Media type of a Sigstore bundle v0.3.
pub const MEDIA_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE_INTOTO: &str = "application/vnd.in-toto+json";
/// in-toto statement `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate type cosign 3 signs images with.
pub const PREDICATE_COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";
/// Largest bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024;
/// Most referrers looked at for one image.
pub const MAX_REFERRERS: usize = crate::oci::referrers::MAX_LISTED;

/// The referrers tag schema's tag for `digest` (`sha256-<hex>`).
pub fn referrers_tag(digest: &crate::oci::Digest) -> String {
    crate::oci::referrers::tag(digest)
}

/// DSSE's pre-authentication encoding: what the signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn text<'a>(v: &'a serde_json::Value, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("bundle: {what} is missing or not a string"))
}

fn b64(v: &serde_json::Value, what: &str) -> Result<Vec<u8>, String> {
    B64.decode(text(v, what)?)
        .map_err(|e| format!("bundle: {what} is not base64: {e}"))
}

/// protobuf's JSON int64: a string, or a number.
fn int(v: &serde_json::Value, what: &str) -> Result<i64, String> {
    match v {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| format!("bundle: {what} is missing or not an integer"))
}

/// Reads the evidence of a bundle (at most [`MAX_BUNDLE_BYTES`]).
pub fn evidence(bytes: &[u8]) -> Result<Evidence, String> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(format!(
            "bundle of {} bytes exceeds the {MAX_BUNDLE_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("bundle is not JSON: {e}"))?;
    if v["mediaType"] != MEDIA_BUNDLE {
        return Err(format!(
            "bundle media type {}, expected {MEDIA_BUNDLE}",
            v["mediaType"]
        ));
    }
    let vm = &v["verificationMaterial"];
    let certificate = if vm["certificate"].is_object() {
        b64(&vm["certificate"]["rawBytes"], "certificate")?
    } else {
        b64(
            &vm["x509CertificateChain"]["certificates"][0]["rawBytes"],
            "certificate",
        )?
    };
    let tlog = &vm["tlogEntries"][0];
    if !tlog.is_object() {
        return Err("bundle has no transparency log entry".into());
    }
    let set = b64(
        &tlog["inclusionPromise"]["signedEntryTimestamp"],
        "inclusion promise (signed entry timestamp)",
    )?;
    let entry = Entry {
        body: text(&tlog["canonicalizedBody"], "canonicalizedBody")?.to_string(),
        integrated_time: int(&tlog["integratedTime"], "integratedTime")?,
        log_index: int(&tlog["logIndex"], "logIndex")?,
        log_id: hex::encode(b64(&tlog["logId"]["keyId"], "logId.keyId")?),
        set,
    };
    let env = &v["dsseEnvelope"];
    if !env.is_object() {
        return Err("bundle has no DSSE envelope (a message signature does not carry the image's statement)".into());
    }
    let payload_type = text(&env["payloadType"], "payloadType")?.to_string();
    if payload_type != PAYLOAD_TYPE_INTOTO {
        return Err(format!(
            "DSSE payload type {payload_type:?}, expected {PAYLOAD_TYPE_INTOTO}"
        ));
    }
    Ok(Evidence {
        certificate,
        payload: b64(&env["payload"], "DSSE payload")?,
        signature: b64(&env["signatures"][0]["sig"], "DSSE signature")?,
        dsse_type: Some(payload_type),
        entry,
    })
}

/// Checks the in-toto statement names the image `digest` (`sha256:<hex>`) with cosign's
/// signing predicate.
pub fn check_statement(payload: &[u8], digest: &crate::oci::Digest) -> Result<(), (bool, String)> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| (false, format!("DSSE payload is not JSON: {e}")))?;
    if v["_type"] != STATEMENT_TYPE || v["predicateType"] != PREDICATE_COSIGN_SIGN {
        return Err((
            false,
            format!(
                "statement {} / predicate {} is not cosign's image signature ({PREDICATE_COSIGN_SIGN})",
                v["_type"], v["predicateType"]
            ),
        ));
    }
    let subjects = v["subject"].as_array().cloned().unwrap_or_default();
    if subjects
        .iter()
        .any(|s| s["digest"]["sha256"].as_str() == Some(digest.hex()))
    {
        return Ok(());
    }
    let named: Vec<String> = subjects
        .iter()
        .filter_map(|s| {
            s["digest"]["sha256"]
                .as_str()
                .map(|h| format!("sha256:{h}"))
        })
        .collect();
    Err((
        true,
        format!(
            "the signed statement names {}, the image is {digest}",
            if named.is_empty() {
                "no digest".to_string()
            } else {
                named.join(", ")
            }
        ),
    ))
}

/// The in-toto statement cosign 3 signs for `digest` (the test kit writes these).
pub fn statement(name: &str, digest: &crate::oci::Digest) -> Vec<u8> {
    serde_json::json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest.hex()}}],
        "predicateType": PREDICATE_COSIGN_SIGN,
        "predicate": {},
    })
    .to_string()
    .into_bytes()
}

/// A `dsse` 0.0.1 Rekor body for the envelope (the test kit's log writes these), base64.
pub fn dsse_body(payload: &[u8], signature: &[u8], cert_pem: &str) -> String {
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "dsse",
        "spec": {
            "payloadHash": {"algorithm": "sha256", "value": crate::sha256::hex_digest(payload)},
            "signatures": [{"signature": B64.encode(signature), "verifier": B64.encode(cert_pem)}],
        },
    });
    B64.encode(body.to_string())
}

/// Checks a `dsse` 0.0.1 body records the payload hash, this signature and this certificate.
pub fn check_dsse_body(
    entry: &Entry,
    payload: &[u8],
    signature: &[u8],
    cert_der: &[u8],
) -> Result<(), String> {
    let body = B64
        .decode(&entry.body)
        .map_err(|e| format!("entry body is not base64: {e}"))?;
    if body.len() > super::rekor::MAX_BODY_BYTES {
        return Err("entry body exceeds its size limit".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("entry body is not JSON: {e}"))?;
    if v["kind"] != "dsse" || v["apiVersion"] != "0.0.1" {
        return Err(format!(
            "entry is {} {}, expected dsse 0.0.1",
            v["kind"], v["apiVersion"]
        ));
    }
    let spec = &v["spec"];
    let want = crate::sha256::hex_digest(payload);
    if spec["payloadHash"]["algorithm"] != "sha256"
        || spec["payloadHash"]["value"].as_str() != Some(want.as_str())
    {
        return Err(format!(
            "entry records payload hash {}, the signed payload is sha256:{want}",
            spec["payloadHash"]["value"]
        ));
    }
    let sigs = spec["signatures"].as_array().cloned().unwrap_or_default();
    let ours = sigs.iter().any(|s| {
        let sig_ok = s["signature"]
            .as_str()
            .and_then(|x| B64.decode(x).ok())
            .is_some_and(|x| x == signature);
        let cert_ok = s["verifier"]
            .as_str()
            .and_then(|x| B64.decode(x).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|pem| super::x509::pem_certificates(&pem, 1).ok())
            .is_some_and(|c| c.first().map(Vec::as_slice) == Some(cert_der));
        sig_ok && cert_ok
    });
    if !ours {
        return Err("entry records another signature or certificate".into());
    }
    Ok(())
}
