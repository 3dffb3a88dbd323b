//! Garbage collection against real stores in a temporary directory: orphans by age, the
//! free-space watermark, and everything a pass must leave alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::catalog::Release;
use crate::store::{BlobInfo, MetaStore, SchematicStore, SledStore};
use crate::trust::SigningKey;

const HOUR: Duration = Duration::from_secs(3600);

struct Fixture {
    _dir: tempfile::TempDir,
    blobs: BlobStore,
    records: RecordStore,
    releases: ReleaseStore,
    key: SigningKey,
    verifier: RecordVerifier,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let meta: Arc<dyn MetaStore> = Arc::new(SledStore::open(&dir.path().join("meta")).unwrap());
        let blobs = BlobStore::open(&dir.path().join("blobs"), Arc::clone(&meta)).unwrap();
        let key = SigningKey::from_seed(&[7; 32]);
        Self {
            records: RecordStore::new(meta),
            releases: ReleaseStore::new(&blobs),
            verifier: RecordVerifier::new(&key.verifying_key()),
            key,
            blobs,
            _dir: dir,
        }
    }

    /// Stores 64 KiB derived from `seed`, last written `age` ago.
    fn blob(&self, seed: u8, age: Duration) -> BlobInfo {
        let bytes: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8 ^ seed).collect();
        let info = self.blobs.put_bytes(&bytes).unwrap();
        File::options()
            .write(true)
            .open(self.blobs.path(&info.blake3).unwrap())
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        info
    }

    /// A signed record under `key` for `main` and `intermediates`, last served at `served`.
    fn record(&self, key: &str, main: &BlobInfo, intermediates: &[&BlobInfo], served: u64) {
        let record = AssetRecord {
            key: key.into(),
            schematic: "s".repeat(64),
            version: "v1.11.0".into(),
            path: format!("{key}.iso"),
            kind: "iso".into(),
            arch: "amd64".into(),
            size: main.size,
            sha256: main.sha256.clone(),
            blake3: main.blake3.clone(),
            content_type: "application/octet-stream".into(),
            created: 1,
            inputs: BTreeMap::new(),
            intermediates: intermediates.iter().map(|b| b.blake3.clone()).collect(),
        };
        self.records
            .put_raw(key, &record.seal(&self.key).unwrap())
            .unwrap();
        self.records.touch(key, served).unwrap();
    }

    /// Publishes v1.11.0 with `kernel` as its kernel.
    async fn release(&self, kernel: &BlobInfo) {
        let blob = serde_json::json!({
            "blake3": kernel.blake3, "sha256": kernel.sha256, "size": kernel.size,
        });
        let release: Release = serde_json::from_value(serde_json::json!({
            "version": "v1.11.0", "imported_at": "", "source": "test",
            "signatures": {"state": "skipped"}, "partial": false,
            "arches": {"amd64": {"imager": null, "installer_base": null,
                "assets": {"vmlinuz": blob}, "grub": {}}},
            "extensions": [], "overlays": [],
        }))
        .unwrap();
        self.releases.put(&release).await.unwrap();
    }

    /// One pass with `free` bytes free on the volume.
    fn pass(&self, limits: &GcLimits, in_use: &InUse<'_>, free: u64, dry_run: bool) -> GcReport {
        self.pass_keeping(limits, in_use, free, dry_run, &|_| false)
    }

    /// [`Fixture::pass`] on a node that holds the copies of the keys `designated` names for
    /// the cluster.
    fn pass_keeping(
        &self,
        limits: &GcLimits,
        in_use: &InUse<'_>,
        free: u64,
        dry_run: bool,
        designated: &dyn Fn(&str) -> bool,
    ) -> GcReport {
        let free_space = move || Ok(free);
        let inputs = GcInputs {
            records: &self.records,
            blobs: &self.blobs,
            releases: &self.releases,
            verifier: &self.verifier,
            free_space: &free_space,
            designated,
        };
        collect_garbage(&inputs, limits, in_use, dry_run, SystemTime::now()).unwrap()
    }

    fn indexed(&self, b: &BlobInfo) -> bool {
        self.blobs.sha256_names().unwrap().contains_key(&b.blake3)
    }
}

fn limits(max_bytes: u64, min_free_bytes: u64) -> GcLimits {
    GcLimits {
        max_bytes,
        min_free_bytes,
        orphan_grace: HOUR,
        volume: PathBuf::from("/"),
    }
}

const IDLE: InUse<'static> = InUse {
    serving: &|_| false,
    building: &|_| false,
    importing: false,
};

