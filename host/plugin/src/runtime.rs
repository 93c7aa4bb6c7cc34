//! One wasmtime engine per process, the linker every plugin shares, and the clock that stops
//! runaway calls.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::PluginError;
use crate::bindings::stepflow::plugin::host;
use crate::cache::Cache;
use crate::epoch::EpochClock;
use crate::sandbox::HostState;

/// How much of a freed instance's linear memory is reset in place and stays resident for the
/// next instance of the pool slot (the rest is decommitted): all that a small plugin's call
/// writes, and most of what an interpreter's does. Bounded because each idle slot the pool
/// keeps warm (wasmtime's default: up to 100) keeps up to this much resident: 400 MiB at
/// worst with large interpreters, a few MiB with Rust or C plugins.
const KEEP_RESIDENT: usize = 4 << 20;

/// Settings for the one engine a process uses.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where compiled components are cached, so a restart does not recompile; `None` (the
    /// default) compiles every time. The embedder chooses the directory.
    pub cache_dir: Option<PathBuf>,
    /// Pre-allocate instance slots (faster instantiation; reserves virtual memory up front).
    pub pooling: bool,
    /// How many instances may be alive at once with pooling; calls beyond it wait for one to
    /// end (so a host driving many runs at once sizes it to its concurrency).
    pub max_instances: u32,
    /// The largest memory cap any plugin may be granted.
    pub max_memory_bytes: usize,
    /// Meter wasm execution with fuel, so plugins can be given a fuel grant (costs speed).
    pub fuel: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: None,
            pooling: true,
            max_instances: 256,
            max_memory_bytes: 1 << 30,
            fuel: false,
        }
    }
}

/// The shared engine, linker and cache: create one per process and load every plugin with it.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub cache: Option<Cache>,
    pub config: RuntimeConfig,
    /// Advances the epoch while calls run (time limits), idle otherwise.
    pub clock: Arc<EpochClock>,
    /// One permit per instance the pool holds: a call beyond them waits for a slot instead of
    /// failing to instantiate.
    pub slots: tokio::sync::Semaphore,
}

impl Runtime {
    /// Creates the engine (Cranelift, component model, epoch interruption, copy-on-write memory
    /// images, optional pooling and fuel) and starts the epoch clock.
    pub fn new(config: RuntimeConfig) -> Result<Self, PluginError> {
        let mut c = Config::new();
        c.epoch_interruption(true);
        c.memory_init_cow(true);
        c.consume_fuel(config.fuel);
        c.max_wasm_stack(1 << 20);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(config.max_instances);
            pool.total_core_instances(config.max_instances * 8);
            pool.total_memories(config.max_instances * 2);
            pool.total_tables(config.max_instances * 4);
            pool.total_stacks(config.max_instances);
            pool.max_memory_size(config.max_memory_bytes);
            pool.max_core_instances_per_component(64);
            pool.max_memories_per_component(16);
            pool.max_tables_per_component(32);
            pool.max_component_instance_size(1 << 20);
            pool.max_core_instance_size(1 << 20);
            // Where the kernel can say which pages a freed instance wrote (Linux 6.7's
            // PAGEMAP_SCAN), its memory is reset in place rather than given back: those pages
            // are copied back from the memory image, up to `KEEP_RESIDENT` bytes, and only
            // what lies beyond is decommitted. Decommitting costs a TLB shootdown on every
            // core and a page fault per page at the next call, which made up most of a no-op
            // step's cost with many runs in flight. Without the scan the lowest bytes would be
            // reset whether written or not, so memory is decommitted in full as before.
            if PoolingAllocationConfig::is_pagemap_scan_available() {
                pool.pagemap_scan(wasmtime::Enabled::Yes);
                pool.linear_memory_keep_resident(KEEP_RESIDENT);
            } else {
                pool.linear_memory_keep_resident(0);
            }
            pool.table_keep_resident(1 << 16);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&c).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        // Linked for every plugin, refused by every plugin's policy unless its grants allow.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let clock = EpochClock::start(&engine);
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                clock,
                slots: tokio::sync::Semaphore::new(config.max_instances as usize),
                cache: config.cache_dir.clone().map(Cache::new),
                engine,
                linker,
                config,
            }),
        })
    }

    /// The wasmtime engine (for embedders that need it).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        let (plugin, run, step) = (&*self.tag.plugin, &*self.tag.run, &*self.tag.step);
        // Every line is already tagged with plugin, run and step: a field that repeats one of
        // them (a plugin passing its own step path along) would print it twice.
        let fields = fields
            .iter()
            .filter(|(k, v)| {
                let tag = match k.as_str() {
                    "plugin" => plugin,
                    "run" => run,
                    "step" => step,
                    _ => return true,
                };
                v != tag
            })
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>();
        let secrets = &self.tag.secrets;
        let (message, fields) = (secrets.redact(&message), secrets.redact(&fields));
        match level {
            host::Level::Trace => tracing::trace!(plugin, run, step, "{message}{fields}"),
            host::Level::Debug => tracing::debug!(plugin, run, step, "{message}{fields}"),
            host::Level::Info => tracing::info!(plugin, run, step, "{message}{fields}"),
            host::Level::Warn => tracing::warn!(plugin, run, step, "{message}{fields}"),
            host::Level::Error => tracing::error!(plugin, run, step, "{message}{fields}"),
        }
    }
}

impl crate::bindings::stepflow::plugin::types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_caches_nowhere_the_embedder_did_not_name() {
        assert_eq!(RuntimeConfig::default().cache_dir, None);
    }
}
