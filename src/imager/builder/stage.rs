//! Build stages as the builder reports them: the initramfs steps ([`Progress`]) and the steps
//! around them. The server logs them at debug level; `image-factory build` draws them.

use std::fmt;
use std::sync::Arc;

use crate::imager::initramfs::Progress;

/// A stage of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage<'a> {
    /// A step of the initramfs build.
    Initramfs(&'a Progress),
    /// Assembling a UKI around the initramfs.
    Uki,
    /// Writing the installer image.
    Installer,
    /// Writing the raw disk image.
    DiskImage,
    /// Converting and compressing the disk image into its output format.
    Converting,
    /// Writing the ISO.
    Iso,
}

impl fmt::Display for Stage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Initramfs(p) => p.fmt(f),
            Stage::Uki => f.write_str("assembling the UKI"),
            Stage::Installer => f.write_str("writing the installer image"),
            Stage::DiskImage => f.write_str("writing the disk image"),
            Stage::Converting => f.write_str("converting and compressing the disk image"),
            Stage::Iso => f.write_str("writing the ISO"),
        }
    }
}

/// Where a builder reports its stages (cheap to clone; called from build threads). The
/// default logs each stage at debug level.
#[derive(Clone)]
pub struct StageReporter(Arc<dyn Fn(&Stage<'_>) + Send + Sync>);

impl StageReporter {
    /// A reporter calling `f` for every stage.
    pub fn new(f: impl Fn(&Stage<'_>) + Send + Sync + 'static) -> Self {
        StageReporter(Arc::new(f))
    }

    /// Reports `stage`.
    pub fn report(&self, stage: Stage<'_>) {
        (self.0)(&stage)
    }
}

impl Default for StageReporter {
    fn default() -> Self {
        StageReporter::new(|stage| tracing::debug!(%stage, "build stage"))
    }
}

impl fmt::Debug for StageReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StageReporter")
    }
}
