//! The extension and overlay catalogs of a release import: the catalog images read (and kept),
//! their `image-digests`, `descriptions.yaml` and `overlays.yaml` parsed, and the selected
//! extension and overlay images planned and stored.

use std::collections::BTreeMap;

use crate::oci::ImageSource;
use crate::oci::flatten::{LayerOpener, read_file};

use super::CatalogError;
use super::files::{parse_descriptions, parse_image_digests, parse_overlays};
use super::import::{
    IMAGER_PLATFORM, ImportOptions, Importer, MAX_CATALOG_FILE, Planned, Selection, Wanted, names,
};
use super::names::Arch;
use super::release::{ExtensionEntry, ImageRecord, OverlayEntry};

impl<S: ImageSource> Importer<'_, S> {
    pub(super) async fn catalog_file(
        &self,
        image: &Planned,
        path: &str,
    ) -> Result<Option<String>, CatalogError> {
        let layers = image.manifest.layers.clone();
        let blobs = self.blobs.clone();
        let wanted = path.to_string();
        let bytes = tokio::task::spawn_blocking(move || {
            let mut open = super::import::stored_layer_opener(blobs);
            read_file(
                &layers,
                &mut open as &mut LayerOpener<'_>,
                &wanted,
                MAX_CATALOG_FILE,
            )
        })
        .await
        .map_err(CatalogError::task("catalog read task"))??;
        bytes
            .map(|b| String::from_utf8(b).map_err(CatalogError::file(path)))
            .transpose()
    }

    /// Imports the extension catalog and the selected extension images.
    pub(super) async fn extensions(
        &mut self,
        opts: &ImportOptions,
        catalog: Wanted,
        arches: &[Arch],
    ) -> Result<(Vec<ExtensionEntry>, bool), CatalogError> {
        let reference = catalog.reference.clone();
        let catalog = self.plan(catalog, IMAGER_PLATFORM).await?;
        let record = self.store(&catalog).await?;
        self.catalogs.push(record);
        self.commit_pending().await?;
        let digests = self
            .catalog_file(&catalog, "image-digests")
            .await?
            .ok_or_else(|| {
                CatalogError::Catalog(format!("{reference} has no image-digests file"))
            })?;
        let lines = parse_image_digests(&digests)?;
        let descriptions = match self.catalog_file(&catalog, "descriptions.yaml").await? {
            Some(text) => parse_descriptions(&text)?,
            None => BTreeMap::new(),
        };
        if let Selection::Only(list) = &opts.extensions {
            for w in list {
                let known = lines.iter().any(|l| names(w, l.name()));
                if !known {
                    return Err(CatalogError::Catalog(format!(
                        "extension {w:?} is not in the {} catalog",
                        opts.version.tag()
                    )));
                }
            }
        }
        // Verify and resolve every wanted image first, then transfer all their blobs together.
        let mut planned = Vec::new();
        let mut wanted = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if !opts.extensions.wants(line.name()) {
                continue;
            }
            let r = Wanted::new(&opts.registry, line.name(), &format!("@{}", line.digest()))?;
            for arch in arches {
                self.progress
                    .step(&format!("reading extension {} ({arch})", line.name()));
                planned.push(self.plan(r.clone(), *arch).await?);
                wanted.push((i, *arch));
            }
        }
        self.progress.step(&format!(
            "transferring {} extension image(s)",
            planned.len()
        ));
        let mut stored: BTreeMap<(usize, Arch), ImageRecord> = wanted
            .into_iter()
            .zip(self.store_all(&planned).await?)
            .collect();
        let mut out = Vec::new();
        let mut partial = false;
        for (i, line) in lines.iter().enumerate() {
            let desc = descriptions.get(&line.line).cloned().unwrap_or_default();
            let mut images = BTreeMap::new();
            if opts.extensions.wants(line.name()) {
                for arch in arches {
                    if let Some(record) = stored.remove(&(i, *arch)) {
                        images.insert(*arch, record);
                    }
                }
            } else {
                partial = true;
            }
            out.push(ExtensionEntry {
                name: line.name().to_string(),
                reference: line.tagged(),
                digest: line.digest().clone(),
                author: desc.author,
                description: desc.description,
                images,
            });
        }
        Ok((out, partial))
    }

    /// Imports the overlay catalog and the overlay images available for the architectures.
    pub(super) async fn overlays(
        &mut self,
        opts: &ImportOptions,
        catalog: Wanted,
        arches: &[Arch],
    ) -> Result<(Vec<OverlayEntry>, bool), CatalogError> {
        let catalog = self.plan(catalog, IMAGER_PLATFORM).await?;
        let record = self.store(&catalog).await?;
        self.catalogs.push(record);
        self.commit_pending().await?;
        let Some(text) = self.catalog_file(&catalog, "overlays.yaml").await? else {
            return Ok((Vec::new(), false));
        };
        let mut out = Vec::new();
        let mut partial = false;
        for line in parse_overlays(&text)? {
            let upstream = line.reference()?;
            let r = Wanted::new(
                &opts.registry,
                &upstream.repository,
                &format!("@{}", line.digest),
            )?;
            let mut images = BTreeMap::new();
            for arch in arches {
                self.progress
                    .step(&format!("reading overlay {} ({arch})", line.name));
                match self.plan(r.clone(), *arch).await {
                    Ok(planned) => {
                        images.insert(*arch, self.store(&planned).await?);
                    }
                    // Overlay images exist only for the boards' architectures.
                    Err(CatalogError::ImageNotFound { .. }) => partial = true,
                    Err(e) => return Err(e),
                }
            }
            out.push(OverlayEntry {
                name: line.name.clone(),
                image: upstream.repository.clone(),
                reference: line.image.clone(),
                digest: line.digest.clone(),
                images,
            });
        }
        Ok((out, partial))
    }
}
