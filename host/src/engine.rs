//! The one wasmtime `Engine` of a process, configured for policies: pooling
//! allocator, epoch-based evaluation budget, memory cap, and no capabilities.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, OptLevel, PoolingAllocationConfig};

use crate::bindings::Router;
use crate::policy::HostState;

/// Limits and sizing of the policy engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Wall-clock budget of one `evaluate` (or `configure`) call. Enforced by
    /// epoch interruption: a call is stopped after at least `budget` and at
    /// most `budget + epoch_tick`.
    pub budget: Duration,
    /// Granularity of the budget: how often the epoch ticker thread wakes.
    pub epoch_tick: Duration,
    /// Linear-memory cap per policy instance, in bytes.
    pub memory_limit: usize,
    /// A warm instance is replaced by a fresh one after this many evaluations
    /// (and always after a trap), so state a policy keeps cannot grow forever.
    pub recycle_after: u64,
    /// Policy instances the pooling allocator can hold at once, process-wide.
    pub max_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            budget: Duration::from_millis(1),
            epoch_tick: Duration::from_micros(500),
            memory_limit: 16 << 20,
            recycle_after: 10_000,
            max_instances: 1_000,
        }
    }
}

impl EngineConfig {
    /// Epoch ticks an evaluation may last: enough that a call never stops
    /// before `budget` even when a tick lands right after it starts.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (self.budget.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }
}

/// The engine all policies of a process share. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<HostState>,
    config: EngineConfig,
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the policy engine: {0}")]
pub struct EngineError(String);

impl Engine {
    /// An engine with [`EngineConfig::default`].
    pub fn new() -> Result<Self, EngineError> {
        Self::with_config(EngineConfig::default())
    }

    /// An engine with the given limits. Starts a background thread that
    /// advances the epoch every `epoch_tick`; it ends with the engine.
    pub fn with_config(config: EngineConfig) -> Result<Self, EngineError> {
        if config.budget.is_zero() || config.epoch_tick.is_zero() {
            return Err(EngineError(
                "budget and epoch tick must be above zero".into(),
            ));
        }
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances.saturating_mul(2))
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memory_size(config.memory_limit)
            .max_memories_per_component(2)
            .max_tables_per_component(2)
            .max_core_instances_per_component(4);

        let mut wt = Config::new();
        wt.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            // Measured no faster for policies this small (see BENCHMARKS.md);
            // off keeps instantiation free of memfd bookkeeping.
            .memory_init_cow(false)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(pool);
        let wasmtime = wasmtime::Engine::new(&wt).map_err(|e| EngineError(format!("{e:#}")))?;

        let mut linker = Linker::new(&wasmtime);
        Router::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| EngineError(format!("{e:#}")))?;

        let weak = wasmtime.weak();
        let tick = config.epoch_tick;
        std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })
            .map_err(|e| EngineError(format!("cannot start the epoch thread: {e}")))?;

        Ok(Engine {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                config,
            }),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_covers_the_budget() {
        let c = EngineConfig::default();
        // 1 ms budget, 0.5 ms ticks: 2 ticks of budget + 1 of slack.
        assert_eq!(c.deadline_ticks(), 3);
        let c = EngineConfig {
            budget: Duration::from_micros(100),
            epoch_tick: Duration::from_millis(1),
            ..c
        };
        assert_eq!(c.deadline_ticks(), 2);
    }
}
