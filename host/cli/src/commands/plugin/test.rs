//! `stepflow plugin test`: builds a plugin project and runs its flow against a scratch
//! database, then prints the run's timeline.

use std::path::Path;

use stepflow_store::{RunFilter, Store};

use super::build::build;
use crate::error::Exit;

/// `stepflow plugin test [DIR]`.
pub async fn test(dir: &Path, json: bool) -> Result<(), Exit> {
    let project = build(dir, json)?;
    let flow = project.dir.join("flow.yaml");
    if !flow.is_file() {
        return Err(Exit::usage(format!(
            "{} has no flow.yaml to run; `stepflow plugin new` writes one that uses the plugin",
            project.dir.display()
        )));
    }
    // A scratch database in the project's target/, new for every test.
    let db_file = project.dir.join("target").join("test.db");
    let db = stepflow_store::Database::File(db_file.clone());
    for stale in ["test.db", "test.db-wal", "test.db-shm"] {
        let path = project.dir.join("target").join(stale);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Exit::usage(format!(
                "cannot remove {}: {e}",
                path.display()
            )));
        }
    }
    // Built above: the flow's `build` command would only build again.
    let ran = crate::commands::run::run(&db, &flow, None, 16 << 20, None, false, json).await;
    if !json {
        let store = crate::commands::read_store(&db)?;
        if let Some(run) = store.runs_where(&RunFilter::default())?.first() {
            crate::output::line("");
            crate::commands::show::show(&db, &run.id, false)?;
            crate::output::line(format!(
                "(the run is kept in {}: `stepflow --db {} show {}`)",
                db_file.display(),
                db_file.display(),
                run.id
            ));
        }
    }
    ran
}
