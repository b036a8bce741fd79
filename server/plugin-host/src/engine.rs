//! The wasmtime engine every plugin runs on, the epoch ticker that enforces call budgets,
//! and the compiled-component cache.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::bindings::{discovery, file_backend, relay_policy};
use crate::limits::{MAX_MEMORY_BYTES, STACK_BYTES};

/// Plugin instances alive at once (one per loaded plugin, plus those being inspected).
const POOL_INSTANCES: u32 = 64;
use crate::state::HostState;

/// How often the epoch advances while any plugin call is running. A runaway call is stopped
/// at most one tick after its budget.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) ticker: Ticker,
    pub(crate) discovery: Linker<HostState>,
    pub(crate) relay_policy: Linker<HostState>,
    pub(crate) file_backend: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    /// The engine's configuration without the pooling allocator: what compiling for the
    /// cache needs (see [`Runtime::compile`]).
    compile_config: Config,
}

impl Runtime {
    /// `epochs: false` compiles without deadline checks; only benchmarks measuring their
    /// cost use that.
    pub(crate) fn new(cache_dir: Option<PathBuf>, epochs: bool) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(epochs)
            .max_wasm_stack(STACK_BYTES)
            .cranelift_opt_level(OptLevel::Speed);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 8)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES)
            .max_tables_per_module(8)
            .table_elements(20_000)
            .linear_memory_keep_resident(128 << 10)
            .table_keep_resident(64 << 10);
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(MAX_MEMORY_BYTES as u64)
            .memory_guard_size(64 << 10);
        let mut compile_config = config.clone();
        compile_config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        let engine = Engine::new(&config)?;
        let ticker = Ticker::start(engine.clone());

        let mut discovery = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut discovery)?;
        discovery::Discovery::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut discovery,
            |s| s,
        )?;
        let mut relay_policy = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut relay_policy)?;
        relay_policy::RelayPolicy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut relay_policy,
            |s| s,
        )?;
        let mut file_backend = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut file_backend)?;
        file_backend::FileBackend::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut file_backend,
            |s| s,
        )?;

        Ok(Self {
            engine,
            ticker,
            discovery,
            relay_policy,
            file_backend,
            cache_dir,
            compile_config,
        })
    }

    /// Compiles `wasm`, or loads the result of an earlier compilation from the cache.
    /// Blocking: call from a blocking thread.
    pub(crate) fn compile(&self, wasm: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, wasm);
        };
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = format!(
            "{}-{:016x}.cwasm",
            blake3::hash(wasm).to_hex(),
            engine_hash.finish()
        );
        let path = dir.join(key);
        let Some(tag_key) = tag_key(dir) else {
            tracing::warn!(dir = %dir.display(), "the compiled-plugin cache is not usable; compiling in memory");
            return Component::new(&self.engine, wasm);
        };
        if path.exists() {
            match load_cached(&self.engine, &path, &tag_key) {
                Ok(component) => {
                    // Mark it used, so pruning keeps it.
                    if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                        let _ = file.set_modified(std::time::SystemTime::now());
                    }
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unusable compiled plugin in the cache")
                }
            }
        }
        // Compiled by an engine of its own, dropped at once: an engine keeps its compiler's
        // working memory for the next compilation, megabytes per thread that compiled. The
        // result then runs from the cache file, as after a restart: its code is mapped from
        // the file instead of held in anonymous memory.
        let compiled = Engine::new(&self.compile_config)?.precompile_component(wasm)?;
        let stored = store_cached(dir, &path, &compiled, &tag_key);
        drop(compiled);
        release_freed_memory();
        match stored
            .map_err(wasmtime::Error::from)
            .and_then(|()| load_cached(&self.engine, &path, &tag_key))
        {
            Ok(component) => Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a compiled plugin cannot run from the cache");
                Component::new(&self.engine, wasm)
            }
        }
    }
}

impl Runtime {
    /// Deletes cached components not used for `unused_for`. Returns how many were removed.
    pub(crate) fn prune_cache(&self, unused_for: Duration) -> usize {
        let Some(dir) = &self.cache_dir else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let cutoff = std::time::SystemTime::now() - unused_for;
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff)
            })
            .filter(|e| {
                let _ = std::fs::remove_file(e.path().with_extension(TAG_EXTENSION));
                std::fs::remove_file(e.path()).is_ok()
            })
            .count()
    }
}

/// Gives the heap memory freed so far (a compilation's) back to the system. glibc keeps freed
/// memory in its arenas for reuse: a first start that compiled the built-in plugins held
/// ≈ 18 MiB of it (debug build, measured with `malloc_trim` called from gdb).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: `malloc_trim` only releases free memory of the allocator's arenas; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// The extension of the file beside each cached component that holds its tag.
const TAG_EXTENSION: &str = "tag";
/// The file in the cache directory that holds the key the tags are made with.
const TAG_KEY_FILE: &str = "cache.key";

/// The key this cache's tags are made with, created (at random, mode 0600) the first time.
/// It never leaves the cache directory: not in backups, which restore no cache either.
fn tag_key(dir: &Path) -> Option<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(TAG_KEY_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes.try_into().ok();
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).ok()?;
    // Written whole under a name of its own, then linked into place: two nodes sharing the
    // cache that start together agree on one key.
    let tmp = dir.join(format!("{TAG_KEY_FILE}.{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &key).and_then(|()| f.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Some(key),
        Err(_) => std::fs::read(&path).ok()?.try_into().ok(),
    }
}

