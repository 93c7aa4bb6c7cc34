//! The sandbox grants a flow file gives a plugin, as the plugin runtime takes them.

use stepflow_flowfile::{PluginDecl, SecretSource};
use stepflow_plugin::{DirGrant, Grants, PluginOptions, Secrets};

use crate::error::EngineError;

/// A plugin's options from its declaration; env grants are read from this process's
/// environment now, so a missing variable is refused before the run starts.
pub(crate) fn options(decl: &PluginDecl) -> Result<PluginOptions, EngineError> {
    let mut grants = Grants::default();
    for var in &decl.env {
        let value = std::env::var(var).map_err(|_| EngineError::Grant {
            plugin: decl.name.clone(),
            detail: format!(
                "it is granted the environment variable `{var}`, but it is not set; set it or \
                 remove it from `env`"
            ),
        })?;
        grants.env.insert(var.clone(), value);
    }
    let mut secrets = Vec::with_capacity(decl.secrets.len());
    for secret in &decl.secrets {
        let refused = |detail: String| EngineError::Grant {
            plugin: decl.name.clone(),
            detail,
        };
        let value = match &secret.source {
            SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                refused(format!(
                    "its secret `{}` comes from the environment variable `{var}`, which is not \
                     set; set it, or read the secret from a file (`{{file: PATH}}`)",
                    secret.name
                ))
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| {
                    refused(format!(
                        "its secret `{}` comes from {}, which cannot be read: {e}",
                        secret.name,
                        path.display()
                    ))
                })?,
        };
        secrets.push((secret.name.clone(), value));
    }
    grants.secrets = Secrets::new(secrets).map_err(|detail| EngineError::Grant {
        plugin: decl.name.clone(),
        detail,
    })?;
    grants.dirs = decl
        .dirs
        .iter()
        .map(|d| DirGrant {
            host: d.host.clone(),
            guest: d.guest.clone(),
            writable: d.writable,
        })
        .collect();
    if let Some(m) = decl.memory_bytes {
        grants.memory_bytes = usize::try_from(m).unwrap_or(usize::MAX);
    }
    if let Some(t) = decl.timeout {
        grants.timeout = t;
    }
    grants.fuel = decl.fuel;
    if let Some(m) = decl.max_output_bytes {
        grants.max_output_bytes = usize::try_from(m).unwrap_or(usize::MAX);
    }
    Ok(PluginOptions {
        grants,
        reuse_instances: decl.reuse_instances,
    })
}
