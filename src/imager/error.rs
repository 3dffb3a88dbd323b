//! The one error type of the imager layer, carrying upstream's message texts.
//!
//! Messages are the exact upstream texts where upstream has one (Go `%q` quoting included); the
//! HTTP layer adds the upstream prefixes (`error parsing profile from path: ` for path errors,
//! `error enhancing profile from schematic: ` for schematic errors) and maps each
//! [`ErrorKind`] to a status code in one place, `frontend/http/error.rs` (api spec §1.2, §3.5).

use crate::gocompat::quote as go_quote;
use crate::io_context::IoContext;

/// What an imager error says about the request that caused it (the frontends decide how to
/// answer each kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request (its asset path, or its schematic for the requested version) is invalid.
    InvalidRequest,
    /// Something the request names (a version, an extension's image) is not on this appliance.
    MissingInput,
    /// A valid request this appliance does not build (yet).
    NotSupported,
    /// The build failed: the appliance's own failure, or a profile the imager only rejects
    /// while building (as upstream's imager does).
    Internal,
}

/// Errors of the imager layer (paths, profiles, quirks, command lines, META, builds).
#[derive(Debug, thiserror::Error)]
pub enum ImagerError {
    /// The asset path matches no rule (or has no disk format); carries the path as upstream
    /// quotes it (minus any recognised compression suffix).
    #[error("invalid profile path: {}", go_quote(.0))]
    InvalidPath(String),
    /// The architecture part is not `amd64`, `arm64`, `x86_64` or `i386`.
    #[error("invalid architecture: {}", go_quote(.0))]
    InvalidArch(String),
    /// The `<platform>-<arch>` part has no dash.
    #[error("invalid platform-arch: {}", go_quote(.0))]
    InvalidPlatformArch(String),
    /// An official extension of the schematic is not in the version's catalog.
    #[error("official extension {} is not available for Talos version {version}", go_quote(.name))]
    ExtensionNotAvailable {
        /// The name as written in the schematic.
        name: String,
        /// The version tag as requested (`v1.11.0`).
        version: String,
    },
    /// The extension is in the catalog but its image for the arch was not imported here.
    #[error("official extension {} for {arch} is not imported for Talos version {version}", go_quote(.name))]
    ExtensionNotImported {
        /// The catalog name (`siderolabs/<name>`).
        name: String,
        /// The architecture.
        arch: String,
        /// The version tag.
        version: String,
    },
    /// The schematic has an overlay but the target predates overlays (1.7).
    #[error("overlay is not supported for Talos version {version}")]
    OverlayNotSupported {
        /// The version tag.
        version: String,
    },
    /// The schematic's overlay is not in the version's overlay catalog.
    #[error("official overlay {} is not available for Talos version {version}", go_quote(.name))]
    OverlayNotAvailable {
        /// The overlay name from the schematic.
        name: String,
        /// The version tag.
        version: String,
    },
    /// The schematic selects an overlay (SBC) and the output (ISO, UKI, initramfs) would carry
    /// its kernel arguments, which this appliance only applies to disk images and installers;
    /// it refuses rather than build wrong bytes.
    #[error("overlay {} is not built into this output by this factory: overlays are built into disk images and installers only", go_quote(.name))]
    OverlayNotBuilt {
        /// The overlay name from the schematic.
        name: String,
    },
    /// The schematic embeds a machine configuration but the target predates 1.12.
    #[error("embedding configuration is not supported for Talos version {version}")]
    EmbeddedConfigNotSupported {
        /// The version tag.
        version: String,
    },
    /// A SecureBoot asset was requested but this appliance has no SecureBoot signing keys.
    #[error("secure boot is disabled")]
    SecureBootDisabled,
    /// `secureboot.enrollKeys` is not one of `off`, `manual`, `if-safe`, `force`.
    #[error("invalid secureboot enrollKeys value {}: {reason}", go_quote(.value))]
    InvalidEnrollKeys {
        /// The value from the schematic.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The schematic's bootloader cannot boot this architecture: dual-boot adds GRUB for BIOS,
    /// which arm64 machines do not have, and Talos' dual-boot installer puts later upgrades in
    /// GRUB's configuration, where they would never take effect.
    #[error(
        "{bootloader} bootloader is not supported for {arch}: it adds GRUB for BIOS boot, which {arch} machines do not have; use sd-boot (the {arch} default) or grub"
    )]
    BootloaderNotSupported {
        /// The bootloader from the schematic.
        bootloader: &'static str,
        /// The architecture.
        arch: &'static str,
    },
    /// The sandbox overlay installers run in cannot be set up here, so the installer was not
    /// run (it never runs unsandboxed).
    #[error(
        "overlay {}: the sandbox for its installer cannot be set up ({reason}); overlay installers only run sandboxed (bubblewrap with user namespaces, see the operator guide)",
        go_quote(.name)
    )]
    OverlaySandbox {
        /// The overlay name.
        name: String,
        /// What failed.
        reason: String,
        /// The underlying failure, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The overlay's installer failed, ran past its deadline or was killed.
    #[error("overlay {}: {source}", go_quote(.name))]
    OverlayInstaller {
        /// The overlay name.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The overlay image or what its installer answered is unusable.
    #[error("overlay {}: {message}", go_quote(.name))]
    OverlayImage {
        /// The overlay name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The target is older than what this appliance builds (see [`crate::imager::quirks`]).
    #[error("unsupported Talos version {0}: this appliance builds Talos 1.8 and later")]
    UnsupportedVersion(String),
    /// The platform name is not one the Talos imager knows.
    #[error("unknown platform: {}", go_quote(.0))]
    UnknownPlatform(String),
    /// The version is not imported on this appliance.
    #[error("version {0} is not available")]
    VersionNotAvailable(String),
    /// The profile failed validation (imager spec §1.3); upstream fails inside the imager (500).
    #[error("{0}")]
    Validation(String),
    /// An `INSTALLER_META_BASE64` payload does not decode (base64, gzip or UTF-8).
    #[error("invalid META payload: {source}")]
    MetaPayload {
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The META values do not fit into the Talos ADV.
    #[error("META values need {needed} bytes, the ADV holds {capacity}")]
    MetaTooLarge {
        /// Bytes the entries need (values plus 8 bytes of header each).
        needed: usize,
        /// Usable bytes.
        capacity: usize,
    },
    /// An external tool failed, timed out or was killed.
    #[error(transparent)]
    Tool(#[from] super::tool::ToolError),
    /// The build was stopped from outside (it ran past its deadline).
    #[error("the build was cancelled")]
    Cancelled,
    /// Reading or writing files failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The blob store refused or failed (e.g. a record naming something that is no blob).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A release blob the build reads failed verification; nothing was built from it (the
    /// asset layer marks the release damaged).
    #[error(
        "an input of the release failed verification: the build was refused and the release \
         is marked damaged until it is imported again"
    )]
    DamagedInput(#[source] crate::store::BlobDamage),
    /// The release is marked damaged (one of its blobs failed verification) until it is
    /// imported again.
    #[error(
        "release {version} is damaged: blob {} failed verification ({}); import the release again",
        .damage.blob, .damage.reason
    )]
    ReleaseDamaged {
        /// The version tag.
        version: String,
        /// The mark.
        damage: crate::catalog::Damage,
    },
    /// Reading or writing files failed at a named step.
    #[error(transparent)]
    IoContext(#[from] IoContext),
    /// A step of the build failed because a layer below it did (a store, an encoder, the
    /// initramfs or installer builder).
    #[error("{context}: {source}")]
    Internal {
        /// The step.
        context: &'static str,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The build met something it does not expect of its own steps or of the release's files
    /// (a missing partition, a GRUB image of the wrong size, a tool's output of the wrong
    /// form).
    #[error("{0}")]
    Inconsistent(String),
}

impl ImagerError {
    /// Maps the failure of build step `context` (for `map_err`).
    pub(crate) fn internal<E>(context: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| ImagerError::Internal {
            context,
            source: Box::new(source),
        }
    }

    /// What the error says about the request.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImagerError::InvalidPath(_)
            | ImagerError::InvalidArch(_)
            | ImagerError::InvalidPlatformArch(_)
            | ImagerError::ExtensionNotAvailable { .. }
            | ImagerError::OverlayNotSupported { .. }
            | ImagerError::OverlayNotAvailable { .. }
            | ImagerError::EmbeddedConfigNotSupported { .. }
            | ImagerError::SecureBootDisabled
            | ImagerError::InvalidEnrollKeys { .. }
            | ImagerError::BootloaderNotSupported { .. }
            | ImagerError::UnsupportedVersion(_) => ErrorKind::InvalidRequest,
            ImagerError::VersionNotAvailable(_) | ImagerError::ExtensionNotImported { .. } => {
                ErrorKind::MissingInput
            }
            ImagerError::OverlayNotBuilt { .. } => ErrorKind::NotSupported,
            ImagerError::UnknownPlatform(_)
            | ImagerError::Validation(_)
            | ImagerError::MetaTooLarge { .. }
            | ImagerError::MetaPayload { .. }
            | ImagerError::Io(_)
            | ImagerError::IoContext(_)
            | ImagerError::Store(_)
            | ImagerError::Cancelled
            | ImagerError::Tool(_)
            | ImagerError::DamagedInput(_)
            | ImagerError::ReleaseDamaged { .. }
            | ImagerError::Internal { .. }
            | ImagerError::Inconsistent(_)
            | ImagerError::OverlaySandbox { .. }
            | ImagerError::OverlayInstaller { .. }
            | ImagerError::OverlayImage { .. } => ErrorKind::Internal,
        }
    }

    /// Whether the failure is the appliance's, not the request's (worth retrying later).
    pub fn is_internal(&self) -> bool {
        self.kind() == ErrorKind::Internal
    }

    /// Whether this error came from parsing the asset path (upstream prefixes these with
    /// `error parsing profile from path: `).
    pub fn is_path_error(&self) -> bool {
        matches!(
            self,
            ImagerError::InvalidPath(_)
                | ImagerError::InvalidArch(_)
                | ImagerError::InvalidPlatformArch(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_upstream() {
        assert_eq!(
            ImagerError::InvalidPath("metal-amd64.ssd".into()).to_string(),
            r#"invalid profile path: "metal-amd64.ssd""#
        );
        assert_eq!(
            ImagerError::InvalidArch("rpi_generic-arm64".into()).to_string(),
            r#"invalid architecture: "rpi_generic-arm64""#
        );
        assert_eq!(
            ImagerError::InvalidPlatformArch("metal".into()).to_string(),
            r#"invalid platform-arch: "metal""#
        );
        assert_eq!(
            ImagerError::ExtensionNotAvailable {
                name: "siderolabs/cni-plugins".into(),
                version: "v1.12.6".into()
            }
            .to_string(),
            r#"official extension "siderolabs/cni-plugins" is not available for Talos version v1.12.6"#
        );
        assert_eq!(
            ImagerError::EmbeddedConfigNotSupported {
                version: "v1.11.0".into()
            }
            .to_string(),
            "embedding configuration is not supported for Talos version v1.11.0"
        );
        assert_eq!(
            ImagerError::OverlayNotSupported {
                version: "v1.6.0".into()
            }
            .to_string(),
            "overlay is not supported for Talos version v1.6.0"
        );
        assert_eq!(
            ImagerError::SecureBootDisabled.to_string(),
            "secure boot is disabled"
        );
        assert_eq!(
            ImagerError::OverlayNotBuilt {
                name: "rpi_generic".into()
            }
            .to_string(),
            r#"overlay "rpi_generic" is not built into this output by this factory: overlays are built into disk images and installers only"#
        );
        assert_eq!(
            ImagerError::UnsupportedVersion("v1.7.0".into()).to_string(),
            "unsupported Talos version v1.7.0: this appliance builds Talos 1.8 and later"
        );
    }

    #[test]
    fn kinds() {
        assert_eq!(
            ImagerError::InvalidPath(String::new()).kind(),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            ImagerError::OverlayNotBuilt {
                name: "rpi_generic".into()
            }
            .kind(),
            ErrorKind::NotSupported
        );
        assert_eq!(
            ImagerError::SecureBootDisabled.kind(),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            ImagerError::VersionNotAvailable("1.99.0".into()).kind(),
            ErrorKind::MissingInput
        );
        assert_eq!(
            ImagerError::UnknownPlatform("foo".into()).kind(),
            ErrorKind::Internal
        );
        assert!(ImagerError::InvalidArch(String::new()).is_path_error());
        assert!(!ImagerError::SecureBootDisabled.is_path_error());
    }

    #[test]
    fn internal_failures_keep_their_cause() {
        let no_space = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = ImagerError::internal("store ISO")(no_space);
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.to_string().starts_with("store ISO: "), "{e}");
        let cause = std::error::Error::source(&e).expect("a cause");
        assert!(
            cause.downcast_ref::<std::io::Error>().is_some(),
            "{cause:?}"
        );
        assert!(crate::causes::is_no_space(&e));
    }
}
