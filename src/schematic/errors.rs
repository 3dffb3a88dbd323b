//! Construct errors collected while decoding, in document order. The list is capped so that a
//! hostile document cannot make the report (or the work to build it) grow without bound; errors
//! past the cap are only counted and reported as "and K more".

/// Most errors a report lists.
const MAX_LISTED: usize = 100;
/// Listing stops once the listed errors hold this many bytes.
const MAX_LISTED_BYTES: usize = 64 << 10;

/// The errors of one decoded document.
#[derive(Default)]
pub(super) struct Errors {
    listed: Vec<String>,
    bytes: usize,
    unlisted: u64,
}

impl Errors {
    /// Whether further errors are only counted.
    pub(super) fn full(&self) -> bool {
        self.listed.len() >= MAX_LISTED || self.bytes >= MAX_LISTED_BYTES
    }

    /// Records an error.
    pub(super) fn push(&mut self, msg: String) {
        if self.full() {
            self.unlisted = self.unlisted.saturating_add(1);
        } else {
            self.bytes += msg.len();
            self.listed.push(msg);
        }
    }

    /// Records `n` errors without their text (the caller stopped building them once full).
    pub(super) fn count_unlisted(&mut self, n: u64) {
        self.unlisted = self.unlisted.saturating_add(n);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.unlisted == 0
    }

    /// The report, as go-yaml v4 words it: the errors joined on one line.
    pub(super) fn report(&self) -> String {
        let mut msg = format!("yaml: construct errors: {}", self.listed.join("; "));
        if self.unlisted > 0 {
            msg.push_str(&format!("; and {} more", self.unlisted));
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_up_to_the_cap_then_counts() {
        let mut e = Errors::default();
        for i in 0..MAX_LISTED + 5 {
            e.push(format!("line {i}: x"));
        }
        e.count_unlisted(10);
        let report = e.report();
        assert!(report.starts_with("yaml: construct errors: line 0: x; line 1: x; "));
        assert!(report.ends_with("; line 99: x; and 15 more"), "{report}");
    }

    #[test]
    fn long_errors_stop_the_list_early() {
        let mut e = Errors::default();
        e.push("a".repeat(MAX_LISTED_BYTES));
        e.push("b".into());
        assert!(e.report().ends_with("a; and 1 more"));
    }

    #[test]
    fn a_short_list_is_reported_whole() {
        let mut e = Errors::default();
        assert!(e.is_empty());
        e.push("line 1: x".into());
        e.push("line 2: y".into());
        assert_eq!(e.report(), "yaml: construct errors: line 1: x; line 2: y");
    }
}
