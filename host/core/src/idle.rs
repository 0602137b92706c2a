//! The warm instances every evaluator pool of one engine shares: a cap in
//! all, and the pools least recently used, whose idle instances go first.
//!
//! The engine owns the budget and each pool draws on it; the budget sees a
//! pool only as an [`IdlePool`], so it needs nothing of the evaluator.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Instant;

/// A pool whose idle instances the budget can take back.
pub(crate) trait IdlePool: Send + Sync {
    /// Marks the pool out of the budget's LRU (its next use must put it
    /// back) and takes out every idle instance, counting each out of `idle`
    /// under its list's lock. Returns how many went, and the instances, to
    /// be torn down once the budget's lock is released.
    fn evict(&self, idle: &AtomicUsize) -> (usize, Box<dyn Send>);
}

/// The warm (idle) instances of every pool of one engine, capped in all:
/// the instance allocator's limit is process-wide, so per-pool caps alone
/// would let a thousand functions' idle instances starve the next one.
/// Past the cap, the least recently used pool's idle instances go.
pub(crate) struct IdleBudget {
    pub(crate) cap: usize,
    /// Warm instances of every pool: those idle, and those taken from an
    /// idle list to decide (they stay counted until dropped, so a decision
    /// writes no counter the cores share). A new instance is counted when
    /// first kept; eviction takes only idle ones.
    pub(crate) idle: AtomicUsize,
    /// Pools with idle instances, least recently used first.
    pub(crate) lru: Mutex<lru::LruCache<u64, Weak<dyn IdlePool>>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) start: Instant,
}

impl IdleBudget {
    pub(crate) fn new(cap: usize) -> Self {
        IdleBudget {
            cap,
            idle: AtomicUsize::new(0),
            lru: Mutex::new(lru::LruCache::unbounded()),
            next_id: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// Seconds since the engine's start.
    pub(crate) fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Drops the idle instances of the least recently used pools (never
    /// `keep`'s) until the total is within the cap, or, with `force`, at
    /// least one pool's. Returns how many went.
    pub(crate) fn evict(&self, keep: u64, force: bool) -> usize {
        let mut dropped = Vec::new();
        let mut count = 0;
        let mut skipped = None;
        {
            let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
            while force && count == 0 || self.idle.load(Ordering::Acquire) > self.cap {
                let Some((id, weak)) = lru.pop_lru() else {
                    break;
                };
                if id == keep {
                    skipped = Some(weak);
                    continue;
                }
                if let Some(pool) = weak.upgrade() {
                    let (n, gone) = pool.evict(&self.idle);
                    count += n;
                    dropped.push(gone);
                }
            }
            if let Some(weak) = skipped {
                lru.put(keep, weak);
            }
        }
        // Instances are torn down outside the locks.
        drop(dropped);
        count
    }
}
