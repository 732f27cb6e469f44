//! The WebAssembly destination host: loads plugins built against `spindle:destination@0.1.0` and runs
//! them sandboxed.
//!
//! Contract:
//! - [`PluginHost::load`] checks the component's world and version ("plugin `x` targets
//!   spindle:destination@0.3.0; this build supports 0.1"), compiles it once and caches the compiled code
//!   on disk (keyed by the wasm's SHA-256 and the engine's compatibility hash), and pre-instantiates it.
//! - Every call (`describe`, `validate-config`, `sync-batch`, `delete-subjects`) gets a fresh instance from
//!   the pooling allocator, with the destination's limits: linear memory, CPU (fuel, when configured) and
//!   wall time (an epoch deadline inside wasm, a timeout around host calls). A trap, a loop, an allocation
//!   bomb, a stack overflow or a panic fails that call with [`PluginError`] naming the plugin and the
//!   cause; the instance is dropped and nothing else is affected.
//! - The plugin reaches the network only through the host's `http` import and the [`gate`]: the
//!   destination's `allow_hosts`, secrets by reference, no redirects, redacted answers. WASI is linked with
//!   an empty context: no files, no environment, no sockets.
//! - The plugin reports per-record outcomes; retries, backoff and rate limits belong to the caller.

pub mod gate;
mod host;

pub use host::{CallLimits, LoadedPlugin, PluginError, PluginHost, SUPPORTED_VERSION, locate};

/// The generated bindings of the `destination` world (the crate's only `bindgen!`).
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "destination",
        path: "../../plugins/wit/destination-0.1.0",
        imports: { default: async },
        exports: { default: async },
    });
}

pub use bindings::spindle::destination::types::{
    Batch, BatchError, Identifier, Outcome, PluginInfo, RecordOutcome, Removal, SyncMode, Upsert,
};
