//! An I/O error together with what was being done: the one `Io` cause the layers' error enums
//! wrap (`#[from]`), so a failure keeps both the step and the operating-system error.

use std::io;

/// An I/O failure and the step that hit it (`open /data/blobs/ab/…: No such file or directory`).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct IoContext {
    /// What was being done.
    pub context: String,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl IoContext {
    /// `source`, hit while doing `context`.
    pub fn new(context: impl Into<String>, source: io::Error) -> IoContext {
        IoContext {
            context: context.into(),
            source,
        }
    }
}

/// `map_err` helper: attaches `context` to an I/O error (`?` then converts it into the layer's
/// error).
pub fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> IoContext {
    let context = context.into();
    move |source| IoContext { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_context_and_cause() {
        let e = io_err("open x")(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "open x: entity not found");
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("entity not found"));
    }
}
