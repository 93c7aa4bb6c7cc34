//! Deployments: a flow file's source and the bytes of every plugin it declares, taken once and
//! kept in the store, content-addressed, so a run no longer depends on files on disk.
//!
//! # The deployment id
//!
//! A deployment's id is the lower-case hex SHA-256 of this byte string (version 1), where
//! `str(x)` is the length of `x` in bytes as a big-endian `u64` followed by those bytes:
//!
//! ```text
//! str("stepflow.deployment.v1")
//! str(flow source text, exactly as read: UTF-8, comments and white space included)
//! u64 BE number of plugins
//! for each plugin, sorted by name (byte order):
//!     str(plugin name) str(lower-case hex SHA-256 of the plugin's .wasm bytes)
//! 0x00                          when no plugin is granted `dirs`
//! 0x01 str(flow file directory) otherwise (the canonical directory relative `dirs` resolve from)
//! ```
//!
//! Editing the flow file (even a comment) or rebuilding a `.wasm` into other bytes gives a new
//! id; the same content gives the same id, wherever it was read from, unless the flow grants
//! directories: their host paths resolve against the flow file's directory, so the same text in
//! another directory grants other directories and is another deployment.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stepflow_flowfile::{Diagnostic, FlowFile, Position};
use stepflow_model::{Clock, StepFlow, SystemClock};
use stepflow_plugin::{Plugin, PluginError};
use stepflow_store::{DeployedPlugin, Deployment};

use crate::build::build_plugins;
use crate::error::EngineError;
use crate::functions::{LoadedPlugins, Placeholders};
use crate::grants::{check_http, options};
use crate::load::{Engine, LoadedFlow, compile};
use crate::observer::Observer;
use crate::stop::StopRequests;

/// How many hex characters of a deployment id people see (`stepflow runs`, messages).
pub const SHORT_ID_LEN: usize = 12;

/// The short form of a deployment id that listings and messages show: its first
/// [`SHORT_ID_LEN`] characters (any unique prefix names a deployment).
pub fn short_id(id: &str) -> &str {
    id.get(..SHORT_ID_LEN).unwrap_or(id)
}

impl Engine {
    /// Reads the flow file at `path` (within the engine's flow-size limit) and the bytes of
    /// every plugin it declares, into a deployment whose id is their content hash (see the
    /// module documentation). Runs no `build` command and loads no plugin: load the result with
    /// [`Engine::load_deployment`], which checks everything else.
    pub fn deploy(&self, path: &Path) -> Result<Deployment, EngineError> {
        let (source, file) = self.read_flow_source(path)?;
        deploy_file(path, source, &file)
    }

    /// Like [`Engine::deploy`], but runs the plugins' `build` commands first (see
    /// [`Engine::build_and_load`]), so the deployment holds what they built.
    pub async fn build_and_deploy(
        &self,
        path: &Path,
        timeout: Duration,
        stop: &StopRequests,
        observer: &mut dyn Observer,
    ) -> Result<Deployment, EngineError> {
        let (source, file) = self.read_flow_source(path)?;
        build_plugins(&file, &self.build_env, timeout, stop, observer).await?;
        deploy_file(path, source, &file)
    }

    /// Loads a stored deployment: parses its source (relative paths resolve against its
    /// original `source_path`'s directory, as they did for the file), loads each plugin from
    /// the stored bytes (compiled components are cached by content hash) and compiles the flow.
    /// Never runs a `build` command and never reads a `.wasm` file. Every error names the
    /// deployment; stored bytes that do not match their hashes are refused as damaged.
    pub fn load_deployment(&self, deployment: &Deployment) -> Result<LoadedFlow, EngineError> {
        let in_deployment = |e: EngineError| in_deployment(deployment, e);
        let file = parse_stored(deployment)?;
        for name in file.plugins.keys() {
            stored_plugin(deployment, name)?;
        }
        verify(deployment, &file)?;
        let mut plugins = std::collections::BTreeMap::new();
        for (name, decl) in &file.plugins {
            let stored = stored_plugin(deployment, name)?;
            let origin = format!(
                "{} as deployed (sha256 {})",
                decl.wasm.display(),
                short_id(&stored.sha256)
            );
            let plugin = Plugin::from_bytes(
                &self.runtime,
                name,
                &stored.bytes,
                &origin,
                options(decl).map_err(in_deployment)?,
            )
            .map_err(|e| in_deployment(e.into()))?;
            check_http(&file, decl, &plugin).map_err(in_deployment)?;
            plugins.insert(name.clone(), plugin);
        }
        let steps = file
            .to_steps(&LoadedPlugins(&plugins))
            .map_err(|e| in_deployment(e.into()))?;
        let flow = compile(&file, steps).map_err(in_deployment)?;
        Ok(LoadedFlow {
            file,
            flow,
            plugins,
            deployment: Some(deployment.id.clone()),
        })
    }

