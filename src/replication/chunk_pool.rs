//! Pools of chunk buffers: the one all of this node's transfers share (the node-wide budget
//! of transfer memory), and each transfer's own pool of one buffer for the group it writes
//! next. The same few 1 MiB buffers are used again and again: allocating and freeing a buffer
//! per chunk kept freed megabytes committed in the allocator for its purge delay, so the
//! receiver's memory grew with the throughput; buffers taken from and given back to a pool
//! never reach the allocator once the pool is warm.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most `n` buffers, lent to transfers one chunk at a time.
pub(crate) struct ChunkPool {
    slots: Arc<Semaphore>,
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    /// A pool of at most `n` buffers (allocated on first use).
    pub(crate) fn new(n: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(n)),
            free: Mutex::new(Vec::with_capacity(n)),
        }
    }

    /// A buffer of the pool when one is free now (back in the pool when dropped).
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<ChunkBuf> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some(self.lend(permit))
    }

    /// A buffer of the pool once one is free.
    pub(crate) async fn take(self: &Arc<Self>) -> Option<ChunkBuf> {
        let permit = Arc::clone(&self.slots).acquire_owned().await.ok()?;
        Some(self.lend(permit))
    }

    /// Whether a buffer could be taken now.
    pub(crate) fn has_free(&self) -> bool {
        self.slots.available_permits() > 0
    }

    /// The buffer lent under `permit`: a free one, or a new one.
    fn lend(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> ChunkBuf {
        let data = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_default();
        ChunkBuf {
            data,
            home: Some((Arc::clone(self), permit)),
        }
    }
}

/// One chunk's bytes, in a buffer lent by a pool.
pub(crate) struct ChunkBuf {
    data: Vec<u8>,
    /// Its pool and slot, until it goes back.
    home: Option<(Arc<ChunkPool>, OwnedSemaphorePermit)>,
}

impl ChunkBuf {
    /// The bytes it holds.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The vector behind it, for reading a chunk into.
    pub(crate) fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        if let Some((pool, permit)) = self.home.take() {
            if let Ok(mut free) = pool.free.lock() {
                free.push(std::mem::take(&mut self.data));
            }
            // The slot frees only once its buffer is back, so a taker finds it.
            drop(permit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_lent_up_to_the_budget_and_come_back_for_reuse() {
        let pool = Arc::new(ChunkPool::new(2));
        let mut a = pool.try_take().unwrap();
        let b = pool.try_take().unwrap();
        assert!(
            pool.try_take().is_none(),
            "a third buffer beyond a budget of two"
        );
        a.vec_mut().resize(1 << 20, 7);
        let ptr = a.bytes().as_ptr();
        drop(a);
        // The returned buffer is the one lent next, bytes and capacity kept.
        let c = pool.try_take().unwrap();
        assert_eq!(c.bytes().as_ptr(), ptr);
        assert_eq!(c.bytes().len(), 1 << 20);
        drop((b, c));
        assert!(pool.try_take().is_some());
    }

    #[tokio::test]
    async fn a_taker_waits_until_a_lent_buffer_comes_back() {
        let pool = Arc::new(ChunkPool::new(1));
        assert!(pool.has_free());
        let lent = pool.try_take().unwrap();
        assert!(!pool.has_free());
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.take().await.is_some() }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a second buffer beyond a budget of one"
        );
        drop(lent);
        assert!(waiting.await.unwrap());
    }
}
