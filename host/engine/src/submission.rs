//! Flows submitted by someone the host does not trust with itself (the HTTP API): their
//! plugins come as bytes, no `build` command of theirs ever runs, and every grant they ask for
//! must fall inside the policy the operator set (by default: nothing), or the submission is
//! refused, naming the grant and the policy key that would allow it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use stepflow_flowfile::FlowFile;
use stepflow_model::{Clock, SystemClock};
use stepflow_store::{DeployedPlugin, Deployment};

use crate::deployment::{deployment_id, flow_dir, grants_dirs, hex};
use crate::error::EngineError;

/// Where a submitted flow file is said to be: relative paths in it resolve here, which holds
/// nothing, so a relative directory grant never names a real directory by accident.
pub const SUBMITTED_FLOW_PATH: &str = "/submitted/flow.yaml";

/// What a submitted flow may be granted; the default grants nothing.
#[derive(Clone, Debug, Default)]
pub struct SubmitPolicy {
    /// Directories (and everything below them) a plugin may be granted.
    pub dirs: Vec<AllowedDir>,
    /// Environment variables a plugin may be granted.
    pub env: Vec<String>,
}

/// A directory submitted flows may grant.
#[derive(Clone, Debug)]
pub struct AllowedDir {
    /// The directory.
    pub path: PathBuf,
    /// Whether a grant of it may be writable.
    pub writable: bool,
}

/// Makes a deployment of a submitted flow: `source` with the component bytes of each plugin
/// it declares, by name. Refused when a plugin is missing, extra or not a component, or a grant
/// falls outside `policy` ([`EngineError::NotAllowed`]). Runs nothing and loads nothing: load
/// the result with [`crate::Engine::load_deployment`] to check the components themselves.
pub fn deploy_submission(
    source: String,
    mut plugins: BTreeMap<String, Vec<u8>>,
    policy: &SubmitPolicy,
) -> Result<Deployment, EngineError> {
    let path = Path::new(SUBMITTED_FLOW_PATH);
    let file = stepflow_flowfile::parse(&source, path)?;
    check_grants(&file, policy)?;
    let mut deployed = Vec::with_capacity(file.plugins.len());
    for name in file.plugins.keys() {
        let bytes = plugins.remove(name).ok_or_else(|| EngineError::Submission {
            detail: format!(
                "the flow declares plugin `{name}`, but the submission has no component for it; \
                 send its built `.wasm` under `plugins.{name}`"
            ),
        })?;
        if !is_component(&bytes) {
            return Err(EngineError::Submission {
                detail: format!(
                    "plugin `{name}` is not a WebAssembly component (a core module, or not \
                     WebAssembly); build it for wasm32-wasip2 and send the component"
                ),
            });
        }
        deployed.push(DeployedPlugin {
            name: name.clone(),
            sha256: hex(&Sha256::digest(&bytes)),
            bytes: Arc::from(bytes),
        });
    }
    if let Some(extra) = plugins.keys().next() {
        return Err(EngineError::Submission {
            detail: format!(
                "the submission has a component `{extra}` that the flow does not declare"
            ),
        });
    }
    let dir = grants_dirs(&file).then(|| flow_dir(path));
    let id = deployment_id(
        &source,
        deployed
            .iter()
            .map(|p| (p.name.as_str(), p.sha256.as_str())),
        dir.as_deref(),
    );
    Ok(Deployment {
        id,
        flow: file.flow.clone(),
        source,
        source_path: SUBMITTED_FLOW_PATH.to_string(),
        plugins: deployed,
        created_ms: SystemClock.now_ms(),
    })
}

/// The first grant of `file` that `policy` does not allow.
fn check_grants(file: &FlowFile, policy: &SubmitPolicy) -> Result<(), EngineError> {
    for (name, decl) in &file.plugins {
        for var in &decl.env {
            if !policy.env.contains(var) {
                return Err(EngineError::NotAllowed {
                    plugin: name.clone(),
                    grant: format!("the environment variable `{var}`"),
                    key: format!("plugins.{name}.env"),
                    allow: format!("--allow-env {var}"),
                });
            }
        }
        for secret in &decl.secrets {
            let refused = |grant: String, allow: String| EngineError::NotAllowed {
                plugin: name.clone(),
                grant,
                key: format!("plugins.{name}.secrets.{}", secret.name),
                allow,
            };
            match &secret.source {
                stepflow_flowfile::SecretSource::Env(var) if !policy.env.contains(var) => {
                    return Err(refused(
                        format!("a secret from the environment variable `{var}`"),
                        format!("--allow-env {var}"),
                    ));
                }
                stepflow_flowfile::SecretSource::File(path) if !within(path, policy, false) => {
                    return Err(refused(
                        format!("a secret from the file `{}`", path.display()),
                        format!("--allow-dir {}", path.parent().unwrap_or(path).display()),
                    ));
                }
                _ => {}
            }
        }
        for dir in &decl.dirs {
            if !within(&dir.host, policy, dir.writable) {
                let how = if dir.writable { "writable " } else { "" };
                return Err(EngineError::NotAllowed {
                    plugin: name.clone(),
                    grant: format!("the {how}directory `{}`", dir.host.display()),
                    key: format!("plugins.{name}.dirs"),
                    allow: format!(
                        "--allow-dir {}{}",
                        dir.host.display(),
                        if dir.writable { ":rw" } else { "" }
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Whether `path` (which must exist) lies inside a directory `policy` allows (a writable one
/// when `writable`).
fn within(path: &Path, policy: &SubmitPolicy, writable: bool) -> bool {
    std::fs::canonicalize(path).ok().is_some_and(|host| {
        policy.dirs.iter().any(|a| {
            std::fs::canonicalize(&a.path).is_ok_and(|root| host.starts_with(root))
                && (a.writable || !writable)
        })
    })
}

/// Whether `bytes` start like a WebAssembly component (magic, then the component layer).
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
