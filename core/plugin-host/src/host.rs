//! Engine, linker, cache, per-call stores and the host side of the imports.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use spindle_config::{AllowedHost, PluginLimits};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::spindle::destination::{http, log};
use crate::bindings::{Destination, DestinationPre};
use crate::gate::{Gate, GateError, MAX_BODY, redact, resolved_address_allowed};
use crate::{Batch, BatchError, Identifier, Outcome, PluginInfo, RecordOutcome};

/// The contract version this build implements.
pub const SUPPORTED_VERSION: &str = "0.1.0";
const PACKAGE: &str = "spindle:destination";
/// How often the epoch advances; the wall-time deadline is checked at this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be loaded or a call did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a usable component.
    #[error("plugin `{plugin}` is not a valid component: {reason}")]
    Invalid {
        /// Plugin name (file stem).
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The component targets another contract version.
    #[error("plugin `{plugin}` targets {found}; this build supports {PACKAGE}@{SUPPORTED_VERSION}")]
    Version {
        /// Plugin name.
        plugin: String,
        /// The package and version it imports or exports.
        found: String,
    },
    /// The call trapped, ran out of a limit, or panicked; the instance was discarded.
    #[error("plugin `{plugin}` failed in `{call}`: {cause}")]
    Trap {
        /// Plugin name.
        plugin: String,
        /// The exported function.
        call: &'static str,
        /// The cause (limit, trap message, panic message).
        cause: String,
    },
    /// The call did not finish within its wall-time limit.
    #[error("plugin `{plugin}` did not finish `{call}` within {limit:?}")]
    Timeout {
        /// Plugin name.
        plugin: String,
        /// The exported function.
        call: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// The engine could not be set up.
    #[error("cannot set up the plugin engine: {0}")]
    Engine(String),
    /// A plugin named in the configuration is not built.
    #[error(
        "plugin `{plugin}` is not built: looked for {searched}; run `spindle plugin build {plugin}`"
    )]
    NotFound {
        /// The name.
        plugin: String,
        /// The paths tried.
        searched: String,
    },
}

