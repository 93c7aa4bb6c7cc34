//! Runs stepflow steps that are WebAssembly components, in a wasmtime sandbox.
//!
//! A [`Runtime`] holds the one engine of the process. [`Plugin::load`] compiles a component (or
//! takes it from the on-disk cache), reads its exports and classifies each function as an
//! action, a condition or an error handler by its signature. [`Plugin::action`],
//! [`Plugin::condition`] and [`Plugin::error_handler`] check a use against that before any run
//! starts and return a [`PluginFunction`], which implements the model's step traits: a plugin
//! step is just another step.
//!
//! Every call gets a fresh instance from a pre-linked `InstancePre` (nothing leaks between steps
//! or runs) unless the plugin opts into instance reuse. A plugin sees only what its [`Grants`]
//! allow; a trap, a time-out, a memory blow-up or malformed output becomes a
//! [`stepflow_model::StepError`] that names the plugin, the function and the step.
//!
//! This crate knows nothing of flow files, storage or terminals, and reads no environment
//! variables: the compile cache is wherever [`RuntimeConfig::cache_dir`] says, or nowhere.

mod cache;
mod call;
mod epoch;
mod exports;
mod load;
mod runtime;
mod sandbox;
mod secrets;
mod worker;

pub use cache::LoadedFrom;
pub use call::PluginFunction;
pub use exports::Export;
pub use load::{Plugin, PluginOptions};
pub use runtime::{Runtime, RuntimeConfig};
pub use sandbox::{DirGrant, Grants, HttpGrant, HttpLimits};
pub use secrets::{MIN_SECRET_BYTES, Secrets};
pub use stepflow_model::FunctionKind;

/// Host-side bindings of the `stepflow:plugin` WIT package.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "stepflow:plugin/plugin",
    });
}

/// Why a plugin could not be loaded or a function not used.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be set up.
    #[error("could not set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The `.wasm` file could not be read.
    #[error("cannot read plugin `{plugin}` from {path}: {source}")]
    Read {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not a valid component for this host.
    #[error("plugin `{plugin}` ({path}) is not a usable WebAssembly component: {reason}")]
    Invalid {
        /// The plugin's name.
        plugin: String,
        /// The file.
        path: String,
        /// What wasmtime said.
        reason: String,
    },
    /// A grant cannot be honoured.
    #[error("plugin `{plugin}`: {reason}")]
    Grant {
        /// The plugin's name.
        plugin: String,
        /// What is wrong with the grant.
        reason: String,
    },
    /// The function does not exist.
    #[error("plugin `{plugin}` has no step function `{function}`{hint}")]
    NoSuchFunction {
        /// The plugin's name.
        plugin: String,
        /// The function asked for.
        function: String,
        /// What it does have.
        hint: String,
    },
    /// The function exists but has another shape than the use needs.
    #[error(
        "`{plugin}.{function}` is used as {}, but it is {actual}; {} has the signature {signature}", wanted.with_article(), wanted.with_article()
    )]
    WrongKind {
        /// The plugin's name.
        plugin: String,
        /// The function.
        function: String,
        /// What the use needs.
        wanted: FunctionKind,
        /// What the function is.
        actual: String,
        /// The signature the use needs.
        signature: &'static str,
    },
}
