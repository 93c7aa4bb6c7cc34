//! What can go wrong while loading a flow or driving a run, in the engine's own terms.

use std::path::PathBuf;

use stepflow_flowfile::Diagnostic;
use stepflow_plugin::PluginError;
use stepflow_store::StoreError;

/// Why the engine could not load a flow or drive a run; front ends map each kind to what they
/// show (the CLI: a message, a hint and an exit code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The flow file is wrong at a place in it (syntax, names, kinds, missing files).
    #[error("{0}")]
    Flow(#[from] Diagnostic),
    /// The flow file's items do not make a valid flow (e.g. a duplicate transition).
    #[error("{file}: {detail}")]
    InvalidFlow {
        /// The flow file.
        file: PathBuf,
        /// What the model refused.
        detail: String,
    },
    /// A plugin could not be loaded or the WebAssembly engine not set up.
    #[error("{0}")]
    Plugin(#[from] PluginError),
    /// A grant in the flow file cannot be honoured on this host.
    #[error("plugin `{plugin}`: {detail}")]
    Grant {
        /// The plugin.
        plugin: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A plugin's `build` command could not be run or failed.
    #[error("the build command of plugin `{plugin}` {detail}: {command}")]
    Build {
        /// The plugin whose command it is.
        plugin: String,
        /// The command.
        command: String,
        /// How it failed (`failed (exit status: 1)`, `could not start (...)`).
        detail: String,
    },
    /// A stop was requested while a plugin's `build` command ran; it was stopped with
    /// everything it started, and no run was created.
    #[error("stopped the build command of plugin `{plugin}` as requested: {command}")]
    BuildStopped {
        /// The plugin whose command it is.
        plugin: String,
        /// The command.
        command: String,
    },
    /// A saved run cannot go on with this flow (a step it is at no longer exists).
    #[error("cannot resume run {run}: {detail}")]
    Resume {
        /// The run.
        run: String,
        /// Why.
        detail: String,
    },
    /// An operator cancelled the run; it is never resumed.
    #[error("run {run} was cancelled; start a new run instead")]
    Cancelled {
        /// The run.
        run: String,
    },
    /// Another driver (a live process, here or on another host) holds the run's lease.
    #[error(
        "run {run} is being driven by {owner}, whose lease runs until {} UTC unless renewed",
        crate::time::utc_time(*.expires_ms)
    )]
    Busy {
        /// The run.
        run: String,
        /// The lease holder (`host:pid:start`).
        owner: String,
        /// When its lease ends unless renewed (Unix milliseconds).
        expires_ms: u64,
    },
    /// A stored deployment could not be loaded; `source` says why.
    #[error("deployment {id} of flow `{flow}` (deployed from {source_path}): {source}")]
    Deployment {
        /// The deployment's short id.
        id: String,
        /// Its flow.
        flow: String,
        /// The flow file it was deployed from (which need not exist any more).
        source_path: String,
        /// What went wrong loading it.
        source: Box<EngineError>,
    },
    /// A stored deployment's content does not match its hashes (changed outside stepflow, or
    /// damaged); it is not run.
    #[error(
        "deployment {id} is damaged: {detail}; it is not run (start a new run of the flow file to \
         make a fresh deployment)"
    )]
    DamagedDeployment {
        /// The deployment's short id.
        id: String,
        /// What does not match.
        detail: String,
    },
    /// A run cannot move onto another deployment (`stepflow upgrade`); nothing was changed.
    #[error("cannot move run {run} onto deployment {deployment}: {refusal}")]
    Upgrade {
        /// The run.
        run: String,
        /// The deployment's short id.
        deployment: String,
        /// Why not.
        refusal: crate::upgrade::UpgradeRefusal,
    },
    /// The store failed or refused.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A new run cannot start from the state after a step of this one.
    #[error("cannot rerun run {run} from a step: {detail}")]
    Rerun {
        /// The run.
        run: String,
        /// Why not.
        detail: String,
    },
    /// A submitted flow asks for a grant the server's policy does not allow.
    #[error(
        "plugin `{plugin}` asks for {grant} (`{key}`), which this server does not allow for submitted flows; nothing was stored (its operator can allow it with `stepflow server {allow}`)"
    )]
    NotAllowed {
        /// The plugin.
        plugin: String,
        /// What it asks for.
        grant: String,
        /// Where the flow file asks for it.
        key: String,
        /// The server option that would allow it.
        allow: String,
    },
    /// A submission that cannot be deployed as sent (a component missing or not a component).
    #[error("{detail}")]
    Submission {
        /// What is wrong and what to send.
        detail: String,
    },
    /// A signal for a run whose flow has no wait for a signal of that name: no wait would
    /// ever take it, so it is refused rather than kept forever.
    #[error(
        "run `{run}` (flow `{flow}`) has no wait for a signal `{signal}`, so nothing would take it; {}",
        match .awaited.as_slice() {
            [] => "the flow waits for no signal at all".to_string(),
            names => format!("it waits for {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")),
        }
    )]
    UnknownSignal {
        /// The run.
        run: String,
        /// Its flow.
        flow: String,
        /// The signal's name.
        signal: String,
        /// The signal names the flow's waits are for.
        awaited: Vec<String>,
    },
}