/// Where a destination's plugin is: a `.wasm` path as given, or a built plugin's name looked up in
/// `<dir>/plugins/<name>.wasm`, then the plugin workspace's build output (`<dir>/target/wasm-plugins/…` and
/// `<dir>/plugins/target/…`, profile `plugin`), where `dir` is the configuration file's folder.
pub fn locate(plugin: &str, config_dir: &Path) -> Result<PathBuf, PluginError> {
    if plugin.ends_with(".wasm") {
        return Ok(PathBuf::from(plugin));
    }
    let file = format!("{}.wasm", plugin.replace('-', "_"));
    let candidates = [
        config_dir.join("plugins").join(format!("{plugin}.wasm")),
        config_dir
            .join("target/wasm-plugins/wasm32-wasip2/plugin")
            .join(&file),
        config_dir
            .join("plugins/target/wasm32-wasip2/plugin")
            .join(&file),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| PluginError::NotFound {
            plugin: plugin.to_owned(),
            searched: candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Limits and capabilities of calls for one destination.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Resource limits.
    pub limits: PluginLimits,
    /// Hosts the plugin may reach.
    pub allow_hosts: Vec<AllowedHost>,
    /// Secrets filled in by reference.
    pub secrets: BTreeMap<String, SecretString>,
}

/// A loaded, pre-instantiated plugin.
#[derive(Clone)]
pub struct LoadedPlugin {
    name: String,
    pre: DestinationPre<HostState>,
    /// Whether the compiled code came from the disk cache.
    pub from_cache: bool,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

impl LoadedPlugin {
    /// The plugin's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Per-call state: WASI (empty), limits, the gate, the deadline, captured stderr.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    gate: Gate,
    client: reqwest::Client,
    plugin: String,
    deadline: Instant,
    stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Resolves names for plugin requests, refusing internal addresses (rebinding protection).
struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| {
                    host.eq_ignore_ascii_case("localhost") || resolved_address_allowed(a.ip())
                })
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to internal addresses; list the address itself in allow_hosts").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn status_text(status: u16) -> String {
    status.to_string()
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let body = request.body.unwrap_or_default();
        let checked = match self.gate.check(&request.url, &request.headers, &body) {
            Ok(checked) => checked,
            Err(GateError::Denied(why)) => {
                tracing::warn!(plugin = %self.plugin, reason = %why, "plugin request denied");
                return Err(http::HttpError::Denied(why));
            }
            Err(GateError::InvalidUrl(why)) => return Err(http::HttpError::InvalidUrl(why)),
            Err(GateError::TooLarge) => return Err(http::HttpError::TooLarge),
        };
        let method = match request.method {
            http::Method::Get => reqwest::Method::GET,
            http::Method::Head => reqwest::Method::HEAD,
            http::Method::Post => reqwest::Method::POST,
            http::Method::Put => reqwest::Method::PUT,
            http::Method::Patch => reqwest::Method::PATCH,
            http::Method::Delete => reqwest::Method::DELETE,
        };
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(http::HttpError::Timeout);
        }
        let path = checked.url.path().to_owned();
        let mut builder = self
            .client
            .request(method.clone(), checked.url)
            .timeout(remaining);
        for (name, value) in &checked.headers {
            builder = builder.header(name, value);
        }
        let started = Instant::now();
        let response = builder.body(body).send().await.map_err(|err| {
            if err.is_timeout() {
                http::HttpError::Timeout
            } else {
                http::HttpError::Transport(without_url(&err))
            }
        })?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                let value =
                    String::from_utf8_lossy(&redact(v.as_bytes(), &checked.used)).into_owned();
                (n.as_str().to_owned(), value)
            })
            .collect();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(http::HttpError::TooLarge);
        }
        let bytes = response.bytes().await.map_err(|err| {
            if err.is_timeout() {
                http::HttpError::Timeout
            } else {
                http::HttpError::Transport(without_url(&err))
            }
        })?;
        if bytes.len() > MAX_BODY {
            return Err(http::HttpError::TooLarge);
        }
        tracing::debug!(plugin = %self.plugin, method = %method, path = %path, status = %status_text(status), latency_ms = started.elapsed().as_millis() as u64, "plugin http request");
        Ok(http::Response {
            status,
            headers,
            body: redact(&bytes, &checked.used),
        })
    }
}

fn without_url(err: &reqwest::Error) -> String {
    let mut cause = std::error::Error::source(err);
    let mut detail = String::from("request failed");
    while let Some(inner) = cause {
        detail = inner.to_string();
        cause = inner.source();
    }
    detail
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        let message: String = message.chars().take(4096).collect();
        match level {
            log::Level::Trace => tracing::trace!(plugin = %self.plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin = %self.plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin = %self.plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin = %self.plugin, "{message}"),
            log::Level::Error => tracing::error!(plugin = %self.plugin, "{message}"),
        }
    }
}

impl crate::bindings::spindle::destination::types::Host for HostState {}

/// The engine, linker and compiled-code cache shared by every plugin.
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache_dir: Option<PathBuf>,
    client: reqwest::Client,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

fn engine_error(err: impl std::fmt::Display) -> PluginError {
    PluginError::Engine(err.to_string())
}