    /// The flow file's text, read within the flow-size limit, and the file parsed from it.
    fn read_flow_source(&self, path: &Path) -> Result<(String, FlowFile), EngineError> {
        let source = read_source(path, self.max_flow_bytes)?;
        let file = stepflow_flowfile::parse(&source, path)?;
        Ok((source, file))
    }
}

/// A deployment's flow compiled without its plugins: enough to check whether a run's state
/// fits it (`stepflow upgrade`) without loading or granting anything.
pub fn shape_deployment(deployment: &Deployment) -> Result<StepFlow, EngineError> {
    let file = parse_stored(deployment)?;
    let steps = file
        .to_steps(&Placeholders)
        .map_err(|e| in_deployment(deployment, e.into()))?;
    compile(&file, steps).map_err(|e| in_deployment(deployment, e))
}

/// The id of a deployment of `source` with `plugins` (name, hex SHA-256), read from a flow
/// file in `dir` when its plugins are granted directories (see the module documentation).
pub fn deployment_id<'a>(
    source: &str,
    plugins: impl IntoIterator<Item = (&'a str, &'a str)>,
    dir: Option<&Path>,
) -> String {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut plugins: Vec<(&str, &str)> = plugins.into_iter().collect();
    plugins.sort_unstable();
    let mut h = Sha256::new();
    field(&mut h, b"stepflow.deployment.v1");
    field(&mut h, source.as_bytes());
    h.update((plugins.len() as u64).to_be_bytes());
    for (name, sha256) in plugins {
        field(&mut h, name.as_bytes());
        field(&mut h, sha256.as_bytes());
    }
    match dir {
        None => h.update([0]),
        Some(dir) => {
            h.update([1]);
            field(&mut h, dir.as_os_str().as_encoded_bytes());
        }
    }
    hex(&h.finalize())
}

/// Reads every plugin the parsed `file` declares and makes the deployment.
fn deploy_file(path: &Path, source: String, file: &FlowFile) -> Result<Deployment, EngineError> {
    file.check_wasm_files()?;
    let mut plugins = Vec::with_capacity(file.plugins.len());
    for (name, decl) in &file.plugins {
        let bytes = std::fs::read(&decl.wasm).map_err(|source| PluginError::Read {
            plugin: name.clone(),
            path: decl.wasm.display().to_string(),
            source,
        })?;
        plugins.push(DeployedPlugin {
            name: name.clone(),
            sha256: hex(&Sha256::digest(&bytes)),
            bytes: Arc::from(bytes),
        });
    }
    let source_path = absolute(path);
    let dir = grants_dirs(file).then(|| flow_dir(&source_path));
    let id = deployment_id(
        &source,
        plugins.iter().map(|p| (p.name.as_str(), p.sha256.as_str())),
        dir.as_deref(),
    );
    Ok(Deployment {
        id,
        flow: file.flow.clone(),
        source,
        source_path: source_path.display().to_string(),
        plugins,
        created_ms: SystemClock.now_ms(),
    })
}

/// A deployment's stored source, parsed as the file it was read from.
pub(crate) fn parse_stored(deployment: &Deployment) -> Result<FlowFile, EngineError> {
    let file = stepflow_flowfile::parse(&deployment.source, Path::new(&deployment.source_path))
        .map_err(|e| in_deployment(deployment, e.into()))?;
    if file.flow != deployment.flow {
        return Err(damaged(
            deployment,
            format!(
                "its source is of flow `{}`, but it is stored as flow `{}`",
                file.flow, deployment.flow
            ),
        ));
    }
    Ok(file)
}

/// Checks that the stored bytes are what the deployment's id says: each plugin's hash, and the
/// id over the source (parsed into `file`) and those hashes.
fn verify(deployment: &Deployment, file: &FlowFile) -> Result<(), EngineError> {
    for p in &deployment.plugins {
        let actual = hex(&Sha256::digest(&p.bytes));
        if actual != p.sha256 {
            return Err(damaged(
                deployment,
                format!(
                    "the stored bytes of plugin `{}` have SHA-256 {}, not the {} they were stored with",
                    p.name,
                    short_id(&actual),
                    short_id(&p.sha256)
                ),
            ));
        }
    }
    let dir = grants_dirs(file).then(|| flow_dir(Path::new(&deployment.source_path)));
    let id = deployment_id(
        &deployment.source,
        deployment
            .plugins
            .iter()
            .map(|p| (p.name.as_str(), p.sha256.as_str())),
        dir.as_deref(),
    );
    if id != deployment.id {
        return Err(damaged(
            deployment,
            format!(
                "its content has the id {}, not the one it is stored under",
                short_id(&id)
            ),
        ));
    }
    Ok(())
}

