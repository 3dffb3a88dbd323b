//! The netboot layer's error type.

use std::path::PathBuf;

use super::assignment::Source;
use crate::store::StoreError;

/// Errors of machine assignments and boot records.
#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    /// An assignment name that is not one.
    #[error(
        "invalid assignment name {name:?}: 1 to 63 characters of letters, digits, '.', '_' and \
         '-', starting with a letter or digit"
    )]
    InvalidName {
        /// The name as given (cut at 64 characters).
        name: String,
    },
    /// An assignment that does not check.
    #[error("assignment {name}: {reason}")]
    Invalid {
        /// The assignment's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An assignment naming a schematic this appliance does not have.
    #[error(
        "assignment {name}: schematic {schematic} is not stored on this appliance (create it \
         first: POST /schematics or `image-factory schematic create`)"
    )]
    UnknownSchematic {
        /// The assignment's name.
        name: String,
        /// The schematic ID.
        schematic: String,
    },
    /// Two assignments could match one machine with equal specificity.
    #[error(
        "assignment {name} ({selector}) ties with {other_source} assignment {other} \
         ({other_selector}): one machine could match both with equal specificity; name a \
         field more in one of them, or remove the other"
    )]
    Tie {
        /// The assignment being written.
        name: String,
        /// Its selector.
        selector: String,
        /// The assignment it ties with.
        other: String,
        /// That one's selector.
        other_selector: String,
        /// Where that one comes from.
        other_source: Source,
    },
    /// The name belongs to an assignment of the other source.
    #[error("assignment {name} comes from {}; {}", origin(.source_of), remedy(.source_of))]
    NameTaken {
        /// The name.
        name: String,
        /// Where the assignment holding it comes from.
        source_of: Source,
    },
    /// No assignment of that name.
    #[error("no assignment named {name}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The assignment budget is spent.
    #[error("at most {max} assignments are kept (admin API and machines file together)")]
    TooMany {
        /// The budget.
        max: usize,
    },
    /// The machines file could not be read or does not check; nothing of it was applied.
    #[error("machines file {path} refused")]
    File {
        /// The file (`netboot.machinesFile`).
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<NetbootError>,
    },
    /// Reading the machines file failed.
    #[error("cannot read it")]
    FileRead(#[source] std::io::Error),
    /// The machines file is larger than its budget.
    #[error("it is larger than {max} bytes")]
    FileTooLarge {
        /// The budget.
        max: u64,
    },
    /// The machines file is not the expected YAML.
    #[error("it is not a machines file")]
    FileSyntax(#[source] serde_yaml::Error),
    /// The reload was asked for but no machines file is configured.
    #[error("no machines file is configured (netboot.machinesFile)")]
    NoFile,
    /// A stored assignment or boot record does not decode.
    #[error("stored {what} {key:?} does not decode")]
    Corrupt {
        /// What kind of record.
        what: &'static str,
        /// Its key.
        key: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where assignments of `source` are kept, for messages.
fn origin(source: &Source) -> &'static str {
    match source {
        Source::File => "netboot.machinesFile",
        Source::Api => "the admin API",
    }
}

/// How an assignment of `source` is changed, for messages.
fn remedy(source: &Source) -> &'static str {
    match source {
        Source::File => "edit the file and reload it (SIGHUP or `image-factory machines reload`)",
        Source::Api => "remove it with `image-factory machines rm` first, or use another name",
    }
}

impl NetbootError {
    /// Whether the request (or file) is at fault, not the appliance.
    pub fn is_invalid(&self) -> bool {
        match self {
            NetbootError::File { source, .. } => source.is_invalid(),
            NetbootError::Store(_) | NetbootError::Corrupt { .. } => false,
            _ => true,
        }
    }
}
