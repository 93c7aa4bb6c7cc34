//! The sandbox grants a flow file gives a plugin, as the plugin runtime takes them.

use stepflow_flowfile::{PluginDecl, SecretSource};
use stepflow_plugin::{DirGrant, Grants, HttpGrant, PluginOptions, Secrets};

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
    grants.http = decl
        .http
        .iter()
        .map(|h| HttpGrant {
            plain: h.plain,
            host: h.host.clone(),
            port: h.port,
            path: h.path.clone(),
            methods: h.methods.clone(),
        })
        .collect();
    let (limits, set) = (&mut grants.http_limits, &decl.http_limits);
    limits.connect_timeout = set.connect_timeout.unwrap_or(limits.connect_timeout);
    limits.timeout = set.timeout.unwrap_or(limits.timeout);
    limits.max_response_bytes = set.max_response_bytes.unwrap_or(limits.max_response_bytes);
    limits.max_requests = set.max_requests.unwrap_or(limits.max_requests);
    Ok(PluginOptions {
        grants,
        reuse_instances: decl.reuse_instances,
    })
}

/// Refuses a plugin that imports `wasi:http` when the flow grants it nothing to call: every
/// request it made would be refused, so the flow is told now, at the plugin, with the key to add.
pub(crate) fn check_http(
    file: &stepflow_flowfile::FlowFile,
    decl: &PluginDecl,
    plugin: &stepflow_plugin::Plugin,
) -> Result<(), EngineError> {
    if !plugin.imports_http() || !decl.http.is_empty() {
        return Ok(());
    }
    let message = format!(
        "plugin `{}` imports wasi:http (it makes HTTP requests), but the flow grants it nothing \
         to call",
        decl.name
    );
    let hint = "list what it may call under the plugin, e.g.\n      http:\n        - { url: \
                \"https://api.example.com/v1/*\", methods: [GET, POST] }";
    Err(
        stepflow_flowfile::Diagnostic::new(&file.path, decl.at, message)
            .with_hint(hint)
            .into(),
    )
}
