//! The `talosctl` binaries of a release: its `talosctl-all` image, imported with the release
//! when the source holds it (Talos 1.11.0-alpha.3 and later), verified like every other image,
//! and its `talosctl-<os>-<arch>[.exe]` files kept as blobs for `/talosctl/<version>/<file>`.

use std::collections::BTreeMap;

use crate::oci::ImageSource;
use crate::oci::flatten::regular_files;

use super::import::{IMAGER_PLATFORM, ImportOptions, Importer, Wanted};
use super::release::{TalosctlRelease, is_talosctl_name};
use super::{CatalogError, Version};

/// The first Talos version whose release has a `talosctl-all` image.
pub const FIRST_TALOSCTL_ALL: &str = "1.11.0-alpha.3";

/// Whether releases of `version` have a `talosctl-all` image.
pub fn has_talosctl_all(version: &Version) -> bool {
    Version::parse_strict(FIRST_TALOSCTL_ALL).is_some_and(|first| *version >= first)
}

impl<S: ImageSource> Importer<'_, S> {
    /// Imports `talosctl-all` for the release, or nothing when the version predates it or the
    /// source does not hold it (an image that is there but fails verification fails the import).
    pub(super) async fn talosctl(
        &mut self,
        opts: &ImportOptions,
        wanted: Wanted,
    ) -> Result<Option<TalosctlRelease>, CatalogError> {
        if !has_talosctl_all(&opts.version) {
            return Ok(None);
        }
        let tag = opts.version.tag();
        self.progress().step(&format!("reading talosctl-all {tag}"));
        let planned = match self.plan(wanted, IMAGER_PLATFORM).await {
            Ok(p) => p,
            Err(CatalogError::ImageNotFound { image, source_name }) => {
                self.progress().step(&format!(
                    "{image} is not in {source_name}: /talosctl/{tag} will list no binaries"
                ));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let image = self.store(&planned).await?;
        self.commit_pending().await?;
        let extracted = self.extract(&planned, Vec::new()).await?;
        let files: Vec<_> = regular_files(extracted.path(), "")?
            .unwrap_or_default()
            .into_iter()
            .filter(|f| is_talosctl_name(&f.rel))
            .collect();
        let files: BTreeMap<_, _> = self.store_files(files)?;
        if files.is_empty() {
            return Err(CatalogError::Catalog(format!(
                "{} holds no talosctl-<os>-<arch> binary at its root",
                planned.reference
            )));
        }
        tokio::task::spawn_blocking(move || drop(extracted));
        Ok(Some(TalosctlRelease { image, files }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::release::is_talosctl_name;

    #[test]
    fn binary_names_and_versions() {
        for ok in [
            "talosctl-linux-amd64",
            "talosctl-darwin-arm64",
            "talosctl-linux-armv7",
            "talosctl-windows-amd64.exe",
        ] {
            assert!(is_talosctl_name(ok), "{ok}");
        }
        for bad in [
            "talosctl",
            "talosctl-linux",
            "talosctl-linux-amd64-extra",
            "talosctl-linux-",
            "talosctl-../x-y",
            "usr/bin/talosctl-linux-amd64",
            "kubectl-linux-amd64",
        ] {
            assert!(!is_talosctl_name(bad), "{bad}");
        }
        let v = |s: &str| Version::parse_strict(s).unwrap();
        assert!(!has_talosctl_all(&v("1.10.5")));
        assert!(!has_talosctl_all(&v("1.11.0-alpha.2")));
        assert!(has_talosctl_all(&v("1.11.0-alpha.3")));
        assert!(has_talosctl_all(&v("1.11.0")));
    }
}
