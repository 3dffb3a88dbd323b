//! Asset records: what was built, from what, where its bytes are — signed with the cluster
//! key and stored in the metadata store.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use p256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};

use super::error::AssetError;
use crate::store::{MetaStore, StoreError};
use crate::trust::SigningKey;

/// Tree of signed records, by cache key.
const RECORDS: &str = "assets";
/// Tree of last-served times, by cache key.
const ACCESS: &str = "asset_access";
/// First byte of an access time in milliseconds (nine bytes; eight bytes are older seconds):
/// builds finish within one second of each other, and eviction must still know their order.
const ACCESS_MILLIS: u8 = 1;
/// Tree of records set aside after failing verification, by `<key>.<unix secs>`.
const QUARANTINE: &str = "assets_quarantine";

/// One built asset. Its canonical encoding (the JSON of this struct: fixed field order,
/// sorted maps) is what the cluster key signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssetRecord {
    /// Cache key (hex SHA-256).
    pub key: String,
    /// Schematic ID.
    pub schematic: String,
    /// Talos version tag.
    pub version: String,
    /// Asset path of the first request that built it.
    pub path: String,
    /// Output kind (`kernel`, `initramfs`, `uki`, …).
    pub kind: String,
    /// Architecture.
    pub arch: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 hex of the bytes (the `ETag`).
    pub sha256: String,
    /// BLAKE3 hex of the bytes (the blob's name).
    pub blake3: String,
    /// `Content-Type` of the first request's path.
    pub content_type: String,
    /// Build time, Unix seconds.
    pub created: u64,
    /// Input name → digest, as covered by the key.
    pub inputs: BTreeMap<String, String>,
    /// Other blobs the build wrote (BLAKE3 hex), collected together with the asset.
    pub intermediates: Vec<String>,
}

/// The stored form: the exact signed bytes and their signature.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// Base64 of the canonical record JSON.
    payload: String,
    /// Base64 of the ASN.1 DER ECDSA P-256 / SHA-256 signature over the payload bytes.
    signature: String,
}

/// Checks record signatures against the cluster's public key. aws-lc's ECDSA verifies in
/// ~70 µs here against ~350 µs for the pure-Rust `p256` crate, and every serve verifies.
#[derive(Debug, Clone)]
pub struct RecordVerifier(UnparsedPublicKey<Vec<u8>>);

impl RecordVerifier {
    /// The verifier for `key`.
    pub fn new(key: &VerifyingKey) -> Self {
        let point = key.to_sec1_point(false);
        Self(UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_ASN1,
            point.as_bytes().to_vec(),
        ))
    }
}

impl AssetRecord {
    /// Signs the record: the stored envelope bytes.
    pub fn seal(&self, key: &SigningKey) -> Result<Vec<u8>, serde_json::Error> {
        let payload = serde_json::to_vec(self)?;
        let signature = key.sign_der(&payload);
        serde_json::to_vec(&Envelope {
            payload: B64.encode(&payload),
            signature: B64.encode(signature),
        })
    }

    /// Verifies an envelope's signature with `key` and decodes the record it carries.
    pub fn open(bytes: &[u8], key: &RecordVerifier) -> Result<AssetRecord, AssetError> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(AssetError::RecordEnvelope)?;
        let base64 = |part: &'static str, text: &str| {
            B64.decode(text.as_bytes())
                .map_err(|source| AssetError::RecordBase64 { part, source })
        };
        let payload = base64("payload", &env.payload)?;
        let sig = base64("signature", &env.signature)?;
        // aws-lc's verification error carries no detail beyond "it does not verify".
        key.0
            .verify(&payload, &sig)
            .map_err(|_| AssetError::RecordSignature)?;
        serde_json::from_slice(&payload).map_err(AssetError::RecordPayload)
    }

    /// The record's main blob and intermediates.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.blake3.as_str()).chain(self.intermediates.iter().map(String::as_str))
    }
}

/// Typed access to the record trees.
#[derive(Clone)]
pub struct RecordStore {
    meta: Arc<dyn MetaStore>,
}

