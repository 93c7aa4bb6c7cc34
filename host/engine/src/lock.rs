//! One driver per run: an OS file lock next to the database, held while a run is driven.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::EngineError;

/// Holds a run's lock; dropping it releases the lock, and so does the process dying.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock of `run_id` for the database at `db`, or says that another process has
    /// it ([`EngineError::Busy`]).
    pub fn take(db: &Path, run_id: &str) -> Result<Self, EngineError> {
        let dir = PathBuf::from(format!("{}.locks", db.display()));
        let lock_error = |path: &Path, source| EngineError::Lock {
            run: run_id.to_string(),
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(|e| lock_error(&dir, e))?;
        let path = dir.join(run_id);
        let file = File::create(&path).map_err(|e| lock_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(_) => Err(EngineError::Busy {
                run: run_id.to_string(),
            }),
        }
    }
}