/// The stored plugin `name` of a deployment.
fn stored_plugin<'d>(
    deployment: &'d Deployment,
    name: &str,
) -> Result<&'d DeployedPlugin, EngineError> {
    deployment
        .plugins
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            damaged(
                deployment,
                format!("its source declares plugin `{name}`, but no bytes are stored for it"),
            )
        })
}

/// An error while loading `deployment`, naming it.
fn in_deployment(deployment: &Deployment, e: EngineError) -> EngineError {
    EngineError::Deployment {
        id: short_id(&deployment.id).to_string(),
        flow: deployment.flow.clone(),
        source_path: deployment.source_path.clone(),
        source: Box::new(e),
    }
}

/// A deployment whose stored content does not hold together.
fn damaged(deployment: &Deployment, detail: String) -> EngineError {
    EngineError::DamagedDeployment {
        id: short_id(&deployment.id).to_string(),
        detail,
    }
}

/// Whether any plugin is granted host directories, whose relative paths depend on where the
/// flow file is.
pub(crate) fn grants_dirs(file: &FlowFile) -> bool {
    file.plugins.values().any(|decl| !decl.dirs.is_empty())
}

/// The directory of an absolute flow file path.
pub(crate) fn flow_dir(path: &Path) -> PathBuf {
    crate::build::flow_dir(path).to_path_buf()
}

