//! `stepflow validate`: parse a flow file, load its plugins, check every function use.

use std::path::Path;

use super::engine;
use crate::error::Exit;
use crate::progress::Progress;
use crate::views;

/// `stepflow validate FLOW`.
pub fn validate(flow_path: &Path, json: bool) -> Result<(), Exit> {
    // A first load of a large component compiles it for seconds: the live line shows that
    // work goes on (the plugin crate logs which plugin compiles, and how long it took).
    let progress = Progress::new(json);
    progress.status("loading the flow's plugins");
    let loaded = engine()?.load(flow_path);
    progress.finish();
    let loaded = loaded?;
    views::validated::print(flow_path, &loaded, json);
    Ok(())
}
