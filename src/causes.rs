//! An error shown with its cause chain, so an operator reads why, not only what.
//!
//! `{}` prints one cause per line (`caused by: …`, for the command line); `{:#}` prints them on
//! one line (for logs and JSON). A cause whose text its parent already quotes is skipped, so
//! errors whose message embeds their source do not print it twice.

use std::error::Error;
use std::fmt;

/// Formats an error and its `source()` chain.
pub struct Causes<'a>(pub &'a (dyn Error + 'static));

impl Causes<'_> {
    /// The texts of the error and of each cause its parent does not already quote.
    pub fn texts(&self) -> Vec<String> {
        let mut out = vec![self.0.to_string()];
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            let quoted = out.last().is_some_and(|parent| parent.contains(&text));
            if !quoted && !text.is_empty() {
                out.push(text);
            }
            next = cause.source();
        }
        out
    }
}

/// Whether `e` or any of its causes is the filesystem running out of space (`ENOSPC`, or an
/// I/O error of kind `StorageFull`).
pub fn is_no_space(e: &(dyn Error + 'static)) -> bool {
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.raw_os_error() == Some(libc::ENOSPC))
        {
            return true;
        }
        next = cause.source();
    }
    false
}

/// The first error of type `T` in `e`'s chain, looking also inside I/O errors that wrap one
/// (an `io::Error`'s own `source()` skips the error it wraps).
pub fn find<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(cause) = next {
        if let Some(t) = cause.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(t) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<T>())
        {
            return Some(t);
        }
        next = cause.source();
    }
    None
}

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if f.alternate() {
            ": caused by: "
        } else {
            "\n  caused by: "
        };
        let texts = self.texts();
        f.write_str(&texts.join(sep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("building metal-amd64.iso failed")]
    struct Build(#[source] Tool);

    #[derive(Debug, thiserror::Error)]
    #[error("xorriso failed: {0}")]
    struct Tool(#[source] std::io::Error);

    #[test]
    fn prints_each_new_cause_once() {
        let e = Build(Tool(std::io::Error::other("No space left on device")));
        assert_eq!(
            Causes(&e).to_string(),
            "building metal-amd64.iso failed\n  caused by: xorriso failed: No space left on device"
        );
        assert_eq!(
            format!("{:#}", Causes(&e)),
            "building metal-amd64.iso failed: caused by: xorriso failed: No space left on device"
        );
    }

    #[test]
    fn no_space_is_found_anywhere_in_the_chain() {
        let full = Build(Tool(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_no_space(&full));
        let other = Build(Tool(std::io::Error::other("EIO")));
        assert!(!is_no_space(&other));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("blob {0} is damaged")]
    struct Damage(u32);

    #[test]
    fn find_looks_inside_wrapping_io_errors() {
        let e = Build(Tool(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Damage(7),
        )));
        assert_eq!(find::<Damage>(&e).map(|d| d.0), Some(7));
        let other = Build(Tool(std::io::Error::other("EIO")));
        assert!(find::<Damage>(&other).is_none());
    }

    #[test]
    fn an_error_without_causes_is_its_own_text() {
        let e = std::io::Error::other("plain");
        assert_eq!(Causes(&e).to_string(), "plain");
    }
}
