//! `image-factory keys secureboot generate --out DIR`: a new site's Secure Boot keys under
//! upstream's file names (`uki-signing-key.pem`, `uki-signing-cert.pem`,
//! `pcr-signing-key.pem`), ready for `secureBoot.file.*`, and the enrolment files `PK.auth`,
//! `KEK.auth`, `db.auth` (the certificate as PK, KEK and db, self-signed).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::error::{CliError, finish};
use crate::trust::secureboot::enroll::enrolment_files;
use crate::trust::secureboot::keys::{GENERATED_KEY_SIZE, GENERATED_VALIDITY_SECS};
use crate::trust::secureboot::{SecureBootKeys, generate};

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Secure Boot keys.
    #[command(subcommand)]
    Secureboot(SecurebootCommand),
}

/// `keys secureboot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecurebootCommand {
    /// Generate RSA 4096 UKI and PCR signing keys, a self-signed certificate (10 years) and
    /// its PK/KEK/db enrolment files.
    Generate(GenerateArgs),
}

/// Flags of `keys secureboot generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write the three files into (created; existing key files are never
    /// overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The certificate's common name (shown by firmware key managers).
    #[arg(long, default_value = "Image Factory Secure Boot")]
    pub common_name: String,
}

/// Runs a `keys` command.
pub fn run(cmd: KeysCommand) -> ExitCode {
    match cmd {
        KeysCommand::Secureboot(SecurebootCommand::Generate(args)) => {
            finish("keys secureboot generate", generate_keys(&args))
        }
    }
}

fn generate_keys(args: &GenerateArgs) -> Result<(), CliError> {
    if args.common_name.is_empty() || args.common_name.len() > 64 {
        return Err(CliError::Usage(
            "--common-name must be 1 to 64 characters (X.520 ub-common-name)".into(),
        ));
    }
    let now = crate::clock::now_secs();
    let files = generate(&args.out, &args.common_name, GENERATED_KEY_SIZE, now)?;
    // Read back through the same checks the appliance makes at start.
    let keys = SecureBootKeys::load(&files.paths, now)?;
    for f in enrolment_files(&keys, now)? {
        let path = args.out.join(f.name);
        if path.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists: refusing to overwrite enrolment files",
                path.display()
            )));
        }
        std::fs::write(&path, &f.bytes).map_err(|source| CliError::Io {
            context: format!("cannot write {}", path.display()),
            source,
        })?;
    }
    let p = &files.paths;
    println!("secureBoot:");
    println!("  enabled: true");
    println!("  file:");
    println!("    signingKeyPath: {}", p.signing_key.display());
    println!("    signingCertPath: {}", p.signing_cert.display());
    println!("    pcrKeyPath: {}", p.pcr_key.display());
    eprintln!(
        "certificate SHA-256 {} valid until {}; enrol {} in the machines' db (docs/operator-guide.md, Secure Boot)",
        files.fingerprint,
        crate::clock::rfc3339_utc(now + GENERATED_VALIDITY_SECS),
        p.signing_cert.display()
    );
    Ok(())
}