/// `path` made absolute without relying on the working directory later: canonical when it
/// exists, else joined to the current directory.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The flow file's text, at most `max_bytes` of it. Whatever stops it from being read (missing,
/// too large, not UTF-8) is reported in the flow-file crate's own words.
fn read_source(path: &Path, max_bytes: u64) -> Result<String, EngineError> {
    let read = || -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)?;
        Ok((bytes.len() as u64 <= max_bytes).then_some(bytes))
    };
    if let Some(text) = read()
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
    {
        return Ok(text);
    }
    // Read once more by the flow-file crate, for its located message and hint.
    Err(match stepflow_flowfile::load_with_limit(path, max_bytes) {
        Err(d) => d.into(),
        Ok(_) => Diagnostic::new(
            path,
            Position::default(),
            "the flow file changed while it was read",
        )
        .with_hint("run the command again")
        .into(),
    })
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_encoding_is_pinned() {
        let id = deployment_id("flow: x\n", [("b", "22"), ("a", "11")], None);
        assert_eq!(
            id,
            deployment_id("flow: x\n", [("a", "11"), ("b", "22")], None),
            "plugin order does not matter"
        );
        // The bytes of the module documentation's encoding, hashed; never change it silently.
        assert_eq!(
            id,
            "7c89a17612e4417ceb6e6ff809f606080329efd14addda8b6de6019639c69eed"
        );
    }

    #[test]
    fn every_part_changes_the_id() {
        let base = deployment_id("flow: x\n", [("a", "11")], None);
        assert_ne!(base, deployment_id("flow: x \n", [("a", "11")], None));
        assert_ne!(base, deployment_id("flow: x\n", [("a", "12")], None));
        assert_ne!(base, deployment_id("flow: x\n", [("b", "11")], None));
        assert_ne!(base, deployment_id("flow: x\n", [], None));
        assert_ne!(
            base,
            deployment_id("flow: x\n", [("a", "11")], Some(Path::new("/f")))
        );
        // Length prefixes: moving bytes between fields is another id.
        assert_ne!(
            deployment_id("", [("ab", "c")], None),
            deployment_id("", [("a", "bc")], None)
        );
    }

    /// A flow file in `dir` over a copy of the quickstart plugin there; `extra` goes under the
    /// plugin's declaration.
    fn quickstart(dir: &Path, extra: &str) -> PathBuf {
        let wasm = dir.join("q.wasm");
        std::fs::copy(stepflow_testkit::rust_plugin("quickstart"), &wasm).expect("copy");
        let flow = dir.join("q.yaml");
        let text = format!(
            "flow: q.v1\nplugins:\n  q:\n    wasm: q.wasm\n{extra}steps:\n  - do: q.step1\n  - name: c\n    wait-for: q.a-condition\n  - do: q.step2\n"
        );
        std::fs::write(&flow, text).expect("write");
        flow
    }

    #[test]
    fn a_deployment_is_its_content_and_loads_without_its_files() {
        let engine = Engine::new(None).expect("engine");
        let dir = tempfile::tempdir().expect("tempdir");
        let flow = quickstart(dir.path(), "");
        let first = engine.deploy(&flow).expect("deploy");
        let again = engine.deploy(&flow).expect("deploy");
        assert_eq!(first.id, again.id);
        assert_eq!(first.flow, "q.v1");
        assert!(Path::new(&first.source_path).is_absolute());
        assert_eq!(first.plugins.len(), 1);
        assert_eq!(first.plugins[0].sha256.len(), 64);

        // Other plugin bytes (a custom section more): another id.
        let wasm = dir.path().join("q.wasm");
        let mut bytes = std::fs::read(&wasm).expect("read");
        bytes.extend_from_slice(&[0, 6, 4, b'n', b'o', b't', b'e', b'x']);
        std::fs::write(&wasm, &bytes).expect("write");
        let rebuilt = engine.deploy(&flow).expect("deploy");
        assert_ne!(rebuilt.id, first.id);

        // Neither the flow file nor the component is read again.
        std::fs::remove_file(&flow).expect("rm");
        std::fs::remove_file(&wasm).expect("rm");
        let loaded = engine.load_deployment(&first).expect("load");
        assert_eq!(loaded.flow.name(), "q.v1");
        assert_eq!(loaded.deployment.as_deref(), Some(first.id.as_str()));
        let shaped = shape_deployment(&first).expect("shape");
        assert_eq!(shaped.definition_hash(), loaded.flow.definition_hash());
    }

    #[test]
    fn a_damaged_deployment_is_refused_by_name() {
        let engine = Engine::new(None).expect("engine");
        let dir = tempfile::tempdir().expect("tempdir");
        let deployment = engine.deploy(&quickstart(dir.path(), "")).expect("deploy");
        let short = short_id(&deployment.id).to_string();

        let mut bytes = deployment.clone();
        let mut flipped = bytes.plugins[0].bytes.to_vec();
        flipped[100] ^= 1;
        bytes.plugins[0].bytes = Arc::from(flipped);
        let err = engine.load_deployment(&bytes).err().expect("refused");
        assert!(
            matches!(err, EngineError::DamagedDeployment { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&short) && err.to_string().contains("`q`"),
            "{err}"
        );

        let mut source = deployment.clone();
        source.source.push_str("# edited\n");
        let err = engine.load_deployment(&source).err().expect("refused");
        assert!(
            matches!(err, EngineError::DamagedDeployment { .. }),
            "{err}"
        );

        let mut missing = deployment.clone();
        missing.plugins.clear();
        let err = engine.load_deployment(&missing).err().expect("refused");
        assert!(err.to_string().contains("no bytes are stored"), "{err}");

        // A flow whose function the stored plugin lacks: the error names the deployment.
        let mut wrong = deployment.clone();
        wrong.source = wrong.source.replace("q.step2", "q.step9");
        wrong.id = deployment_id(
            &wrong.source,
            [("q", wrong.plugins[0].sha256.as_str())],
            None,
        );
        let err = engine.load_deployment(&wrong).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("deployment {}", short_id(&wrong.id)))
                && text.contains("step9"),
            "{text}"
        );
    }

    #[test]
    fn directory_grants_tie_a_deployment_to_its_directory() {
        let engine = Engine::new(None).expect("engine");
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let plain = |dir: &Path| engine.deploy(&quickstart(dir, "")).expect("deploy").id;
        assert_eq!(plain(a.path()), plain(b.path()), "the same content");
        let dirs = "    dirs: [{ host: ./work, guest: /work }]\n";
        let granted = |dir: &Path| {
            std::fs::create_dir_all(dir.join("work")).expect("mkdir");
            let deployment = engine.deploy(&quickstart(dir, dirs)).expect("deploy");
            let loaded = engine.load_deployment(&deployment).expect("load");
            let host = loaded.file.plugins["q"].dirs[0].host.clone();
            (deployment.id, host)
        };
        let (id_a, host_a) = granted(a.path());
        let (id_b, host_b) = granted(b.path());
        assert_ne!(id_a, id_b, "relative grants resolve elsewhere");
        assert!(host_a.starts_with(std::fs::canonicalize(a.path()).expect("canon")));
        assert_ne!(host_a, host_b);
    }

    #[test]
    fn short_ids_are_prefixes() {
        assert_eq!(short_id(&"ab".repeat(32)), "abababababab");
        assert_eq!(short_id("abc"), "abc");
    }
}
