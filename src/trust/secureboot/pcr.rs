//! TPM PCR 11 prediction for a UKI and the signed `.pcrsig` policy (imager spec §7.3), as
//! `systemd-measure sign --phase=enter-initrd:leave-initrd:enter-machined` computes them: each
//! measured section extends PCR 11 with its name and content, then the boot phases follow;
//! the PolicyPCR digest over the final value is signed with the PCR key for every bank.

use std::io::Read;

use aws_lc_rs::digest::{self, Context};
use aws_lc_rs::signature::{self, RsaEncoding};
use base64::Engine as _;

use super::SecureBootError;
use super::keys::SecureBootKeys;

/// The order in which systemd-stub measures UKI sections into PCR 11.
pub const MEASURED_ORDER: [&str; 13] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".pcrpkey", ".profile", ".dtbauto", ".hwids",
];

/// The boot phases Talos extends PCR 11 with; the value after the last is the one signed.
pub const PHASES: [&str; 3] = ["enter-initrd", "leave-initrd", "enter-machined"];

/// The PCR index.
pub const PCR: u32 = 11;

/// A TPM PCR bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bank {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Bank {
    /// Every bank `.pcrsig` carries, in its JSON order.
    pub const ALL: [Bank; 3] = [Bank::Sha256, Bank::Sha384, Bank::Sha512];

    /// The JSON key (`sha256`, …).
    pub fn name(self) -> &'static str {
        match self {
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
            Bank::Sha512 => "sha512",
        }
    }

    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Bank::Sha256 => &digest::SHA256,
            Bank::Sha384 => &digest::SHA384,
            Bank::Sha512 => &digest::SHA512,
        }
    }

    /// `TPM_ALG_ID` of the bank's hash.
    fn tpm_alg(self) -> u16 {
        match self {
            Bank::Sha256 => 0x000B,
            Bank::Sha384 => 0x000C,
            Bank::Sha512 => 0x000D,
        }
    }

    fn rsa(self) -> &'static dyn RsaEncoding {
        match self {
            Bank::Sha256 => &signature::RSA_PKCS1_SHA256,
            Bank::Sha384 => &signature::RSA_PKCS1_SHA384,
            Bank::Sha512 => &signature::RSA_PKCS1_SHA512,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut c = Context::new(self.algorithm());
        for p in parts {
            c.update(p);
        }
        c.finish().as_ref().to_vec()
    }
}

/// One section's name and the digest of its content in every bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionDigest {
    /// Section name (`.linux`, …).
    pub name: String,
    digests: [Vec<u8>; 3],
}

impl SectionDigest {
    /// The digests of in-memory `bytes`.
    pub fn of_bytes(name: &str, bytes: &[u8]) -> Self {
        SectionDigest {
            name: name.to_string(),
            digests: Bank::ALL.map(|b| b.hash(&[bytes])),
        }
    }

    /// The digests of everything `reader` yields (streamed once for all banks).
    pub fn of_reader(name: &str, mut reader: impl Read) -> std::io::Result<Self> {
        let mut contexts = Bank::ALL.map(|b| Context::new(b.algorithm()));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for c in &mut contexts {
                c.update(&buf[..n]);
            }
        }
        Ok(SectionDigest {
            name: name.to_string(),
            digests: contexts.map(|c| c.finish().as_ref().to_vec()),
        })
    }

    /// The digest in `bank`.
    pub fn digest(&self, bank: Bank) -> &[u8] {
        &self.digests[bank.index()]
    }
}

/// The PCR 11 value after the last boot phase, for the UKI sections `sections` (any order;
/// sections not in [`MEASURED_ORDER`] are not measured; the first of a name counts).
pub fn predict(bank: Bank, sections: &[SectionDigest]) -> Vec<u8> {
    let mut pcr = vec![0u8; bank.algorithm().output_len()];
    let mut extend = |measurement: &[u8]| {
        pcr = bank.hash(&[&pcr, measurement]);
    };
    for name in MEASURED_ORDER {
        if let Some(s) = sections.iter().find(|s| s.name == name) {
            extend(&bank.hash(&[name.as_bytes(), &[0]]));
            extend(s.digest(bank));
        }
    }
    for phase in PHASES {
        extend(&bank.hash(&[phase.as_bytes()]));
    }
    pcr
}

/// The TPM2 PolicyPCR digest (SHA-256 session) authorising `pcr` as the value of PCR 11 in
/// `bank`.
pub fn policy_digest(bank: Bank, pcr: &[u8]) -> Vec<u8> {
    const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
    let mut selection = Vec::with_capacity(10);
    selection.extend_from_slice(&1u32.to_be_bytes());
    selection.extend_from_slice(&bank.tpm_alg().to_be_bytes());
    selection.extend_from_slice(&[3, 0, 0x08, 0]);
    let pcr_digest = Bank::Sha256.hash(&[pcr]);
    Bank::Sha256.hash(&[
        &[0u8; 32],
        &TPM_CC_POLICY_PCR.to_be_bytes(),
        &selection,
        &pcr_digest,
    ])
}

/// The `.pcrsig` section: compact JSON with, per bank, the PCR list, the PCR key's
/// fingerprint (SHA-256 of its PKCS#1 DER), the policy digest and its signature.
pub fn pcrsig(
    keys: &SecureBootKeys,
    sections: &[SectionDigest],
) -> Result<String, SecureBootError> {
    let pkfp = crate::sha256::hex_digest(keys.pcr_public_pkcs1());
    let mut out = serde_json::Map::new();
    for bank in Bank::ALL {
        let pol = policy_digest(bank, &predict(bank, sections));
        let sig = keys.sign_with_pcr_key(bank.rsa(), &pol)?;
        out.insert(
            bank.name().to_string(),
            serde_json::json!([{
                "pcrs": [PCR],
                "pkfp": pkfp,
                "pol": hex::encode(&pol),
                "sig": base64::engine::general_purpose::STANDARD.encode(sig),
            }]),
        );
    }
    Ok(serde_json::Value::Object(out).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmeasured_sections_and_order_do_not_matter_but_content_does() {
        let a = [
            SectionDigest::of_bytes(".linux", b"kernel"),
            SectionDigest::of_bytes(".osrel", b"NAME=x"),
        ];
        let b = [
            SectionDigest::of_bytes(".osrel", b"NAME=x"),
            SectionDigest::of_bytes(".text", b"code"),
            SectionDigest::of_bytes(".linux", b"kernel"),
        ];
        for bank in Bank::ALL {
            assert_eq!(predict(bank, &a), predict(bank, &b));
            let c = [SectionDigest::of_bytes(".linux", b"kernel2")];
            assert_ne!(predict(bank, &a), predict(bank, &c));
        }
        assert_eq!(predict(Bank::Sha384, &a).len(), 48);
        let streamed = SectionDigest::of_reader(".linux", &b"kernel"[..]).unwrap();
        assert_eq!(streamed, a[0]);
    }

    #[test]
    fn policy_digest_layout() {
        // Hand-assembled TPM2_PolicyPCR update from a zero policy.
        let pcr = vec![0xAB; 32];
        let mut expected = vec![0u8; 32];
        expected.extend_from_slice(&[0, 0, 1, 0x7F, 0, 0, 0, 1, 0, 0x0C, 3, 0, 8, 0]);
        expected.extend_from_slice(&crate::sha256::digest(&pcr));
        assert_eq!(
            policy_digest(Bank::Sha384, &pcr),
            crate::sha256::digest(&expected).to_vec()
        );
    }
}
