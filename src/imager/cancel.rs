//! Stopping a build from outside: a flag the builder checks between stages and that external
//! tool runs watch (a cancelled tool is killed), so a build past its deadline frees its slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::ImagerError;

/// A build's cancellation flag (cheap to clone; every clone sees the same flag).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the build to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the build was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
}
