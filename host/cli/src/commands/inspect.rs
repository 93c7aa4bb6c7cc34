//! `stepflow inspect`: a plugin's step functions and their kinds.

use std::path::Path;

use stepflow_plugin::Plugin;

use super::engine;
use crate::error::Exit;
use crate::views;

/// `stepflow inspect PLUGIN.wasm`.
pub fn inspect(path: &Path, json: bool) -> Result<(), Exit> {
    let engine = engine()?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let plugin =
        Plugin::load(engine.runtime(), name, path, Default::default()).map_err(Exit::usage)?;
    views::exports::print(path, name, &plugin.exports(), plugin.imports_http(), json);
    Ok(())
}