#[tokio::test]
async fn only_orphans_older_than_the_grace_period_are_collected() {
    let f = Fixture::new();
    let old_orphan = f.blob(1, 2 * HOUR);
    let fresh_orphan = f.blob(2, Duration::ZERO);
    let asset = f.blob(3, 2 * HOUR);
    let intermediate = f.blob(4, 2 * HOUR);
    let kernel = f.blob(5, 2 * HOUR);
    f.record("a", &asset, &[&intermediate], 10);
    f.release(&kernel).await;
    // A schematic large enough to be a document file of its own under `blobs/docs/`.
    let schematics = SchematicStore::new(&f.blobs).unwrap();
    let body = format!(
        "customization:\n  extraKernelArgs:\n    - {}\n",
        "x".repeat(300_000)
    );
    let id = crate::sha256::hex_digest(body.as_bytes());
    schematics.put(&id, &body).await.unwrap();

    let dry = f.pass(&limits(0, 0), &IDLE, u64::MAX, true);
    assert_eq!(dry.orphans, std::slice::from_ref(&old_orphan.blake3));
    assert!(f.blobs.contains(&old_orphan.blake3), "a dry run deleted");

    let importing = InUse {
        importing: true,
        ..IDLE
    };
    let r = f.pass(&limits(0, 0), &importing, u64::MAX, false);
    assert!(r.orphans.is_empty() && r.orphans_deferred, "{r:?}");
    assert!(f.blobs.contains(&old_orphan.blake3));

    let r = f.pass(&limits(0, 0), &IDLE, u64::MAX, false);
    assert_eq!(r.orphans, std::slice::from_ref(&old_orphan.blake3));
    assert!(r.orphan_bytes >= 65_536, "{r:?}");
    assert!(r.evicted.is_empty(), "{r:?}");
    assert!(!f.blobs.contains(&old_orphan.blake3));
    assert!(!f.indexed(&old_orphan), "the orphan's index entry stayed");
    for kept in [&fresh_orphan, &asset, &intermediate, &kernel] {
        assert!(f.blobs.contains(&kept.blake3) && f.indexed(kept));
    }
    assert_eq!(schematics.get(&id).unwrap().as_deref(), Some(body.as_str()));
    let docs = f.blobs.path(&"0".repeat(64)).unwrap();
    let docs = docs.parent().unwrap().parent().unwrap().join("docs");
    assert!(docs.is_dir(), "documents live under {}", docs.display());

    // A record replaced by a rebuild leaves its old blob an orphan: collected once old.
    let rebuilt = f.blob(6, Duration::ZERO);
    f.record("a", &rebuilt, &[], 20);
    let r = f.pass(&limits(0, 0), &IDLE, u64::MAX, false);
    let mut gone = r.orphans.clone();
    gone.sort();
    let mut expected = vec![asset.blake3.clone(), intermediate.blake3.clone()];
    expected.sort();
    assert_eq!(gone, expected);
    assert!(f.blobs.contains(&rebuilt.blake3) && f.blobs.contains(&fresh_orphan.blake3));
}

#[tokio::test]
async fn the_watermark_evicts_least_recently_served_first_and_never_what_is_in_use() {
    let f = Fixture::new();
    let kernel = f.blob(9, Duration::ZERO);
    f.release(&kernel).await;
    let (a, b, c) = (f.blob(1, HOUR), f.blob(2, HOUR), f.blob(3, HOUR));
    let shared = f.blob(4, HOUR);
    f.record("a", &a, &[&shared], 100);
    f.record("b", &b, &[&shared], 200);
    f.record("c", &c, &[], 300);
    // The release's kernel served as an asset: the record goes, the blob never does.
    f.record("kernel", &kernel, &[], 50);
    let size = disk_usage(&f.blobs, &a.blake3);
    assert!(size > 0);

    // Busy: `a` is being served and `kernel` rebuilt; `b` and then `c` go instead.
    let in_use = InUse {
        serving: &|blob| blob == a.blake3,
        building: &|key| key == "kernel",
        importing: false,
    };
    let r = f.pass(&limits(0, 1_000_000 + 2 * size), &in_use, 1_000_000, true);
    let order: Vec<&str> = r.evicted.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(order, ["b", "c"], "{r:?}");
    assert_eq!(r.skipped_busy, 2);

    // Idle: least recently served first, until the free space is back above the mark.
    let r = f.pass(&limits(0, 1_000_000 + size + 1), &IDLE, 1_000_000, false);
    let order: Vec<&str> = r.evicted.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(order, ["kernel", "a", "b"], "{r:?}");
    assert_eq!(r.short_bytes, 0);
    assert_eq!(r.free_bytes_before, Some(1_000_000));
    assert!(
        f.blobs.contains(&kernel.blake3),
        "a release input was deleted"
    );
    assert!(f.indexed(&kernel));
    for gone in [&a, &b, &shared] {
        assert!(!f.blobs.contains(&gone.blake3));
        assert!(!f.indexed(gone), "an evicted blob's index entry stayed");
    }
    assert!(f.blobs.contains(&c.blake3));
    assert!(f.records.contains("c").unwrap());

    // More than can be evicted: everything goes, and the pass says how short it is.
    let r = f.pass(&limits(0, u64::MAX / 2), &IDLE, 1_000_000, false);
    assert_eq!(r.evicted.len(), 1);
    assert!(r.short_bytes > 0, "{r:?}");
    assert!(r.summary().contains("short of the free-space watermark"));
}

