//! `stepflow rerun`: a new run from the state an old one had after one of its steps.

use stepflow_store::Database;

use super::open_store;
use crate::error::Exit;
use crate::output;

/// `stepflow rerun RUN --from N`.
pub async fn rerun(db: &Database, run_id: &str, from: u64, json: bool) -> Result<(), Exit> {
    let mut store = open_store(db)?;
    let id = stepflow_engine::rerun_from(&mut store, run_id, from).await?;
    if json {
        output::line(serde_json::json!({ "run": id, "rerun_of": run_id, "from_seq": from }));
    } else {
        output::line(format!(
            "run {id} starts from the state of run {run_id} after its step #{from}; `stepflow resume {id}` drives it (or a server will)"
        ));
    }
    Ok(())
}