impl RecordStore {
    /// Record access over `meta`.
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        Self { meta }
    }

    /// The stored envelope for `key`.
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta.get(RECORDS, key.as_bytes())
    }

    /// Whether a record exists for `key`.
    pub fn contains(&self, key: &str) -> Result<bool, StoreError> {
        self.meta.contains(RECORDS, key.as_bytes())
    }

    /// Stores a sealed record.
    pub fn put_raw(&self, key: &str, envelope: &[u8]) -> Result<(), StoreError> {
        self.meta.put(RECORDS, key.as_bytes(), envelope)
    }

    /// Every stored envelope, by key.
    pub fn scan_raw(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .meta
            .scan(RECORDS)?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// Removes a record and its access time.
    pub fn remove(&self, key: &str) -> Result<bool, StoreError> {
        self.meta.remove(ACCESS, key.as_bytes())?;
        self.meta.remove(RECORDS, key.as_bytes())
    }

    /// Moves a record aside with the reason it failed verification (with its causes).
    pub fn quarantine(
        &self,
        key: &str,
        envelope: &[u8],
        reason: &AssetError,
    ) -> Result<(), StoreError> {
        let value = serde_json::json!({
            "reason": format!("{:#}", crate::causes::Causes(reason)),
            "envelope": String::from_utf8_lossy(envelope),
        });
        // Never replace an earlier quarantined copy of the same key from the same second.
        let secs = crate::clock::now_secs();
        let mut qkey = format!("{key}.{secs}");
        for n in 1..100u32 {
            if self.meta.get(QUARANTINE, qkey.as_bytes())?.is_none() {
                break;
            }
            qkey = format!("{key}.{secs}.{n}");
        }
        self.meta
            .put(QUARANTINE, qkey.as_bytes(), value.to_string().as_bytes())?;
        self.remove(key)?;
        Ok(())
    }

    /// Number of quarantined records.
    pub fn quarantined(&self) -> Result<u64, StoreError> {
        self.meta.count(QUARANTINE)
    }

    /// Last-served time of `key` (Unix milliseconds), if it was ever served.
    pub fn last_served(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .meta
            .get(ACCESS, key.as_bytes())?
            .and_then(|v| match v.as_slice() {
                [ACCESS_MILLIS, rest @ ..] => Some(u64::from_be_bytes(rest.try_into().ok()?)),
                // Written before access times had milliseconds: Unix seconds.
                legacy => Some(u64::from_be_bytes(legacy.try_into().ok()?).saturating_mul(1000)),
            }))
    }

    /// Records that `key` was served at `millis` (Unix milliseconds).
    pub fn touch(&self, key: &str, millis: u64) -> Result<(), StoreError> {
        let mut value = [ACCESS_MILLIS; 9];
        value[1..].copy_from_slice(&millis.to_be_bytes());
        self.meta.put(ACCESS, key.as_bytes(), &value)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.meta.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AssetRecord {
        AssetRecord {
            key: "k".repeat(64),
            schematic: "s".into(),
            version: "v1.11.0".into(),
            path: "kernel-amd64".into(),
            kind: "kernel".into(),
            arch: "amd64".into(),
            size: 3,
            sha256: "a".repeat(64),
            blake3: "b".repeat(64),
            content_type: "application/octet-stream".into(),
            created: 1,
            inputs: BTreeMap::from([("asset/vmlinuz".into(), "sha256:00".into())]),
            intermediates: vec![],
        }
    }

    #[test]
    fn access_times_keep_milliseconds_and_read_older_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> =
            Arc::new(crate::store::SledStore::open(&dir.path().join("meta")).unwrap());
        let records = RecordStore::new(Arc::clone(&meta));
        records.touch("a", 1_700_000_000_123).unwrap();
        records.touch("b", 1_700_000_000_124).unwrap();
        assert_eq!(records.last_served("a").unwrap(), Some(1_700_000_000_123));
        assert!(records.last_served("a").unwrap() < records.last_served("b").unwrap());
        // A value written in seconds by an older version.
        meta.put(ACCESS, b"old", &1_700_000_000u64.to_be_bytes())
            .unwrap();
        assert_eq!(records.last_served("old").unwrap(), Some(1_700_000_000_000));
        meta.put(ACCESS, b"bad", b"xyz").unwrap();
        assert_eq!(records.last_served("bad").unwrap(), None);
        assert_eq!(records.last_served("none").unwrap(), None);
    }

    #[test]
    fn sealed_records_open_with_the_right_key_only() {
        let key = SigningKey::from_seed(&[7; 32]);
        let other = SigningKey::from_seed(&[8; 32]);
        let sealed = record().seal(&key).unwrap();
        assert_eq!(
            AssetRecord::open(&sealed, &RecordVerifier::new(&key.verifying_key())).unwrap(),
            record()
        );
        let err =
            AssetRecord::open(&sealed, &RecordVerifier::new(&other.verifying_key())).unwrap_err();
        assert!(matches!(err, AssetError::RecordSignature), "{err}");
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn any_change_to_the_payload_breaks_the_signature() {
        let key = SigningKey::from_seed(&[7; 32]);
        let sealed = record().seal(&key).unwrap();
        let mut env: Envelope = serde_json::from_slice(&sealed).unwrap();
        let mut forged = record();
        forged.blake3 = "c".repeat(64);
        env.payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        let bytes = serde_json::to_vec(&env).unwrap();
        let err =
            AssetRecord::open(&bytes, &RecordVerifier::new(&key.verifying_key())).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Undecodable envelopes fail too, with a reason.
        assert!(AssetRecord::open(b"{}", &RecordVerifier::new(&key.verifying_key())).is_err());
    }

    #[test]
    fn records_stay_small_values_of_the_metadata_store() {
        // A record of an ISO with 32 extensions, an overlay and a dozen intermediates.
        let key = SigningKey::from_seed(&[7; 32]);
        let mut r = record();
        for i in 0..32 {
            r.inputs.insert(
                format!("extension/siderolabs/extension-number-{i}"),
                format!("sha256:{}", "e".repeat(64)),
            );
        }
        r.inputs.insert(
            "overlay/rpi_generic/arm64".into(),
            format!("sha256:{}", "f".repeat(64)),
        );
        r.intermediates = (0..12).map(|i| format!("{i:064x}")).collect();
        let sealed = r.seal(&key).unwrap();
        assert!(
            sealed.len() < crate::store::SMALL_VALUE,
            "a sealed record of {} bytes",
            sealed.len()
        );
    }

    #[test]
    fn a_key_quarantined_twice_in_one_second_keeps_both_envelopes() {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let records = RecordStore::new(meta);
        records
            .quarantine("k1", b"one", &AssetError::RecordSignature)
            .unwrap();
        records
            .quarantine("k1", b"two", &AssetError::RecordSignature)
            .unwrap();
        assert_eq!(records.quarantined().unwrap(), 2);
        let reasons: Vec<String> = records
            .meta
            .scan(QUARANTINE)
            .unwrap()
            .into_iter()
            .map(|(_, v)| {
                serde_json::from_slice::<serde_json::Value>(&v).unwrap()["reason"].to_string()
            })
            .collect();
        assert_eq!(
            reasons,
            [r#""signature does not verify with the cluster key""#; 2]
        );
    }
}
