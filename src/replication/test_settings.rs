//! Settings only the test suite sets, from `IF_TEST_*` variables: each makes a node misbehave
//! on purpose (a late build, lost hellos, a slow source) so that a test reaches a path otherwise left to
//! timing. Not configuration (`config::load::NOT_CONFIG_ENV` lets them through); unset in
//! production, and a warning in the log when set.

/// Milliseconds a node that took a build lease waits before building (so a test can stop the
/// process while it holds the lease).
pub const BUILD_DELAY_ENV: &str = "IF_TEST_BUILD_DELAY_MS";
/// How many of the first hellos a node receives it neither judges nor answers (each held until
/// its sender gives up), as if lost on the way.
pub const IGNORE_HELLOS_ENV: &str = "IF_TEST_IGNORE_HELLOS";
/// When 1, a node sends no hello of its own and welcomes every hello, credential or not,
/// naming in its welcome a member that does not exist (a stranger that lies while it is not
/// yet judged, so that a test sees what its news does).
pub const WELCOME_STRANGERS_ENV: &str = "IF_TEST_WELCOME_STRANGERS";
/// Milliseconds a node waits before each chunk it sends a member of a stored blob larger than
/// one chunk (a slow source of large blobs, so that a test finds a transfer in its middle).
pub const BLOB_ANSWER_DELAY_ENV: &str = "IF_TEST_BLOB_ANSWER_DELAY_MS";
/// Milliseconds a node holds each batch of schematics a member asks for before answering (a
/// slow store, so that a test finds the bound on requests answered at once reached).
pub const ANSWER_DELAY_ENV: &str = "IF_TEST_ANSWER_DELAY_MS";

/// Milliseconds the ranked members must stay unchanged before copies are re-placed over them
/// (shorter than the minute of a real node, so that a test sees a re-placement soon).
pub const PLACEMENT_SETTLE_ENV: &str = "IF_TEST_PLACEMENT_SETTLE_MS";

/// The number the variable `name` holds, at most `max`, with a warning naming its `effect`;
/// `None` when unset, or (with a warning) when not a number.
pub(crate) fn read(name: &str, max: u64, effect: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse::<u64>() {
        Ok(n) => {
            let n = n.min(max);
            tracing::warn!(value = n, "{name} is set: {effect} (a test setting)");
            Some(n)
        }
        Err(e) => {
            tracing::warn!(value = %text, error = %e, "{name} ignored: not a number");
            None
        }
    }
}
