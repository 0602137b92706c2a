//! The one wasmtime `Engine` of a process, configured for policies: pooling
//! allocator, fuel-metered evaluation budget, memory cap, and no capabilities.

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, OptLevel, PoolingAllocationConfig};

use crate::host::HostState;

/// Limits and sizing of the policy engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Per-call budget (`evaluate` or `configure`) in fuel units, about one
    /// per WebAssembly instruction; `None` disables metering. Fuel, not a
    /// wall-clock deadline, so a policy's verdict does not depend on how
    /// busy the machine is: a thread descheduled mid-call would otherwise
    /// blow a 1 ms deadline and flip the decision to the fail-safe. The
    /// default, [`DEFAULT_FUEL`], runs out after about 1 ms of a tight loop
    /// on the reference machine (see BENCHMARKS.md).
    pub fuel: Option<u64>,
    /// How far a policy instance may grow its linear memory beyond what it
    /// starts with, in bytes. A cap on growth rather than on size, so one
    /// rule fits a 1 MiB Rust policy and a Python policy whose interpreter
    /// image starts at tens of MiB: each gets the same headroom for work.
    pub memory_limit: usize,
    /// Hard cap on one linear memory, initial image included, in bytes.
    pub max_memory_size: usize,
    /// A warm instance is replaced by a fresh one after this many evaluations
    /// (and always after a trap), so state a policy keeps cannot grow forever.
    pub recycle_after: u64,
    /// Policy instances the pooling allocator can hold at once, process-wide.
    pub max_instances: u32,
    /// A pool whose policy fails this many evaluations in a row stops
    /// evaluating (its circuit opens) and answers the fail-safe for
    /// `breaker_open`, then lets one probe through: a policy that burns its
    /// budget on every call cannot hold the host's threads. 0 disables.
    pub breaker_failures: u32,
    /// How long an open circuit answers the fail-safe before a probe.
    pub breaker_open: std::time::Duration,
    /// Initialise instance memory copy-on-write from a memory image instead
    /// of copying data segments. On: a fresh instance of `sticky-canary`
    /// measured 15 % faster with it (BENCHMARKS.md, group `instantiate`).
    pub copy_on_write: bool,
    /// Bytes at the start of each pooled linear memory that are reset and
    /// kept resident when an instance is dropped, instead of being handed
    /// back to the kernel (`madvise`) and faulted in again by the next
    /// instance. 0 hands everything back. By default [`KEEP_RESIDENT`]
    /// where the kernel has `PAGEMAP_SCAN` (see `pagemap_scan`: then only
    /// the pages a policy dirtied are reset and stay resident), else 0 (a
    /// reset would `memset`, and so keep resident, the whole kept part of
    /// every pool slot ever used). BENCHMARKS.md, fresh instances.
    pub keep_resident: usize,
    /// Bytes of each pooled table kept resident the same way (by default
    /// [`TABLE_KEEP_RESIDENT`] where `keep_resident` is on, else 0).
    pub table_keep_resident: usize,
    /// With `keep_resident` or `table_keep_resident` set: reset only the
    /// pages an instance dirtied when its slot is reused, found with
    /// Linux's `PAGEMAP_SCAN` (6.7 and later; older kernels, such as some
    /// Lambda hosts, fall back to resetting the whole kept part). With it,
    /// keeping memory resident costs what a policy touches. No effect
    /// while nothing is kept.
    pub pagemap_scan: bool,
}

/// Default fuel per call: about 1 ms of a tight loop on the reference
/// machine (measured by `cargo bench --bench decision -- sandbox/exhaust`).
pub const DEFAULT_FUEL: u64 = 10_000_000;

impl Default for EngineConfig {
    fn default() -> Self {
        // Keeping memory resident is cheap only where resets touch just the
        // dirtied pages (Linux 6.7 and later).
        let scan = wasmtime::PoolingAllocationConfig::is_pagemap_scan_available();
        EngineConfig {
            fuel: Some(DEFAULT_FUEL),
            memory_limit: 16 << 20,
            max_memory_size: 256 << 20,
            recycle_after: 10_000,
            max_instances: 1_000,
            breaker_failures: 5,
            breaker_open: std::time::Duration::from_secs(10),
            copy_on_write: true,
            keep_resident: if scan { KEEP_RESIDENT } else { 0 },
            table_keep_resident: if scan { TABLE_KEEP_RESIDENT } else { 0 },
            pagemap_scan: true,
        }
    }
}

/// Default [`EngineConfig::keep_resident`] where the kernel can reset only
/// dirtied pages: a policy built by `switchyard policy build` starts with
/// a 64 KiB stack, and its data and heap follow.
pub const KEEP_RESIDENT: usize = 256 << 10;

/// Default [`EngineConfig::table_keep_resident`] with [`KEEP_RESIDENT`].
pub const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Core module instances one policy component may create (an interpreter
/// linked from shared libraries needs dozens).
pub const MAX_CORE_INSTANCES_PER_POLICY: u32 = 64;
/// Linear memories one policy component may define.
pub const MAX_MEMORIES_PER_POLICY: u32 = 4;
/// Tables one policy component may define.
pub const MAX_TABLES_PER_POLICY: u32 = 16;

/// The engine all policies of a process share. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<HostState>,
    config: EngineConfig,
    idle: Arc<crate::idle::IdleBudget>,
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

    /// An engine with the given limits.
    pub fn with_config(config: EngineConfig) -> Result<Self, EngineError> {
        if config.fuel == Some(0) {
            return Err(EngineError(
                "a fuel budget of 0 cannot run anything; use None for no budget".into(),
            ));
        }
        if config.memory_limit > config.max_memory_size {
            return Err(EngineError(format!(
                "memory_limit ({}) is above max_memory_size ({})",
                config.memory_limit, config.max_memory_size
            )));
        }
        let mut pool = PoolingAllocationConfig::default();
        // A componentized Rust policy is a main module plus a small shim: two
        // core instances and two tables, one linear memory. Python and
        // JavaScript policies link an interpreter from many modules (a
        // componentize-py build has 38 core instances), so the per-component
        // caps are wide; the totals are budgets across all live instances.
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances.saturating_mul(8))
            .total_memories(config.max_instances.saturating_mul(2))
            .total_tables(config.max_instances.saturating_mul(4))
            .max_memory_size(config.max_memory_size)
            .max_memories_per_component(MAX_MEMORIES_PER_POLICY)
            .max_tables_per_component(MAX_TABLES_PER_POLICY)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_POLICY)
            .linear_memory_keep_resident(config.keep_resident)
            .table_keep_resident(config.table_keep_resident)
            .pagemap_scan(if config.pagemap_scan {
                Enabled::Auto
            } else {
                Enabled::No
            });

        let mut wt = Config::new();
        wt.wasm_component_model(true)
            .consume_fuel(config.fuel.is_some())
            .cranelift_opt_level(OptLevel::Speed)
            .memory_init_cow(config.copy_on_write)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(pool);
        let wasmtime = wasmtime::Engine::new(&wt).map_err(|e| EngineError(format!("{e:#}")))?;

        let mut linker = Linker::new(&wasmtime);
        crate::host::link(&mut linker).map_err(|e| EngineError(format!("{e:#}")))?;

        Ok(Engine {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                // Half the instances may wait warm; the rest are for the
                // calls in flight.
                idle: Arc::new(crate::idle::IdleBudget::new(
                    (config.max_instances as usize / 2).max(1),
                )),
                config,
            }),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The warm instances every pool of this engine shares.
    pub(crate) fn idle_budget(&self) -> &Arc<crate::idle::IdleBudget> {
        &self.inner.idle
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