#[tokio::test]
async fn copies_held_for_the_cluster_are_evicted_last_and_only_when_nothing_else_is_left() {
    let f = Fixture::new();
    let (a, b, c, d) = (
        f.blob(1, HOUR),
        f.blob(2, HOUR),
        f.blob(3, HOUR),
        f.blob(4, HOUR),
    );
    // `a` and `c`, the least recently served, are copies this node holds for the cluster.
    f.record("a", &a, &[], 100);
    f.record("b", &b, &[], 200);
    f.record("c", &c, &[], 300);
    f.record("d", &d, &[], 400);
    let size = disk_usage(&f.blobs, &a.blake3);
    assert!(size > 0);
    let held = |key: &str| key == "a" || key == "c";
    let order = |r: &GcReport| -> Vec<(String, bool)> {
        r.evicted
            .iter()
            .map(|e| (e.key.clone(), e.designated))
            .collect()
    };

    // Room for two of four: the two other copies go, though more recently served.
    let r = f.pass_keeping(&limits(2 * size, 0), &IDLE, u64::MAX, true, &held);
    assert_eq!(
        order(&r),
        [("b".to_string(), false), ("d".to_string(), false)],
        "{r:?}"
    );
    assert_eq!(r.designated_evicted, 0);
    assert!(!r.summary().contains("replication.factor"));

    // Room for one: a held copy goes too, least recently served first, and the pass says so.
    let r = f.pass_keeping(&limits(size, 0), &IDLE, u64::MAX, false, &held);
    assert_eq!(
        order(&r),
        [
            ("b".to_string(), false),
            ("d".to_string(), false),
            ("a".to_string(), true)
        ],
        "{r:?}"
    );
    assert_eq!(r.designated_evicted, 1);
    assert!(
        r.summary()
            .contains("1 of them copies the cluster counts on")
    );
    assert!(f.records.contains("c").unwrap() && f.blobs.contains(&c.blake3));
    for gone in ["a", "b", "d"] {
        assert!(!f.records.contains(gone).unwrap(), "{gone} kept");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["designatedEvicted"], 1);
    assert_eq!(json["evicted"][2]["designated"], true);
    assert!(json["evicted"][0].get("designated").is_none());
}

#[test]
fn limits_are_explicit_bytes_or_shares_of_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let total = disk_space(dir.path()).unwrap().total;
    assert!(total > 0);
    let mut cache = crate::config::CacheConfig::default();
    let l = GcLimits::resolve(&cache, dir.path());
    assert_eq!(l.max_bytes, (u128::from(total) * 50 / 100) as u64);
    assert_eq!(l.min_free_bytes, (u128::from(total) * 5 / 100) as u64);
    assert_eq!(l.orphan_grace, HOUR);
    cache.max_bytes = 12345;
    cache.min_free_bytes = 678;
    let l = GcLimits::resolve(&cache, dir.path());
    assert_eq!((l.max_bytes, l.min_free_bytes), (12345, 678));
    cache.max_bytes = 0;
    cache.max_percent = 0;
    cache.min_free_bytes = 0;
    cache.min_free_percent = 0;
    let l = GcLimits::resolve(&cache, dir.path());
    assert_eq!((l.max_bytes, l.min_free_bytes), (0, 0));
}

#[test]
fn the_grace_period_outlasts_any_build() {
    assert!(
        super::super::BUILD_TIMEOUT.as_secs() <= crate::config::MIN_ORPHAN_GRACE_SECONDS,
        "a build could still be running when its blobs are taken for orphans"
    );
}