impl PluginHost {
    /// A host whose compiled code is cached in `cache_dir` (none: compile at every load).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(true);
        config.max_wasm_stack(512 * 1024);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(128);
        pool.total_core_instances(1024);
        pool.max_core_instances_per_component(32);
        pool.total_memories(256);
        pool.max_memories_per_component(8);
        pool.total_tables(512);
        pool.max_tables_per_component(16);
        pool.total_stacks(128);
        pool.max_memory_size(1 << 30);
        pool.linear_memory_keep_resident(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_error)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("spindle-plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_error)?;
        Destination::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(engine_error)?;
        // reqwest is built without a default TLS provider; the process uses ring (as the sources do).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicResolver))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("spindle-plugin-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(engine_error)?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache_dir,
            client,
        })
    }

    fn cache_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(Sha256::digest(wasm)),
            engine_hash.finish()
        );
        Some(dir.join(key))
    }

    /// Checks that the component speaks `spindle:destination@0.1.0`.
    fn check_version(&self, name: &str, component: &Component) -> Result<(), PluginError> {
        let ty = component.component_type();
        let names: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .chain(ty.exports(&self.engine).map(|(n, _)| n.to_owned()))
            .collect();
        let ours: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with(&format!("{PACKAGE}/")))
            .collect();
        if let Some(other) = ours
            .iter()
            .find(|n| !n.ends_with(&format!("@{SUPPORTED_VERSION}")))
        {
            let version = other
                .rsplit_once('@')
                .map_or("an unversioned package", |(_, v)| v);
            return Err(PluginError::Version {
                plugin: name.to_owned(),
                found: format!("{PACKAGE}@{version}"),
            });
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        for needed in [
            "describe",
            "validate-config",
            "sync-batch",
            "delete-subjects",
        ] {
            if !exports.iter().any(|e| e == needed) {
                return Err(PluginError::Invalid {
                    plugin: name.to_owned(),
                    reason: format!(
                        "it does not export `{needed}`: it is not a {PACKAGE}@{SUPPORTED_VERSION} destination"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The component's imports and exports, by name.
    pub fn interface(&self, plugin_path: &Path) -> Result<(Vec<String>, Vec<String>), PluginError> {
        let wasm = std::fs::read(plugin_path).map_err(|source| PluginError::Read {
            path: plugin_path.to_owned(),
            source,
        })?;
        let component =
            Component::new(&self.engine, &wasm).map_err(|err| PluginError::Invalid {
                plugin: plugin_path.display().to_string(),
                reason: format!("{err:#}"),
            })?;
        let ty = component.component_type();
        Ok((
            ty.imports(&self.engine)
                .map(|(n, _)| n.to_owned())
                .collect(),
            ty.exports(&self.engine)
                .map(|(n, _)| n.to_owned())
                .collect(),
        ))
    }

    /// Loads a component from `path`, from the compiled cache when possible.
    pub fn load(&self, path: &Path) -> Result<LoadedPlugin, PluginError> {
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
        let wasm = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |err: wasmtime::Error| PluginError::Invalid {
            plugin: name.clone(),
            reason: format!("{err:#}"),
        };
        let cache = self.cache_path(&wasm);
        let cached = cache
            .as_deref()
            .filter(|p| p.exists())
            .and_then(|p| load_cached(&self.engine, p));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, &wasm).map_err(invalid)?;
                if let Some(cache) = &cache {
                    store_cached(&self.engine, &wasm, cache);
                }
                component
            }
        };
        self.check_version(&name, &component)?;
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let pre = DestinationPre::new(pre).map_err(invalid)?;
        Ok(LoadedPlugin {
            name,
            pre,
            from_cache,
        })
    }

    fn store(&self, plugin: &LoadedPlugin, limits: &CallLimits) -> Store<HostState> {
        let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(16 * 1024);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let memory = usize::try_from(limits.limits.memory_bytes).unwrap_or(usize::MAX);
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(32)
                .tables(32)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            gate: Gate::new(limits.allow_hosts.clone(), limits.secrets.clone()),
            client: self.client.clone(),
            plugin: plugin.name.clone(),
            deadline: Instant::now() + limits.limits.timeout,
            stderr,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let _ = store.set_fuel(limits.limits.fuel.unwrap_or(u64::MAX));
        let _ = store.fuel_async_yield_interval(Some(10_000_000));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                return Err(wasmtime::format_err!(
                    "the plugin ran past its wall-time limit"
                ));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }

    /// Runs `call` on a fresh instance within the limits; turns traps, limits and panics into errors.
    async fn call<T>(
        &self,
        plugin: &LoadedPlugin,
        limits: &CallLimits,
        call: &'static str,
        run: impl AsyncFnOnce(&Destination, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let mut store = self.store(plugin, limits);
        let work = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            run(&instance, &mut store).await
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(limits.limits.timeout, work).await;
        metrics::histogram!(
            "spindle_plugin_call_duration_seconds",
            "plugin" => plugin.name.clone(),
            "call" => call,
        )
        .record(started.elapsed().as_secs_f64());
        match outcome {
            Err(_) => Err(PluginError::Timeout {
                plugin: plugin.name.clone(),
                call,
                limit: limits.limits.timeout,
            }),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let stderr = String::from_utf8_lossy(&store.data().stderr.contents())
                    .trim()
                    .to_owned();
                let mut cause = match err.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::OutOfFuel) => {
                        "it used up its CPU budget (fuel)".to_owned()
                    }
                    Some(wasmtime::Trap::StackOverflow) => "stack overflow".to_owned(),
                    Some(trap) => format!("trap: {trap}"),
                    None => format!("{:#}", err.root_cause()),
                };
                if err.to_string().contains("growing memory")
                    || format!("{err:#}").contains("growing memory")
                {
                    cause = format!(
                        "it exceeded its memory limit of {} bytes",
                        limits.limits.memory_bytes
                    );
                }
                if !stderr.is_empty() {
                    let last: String = stderr
                        .lines()
                        .rev()
                        .take(3)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join(" | ");
                    cause = format!("{cause}; it wrote: {last}");
                }
                Err(PluginError::Trap {
                    plugin: plugin.name.clone(),
                    call,
                    cause,
                })
            }
        }
    }

    /// Instantiates the plugin once and drops the instance: surfaces instantiation problems (imports,
    /// start functions, limits) before the first real call.
    pub async fn warm_up(
        &self,
        plugin: &LoadedPlugin,
        limits: &CallLimits,
    ) -> Result<(), PluginError> {
        self.call(plugin, limits, "instantiate", async |_instance, _store| {
            Ok(())
        })
        .await
    }

    /// `describe`.
    pub async fn describe(
        &self,
        plugin: &LoadedPlugin,
        limits: &CallLimits,
    ) -> Result<PluginInfo, PluginError> {
        self.call(plugin, limits, "describe", async |instance, store| {
            instance.call_describe(store).await
        })
        .await
    }

    /// `validate-config`.
    pub async fn validate_config(
        &self,
        plugin: &LoadedPlugin,
        limits: &CallLimits,
        config: &str,
    ) -> Result<Result<(), String>, PluginError> {
        self.call(
            plugin,
            limits,
            "validate-config",
            async |instance, store| instance.call_validate_config(store, config).await,
        )
        .await
    }

    /// `sync-batch`.
    pub async fn sync_batch(
        &self,
        plugin: &LoadedPlugin,
        limits: &CallLimits,
        batch: &Batch,
    ) -> Result<Result<Vec<RecordOutcome>, BatchError>, PluginError> {
        self.call(plugin, limits, "sync-batch", async |instance, store| {
            instance.call_sync_batch(store, batch).await
        })
        .await
    }

    /// `delete-subjects`.
    pub async fn delete_subjects(
        &self,
        plugin: &LoadedPlugin,
        limits: &CallLimits,
        config: &str,
        subjects: &[Vec<Identifier>],
    ) -> Result<Result<Vec<Outcome>, BatchError>, PluginError> {
        self.call(
            plugin,
            limits,
            "delete-subjects",
            async |instance, store| instance.call_delete_subjects(store, config, subjects).await,
        )
        .await
    }
}

/// Loads compiled code written by [`store_cached`].
#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> Option<Component> {
    // Read into memory rather than mapped: a mapped file rewritten by another process would fault.
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "cannot read a cached plugin");
            return None;
        }
    };
    // SAFETY: `deserialize` trusts the bytes to be wasmtime's own output. The file is in the host's cache
    // folder, written only by `store_cached` from this engine's `precompile_component`, and its name binds it
    // to the SHA-256 of the source wasm and to the engine's compatibility hash; wasmtime also checks the
    // header and refuses code from another version or configuration.
    match unsafe { Component::deserialize(engine, &bytes) } {
        Ok(component) => Some(component),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "ignoring an unusable cached plugin");
            None
        }
    }
}

fn store_cached(engine: &Engine, wasm: &[u8], path: &Path) {
    let compiled = match engine.precompile_component(wasm) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(error = %err, "cannot precompile the plugin for the cache");
            return;
        }
    };
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let staging = path.with_extension(format!("{}.tmp", std::process::id()));
        std::fs::write(&staging, compiled)?;
        std::fs::rename(staging, path)
    };
    if let Err(err) = write() {
        tracing::warn!(path = %path.display(), error = %err, "cannot write the plugin cache");
    }
}