fn tag_of(key: &[u8; 32], bytes: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(key, bytes)
}

/// Loads a component that `store_cached` wrote, once its tag shows that this node wrote it.
#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path, key: &[u8; 32]) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    let tag: [u8; 32] = std::fs::read(path.with_extension(TAG_EXTENSION))?
        .try_into()
        .map_err(|_| wasmtime::Error::msg("the cached component's tag is malformed"))?;
    // `blake3::Hash` compares in constant time.
    if tag_of(key, &bytes) != blake3::Hash::from_bytes(tag) {
        return Err(wasmtime::Error::msg(
            "the cached component was not written by this node (its tag does not match)",
        ));
    }
    drop(bytes);
    // SAFETY: the file was written by `store_cached` from `Component::serialize` of an
    // engine with the same compatibility hash (part of its name), and its tag — a keyed
    // hash under a key only this cache directory holds — says so; a file anyone else put
    // there (a crafted backup, say) fails the tag and is never deserialized. Wasmtime also
    // checks the header's version and configuration.
    unsafe { Component::deserialize_file(engine, path) }
}

fn store_cached(dir: &Path, path: &Path, bytes: &[u8], key: &[u8; 32]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    let tag_path = path.with_extension(TAG_EXTENSION);
    let tmp = tag_path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, tag_of(key, bytes).as_bytes())?;
    std::fs::rename(&tmp, tag_path)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while at least one call is active, and
/// parks otherwise, so an idle node does not wake up for plugins. Calls only touch an atomic
/// counter; the lock and the condition variable are used when the ticker parks or is woken.
pub(crate) struct Ticker {
    shared: Arc<TickerShared>,
}

struct TickerShared {
    active: AtomicUsize,
    parked: AtomicBool,
    stopped: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Ticker {
    fn start(engine: Engine) -> Self {
        let shared = Arc::new(TickerShared {
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("volli-epoch".into())
            .spawn(move || {
                let s = thread_shared;
                loop {
                    {
                        let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                        while s.active.load(Ordering::SeqCst) == 0
                            && !s.stopped.load(Ordering::SeqCst)
                        {
                            s.parked.store(true, Ordering::SeqCst);
                            // Re-check after announcing the park, so a call that started in
                            // between is not missed.
                            if s.active.load(Ordering::SeqCst) != 0 {
                                break;
                            }
                            guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                        }
                        s.parked.store(false, Ordering::SeqCst);
                        if s.stopped.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        if let Err(e) = spawned {
            // Without the ticker, deadlines cannot fire; calls still end through the outer
            // timeout, which discards the instance.
            tracing::error!(error = %e, "cannot start the plugin epoch ticker");
        }
        Self { shared }
    }

    /// Marks a call as running until the guard is dropped.
    pub(crate) fn activate(&self) -> Active {
        let s = &self.shared;
        if s.active.fetch_add(1, Ordering::SeqCst) == 0 && s.parked.load(Ordering::SeqCst) {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_one();
        }
        Active {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_one();
    }
}

/// A running call, as far as the ticker is concerned.
pub(crate) struct Active {
    shared: Arc<TickerShared>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The file whose mapping holds `address` in this process, if any.
    fn mapped_file(address: usize) -> Option<PathBuf> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let range =
                usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
            let path = fields.nth(4)?;
            range.contains(&address).then(|| PathBuf::from(path))
        })
    }

    /// A plugin compiled now runs from its cache file, as it does after a restart, not from
    /// the compiler's memory.
    #[test]
    fn a_compiled_component_the_node_did_not_write_is_never_loaded() {
        let (_, wasm) = crate::builtin::all()[0];
        let theirs = tempfile::tempdir().unwrap();
        Runtime::new(Some(theirs.path().to_path_buf()), false)
            .unwrap()
            .compile(wasm)
            .unwrap();
        // Someone else's cache (a crafted backup would bring one) copied into this node's.
        let ours = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(Some(ours.path().to_path_buf()), false).unwrap();
        let mut planted = Vec::new();
        for entry in std::fs::read_dir(theirs.path()).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|x| x == "cwasm" || x == TAG_EXTENSION)
            {
                let target = ours.path().join(path.file_name().unwrap());
                std::fs::copy(&path, &target).unwrap();
                planted.push((target, std::fs::read(&path).unwrap()));
            }
        }
        assert_eq!(planted.len(), 2);
        runtime.compile(wasm).unwrap();
        let key = tag_key(ours.path()).unwrap();
        let cwasm = planted
            .iter()
            .find(|(p, _)| p.extension().is_some_and(|x| x == "cwasm"))
            .unwrap();
        let tag = std::fs::read(cwasm.0.with_extension(TAG_EXTENSION)).unwrap();
        let bytes = std::fs::read(&cwasm.0).unwrap();
        assert_eq!(
            tag,
            tag_of(&key, &bytes).as_bytes(),
            "compiled again, by this node"
        );
        let theirs_tag = &planted
            .iter()
            .find(|(p, _)| p.extension().is_some_and(|x| x == TAG_EXTENSION))
            .unwrap()
            .1;
        assert_ne!(&tag, theirs_tag);
    }

    #[test]
    fn a_fresh_compilation_runs_from_the_cache_file() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(Some(dir.path().to_path_buf()), false).unwrap();
        let (_, wasm) = crate::builtin::all()[0];
        let fresh = runtime.compile(wasm).unwrap();
        let cached = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .unwrap();
        let code = fresh.image_range().start as usize;
        assert_eq!(mapped_file(code), Some(cached));
    }
}
