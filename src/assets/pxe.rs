//! What an iPXE script boots for a schematic, version and PXE path: the boot assets' paths and
//! the kernel command line (itself an asset, built on a miss like any other).

use futures_util::TryStreamExt as _;

use super::error::AssetError;
use super::pipeline::{AssetRequest, Assets, Outcome};
use crate::catalog::Version;
use crate::imager::path::{parse_pxe_path, pxe_boot_assets};

/// Largest cmdline asset read into an iPXE script.
const MAX_CMDLINE: u64 = 64 * 1024;

/// The network boot of one schematic, version and platform.
#[derive(Debug, Clone)]
pub struct PxeBoot {
    /// Schematic ID.
    pub schematic_id: String,
    /// Version tag (`v1.11.0`).
    pub version_tag: String,
    /// Asset paths to boot: kernel and initramfs, or one UKI for SecureBoot.
    pub files: Vec<String>,
    /// The kernel command line.
    pub cmdline: String,
    /// How the cmdline asset was answered.
    pub outcome: Outcome,
}

impl Assets {
    /// The boot of `path` (e.g. `metal-amd64`) for the schematic at `version`.
    pub async fn pxe_boot(
        &self,
        schematic_id: &str,
        version: &str,
        path: &str,
    ) -> Result<PxeBoot, AssetError> {
        let served = self
            .get(AssetRequest::new(
                schematic_id,
                version,
                &format!("cmdline-{path}"),
            ))
            .await?;
        if served.record.size > MAX_CMDLINE {
            return Err(AssetError::CmdlineTooLarge(served.record.size));
        }
        let bytes: Vec<u8> = self
            .open(&served, None)?
            .into_stream()
            .try_fold(Vec::new(), |mut acc, chunk| async move {
                acc.extend_from_slice(&chunk);
                Ok(acc)
            })
            .await
            .map_err(|source| AssetError::Io {
                context: "reading the cmdline asset".into(),
                source,
            })?;
        let version = Version::parse_strict(version)
            .ok_or_else(|| AssetError::InvalidVersion(version.to_string()))?;
        let profile = parse_pxe_path(path, &version)?;
        Ok(PxeBoot {
            schematic_id: schematic_id.to_string(),
            version_tag: version.tag(),
            files: pxe_boot_assets(&profile),
            cmdline: String::from_utf8_lossy(&bytes).into_owned(),
            outcome: served.outcome,
        })
    }
}
