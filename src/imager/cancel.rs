//! Stopping a build from outside: a flag the builder checks between stages and that external
//! tool runs watch (a cancelled tool is killed), so a build past its deadline frees its slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::error::ImagerError;

/// A build's cancellation flag and deadline (cheap to clone; every clone sees the same flag).
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Cancel {
    /// A flag that is not set, without a deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// A flag that also counts as set from `deadline` on.
    pub fn until(deadline: Instant) -> Self {
        Self {
            flag: Arc::default(),
            deadline: Some(deadline),
        }
    }

    /// Asks the build to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// Whether the build was asked to stop or its deadline has passed.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Time left before the deadline, if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Fails with [`ImagerError::Cancelled`] once the build was asked to stop.
    pub fn check(&self) -> Result<(), ImagerError> {
        if self.is_cancelled() {
            Err(ImagerError::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_the_flag() {
        let c = Cancel::new();
        let other = c.clone();
        assert!(other.check().is_ok());
        c.cancel();
        assert!(other.is_cancelled());
        assert!(matches!(other.check(), Err(ImagerError::Cancelled)));
    }

    #[test]
    fn a_passed_deadline_counts_as_cancelled() {
        let c = Cancel::until(Instant::now());
        assert!(c.is_cancelled());
        assert_eq!(c.remaining(), Some(Duration::ZERO));
        let later = Cancel::until(Instant::now() + Duration::from_secs(60));
        assert!(!later.is_cancelled());
    }
}
