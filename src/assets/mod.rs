//! The asset pipeline: cache keys, signed asset records, single-flight builds on a miss,
//! integrity checks before and while serving, and garbage collection of built assets.
//!
//! Frontends ask [`Assets::get`] for `(schematic, version, path)`; it answers with a verified
//! record (a hit, a fresh build, or a wait on someone else's build) and [`Assets::open`] streams
//! the bytes. Nothing here speaks HTTP.

mod error;
pub mod gc;
mod integrity;
mod key;
mod maintenance;
mod metrics;
mod parts;
mod peers;
mod pipeline;
mod pxe;
mod record;
mod sendfile;
mod shared_check;
mod stream;

pub use error::{AssetError, BuildError, BuildFailure};
pub use gc::{DiskSpace, Evicted, GcLimits, GcReport, collect_garbage, disk_space, release_blobs};
pub use key::{BUILDER_EPOCH, CacheKey, cache_key};
pub use maintenance::{GcPass, ScrubReport};
pub use metrics::{AssetMetrics, HISTOGRAMS, LATENCY_BUCKETS};
pub use parts::InstallerManifest;
pub use peers::Peers;
pub use pipeline::{
    AssetRequest, Assets, AssetsOptions, BUILD_TIMEOUT, BuildEntry, BuildState,
    DEFAULT_INITRAMFS_ZSTD_LEVEL, DataStores, Outcome, Served,
};
pub use pxe::PxeBoot;
pub use record::{AssetRecord, RecordStore, RecordVerifier};
pub use sendfile::DirectBody;
pub use stream::AssetBody;
