//! The Builder's Secure Boot parts shared by ISOs, disk images and installers: systemd-boot
//! signed with the UKI signing key, and the enrolment material a medium carries (imager spec
//! §5.4, §6.3, §7.6). The UKI itself is signed in `write_uki`.

use std::path::{Path, PathBuf};

use crate::catalog::ArchRelease;
use crate::imager::boot::SecureBootFiles;
use crate::imager::error::ImagerError;
use crate::imager::profile::{OutputKind, Profile};
use crate::trust::secureboot::authenticode;
use crate::trust::secureboot::enroll::enrolment_files;

use super::{Builder, asset};

impl Builder {
    /// The release's systemd-boot; for a Secure Boot profile a copy under `dir` signed with
    /// the UKI signing key.
    pub(super) fn systemd_boot(
        &self,
        profile: &Profile,
        assets: &ArchRelease,
        dir: &Path,
    ) -> Result<PathBuf, ImagerError> {
        let release = self.input(asset(assets, "systemd-boot.efi")?)?;
        if !profile.secureboot {
            return Ok(release);
        }
        let keys = self
            .opts
            .secure_boot
            .as_ref()
            .ok_or(ImagerError::SecureBootDisabled)?;
        let signed = dir.join("systemd-boot.efi.signed");
        std::fs::copy(&release, &signed)?;
        authenticode::sign_file(&signed, keys)
            .map_err(ImagerError::internal("sign systemd-boot"))?;
        Ok(signed)
    }

    /// The enrolment material of a Secure Boot profile's medium (`None` otherwise), with the
    /// `secure-boot-enroll` mode of the ISO or disk-image options. The
    /// authenticated variables are timestamped with the certificate's start of validity: the
    /// same keys give the same bytes (upstream uses the build time).
    pub(super) fn secure_boot_files(
        &self,
        profile: &Profile,
    ) -> Result<Option<SecureBootFiles>, ImagerError> {
        if !profile.secureboot {
            return Ok(None);
        }
        let keys = self
            .opts
            .secure_boot
            .as_ref()
            .ok_or(ImagerError::SecureBootDisabled)?;
        let auth = enrolment_files(keys, keys.not_before().max(0) as u64)
            .map_err(ImagerError::internal("secure boot enrolment files"))?
            .into_iter()
            .map(|f| (f.name.to_string(), f.bytes))
            .collect();
        let enroll = match profile.output.kind {
            OutputKind::Image => profile
                .output
                .image_options
                .as_ref()
                .map(|o| o.sd_boot_enroll_keys),
            _ => profile
                .output
                .iso_options
                .as_ref()
                .map(|o| o.sd_boot_enroll_keys),
        }
        .unwrap_or_default();
        Ok(Some(SecureBootFiles {
            cert_der: keys.certificate_der().to_vec(),
            auth,
            enroll: enroll.as_str(),
        }))
    }
}
