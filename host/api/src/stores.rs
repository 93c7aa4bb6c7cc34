//! The store connections requests share: a few connections (SQLite or PostgreSQL), each used
//! by one request at a time on a blocking thread (store calls block), opened when first needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use stepflow_model::StepFlow;
use stepflow_store::{Database, Store};

use crate::error::ApiError;

/// How many idle connections are kept for the next requests.
const KEPT: usize = 8;

/// The database, its idle connections, and the flows of the deployments read so far.
pub(crate) struct Stores {
    db: Database,
    idle: Mutex<Vec<Box<dyn Store>>>,
    flows: Mutex<HashMap<String, Arc<StepFlow>>>,
}

impl Stores {
    pub(crate) fn new(db: Database) -> Self {
        Stores {
            db,
            idle: Mutex::new(Vec::new()),
            flows: Mutex::new(HashMap::new()),
        }
    }

    /// The flow of deployment `id` (or a prefix of its id), compiled without its plugins (for
    /// diagrams, and the signals it waits for), once per deployment: a deployment never
    /// changes, so a full id is answered from memory without reading its plugins' bytes.
    pub(crate) fn flow(&self, store: &dyn Store, id: &str) -> Result<Arc<StepFlow>, ApiError> {
        if let Some(flow) = self.flows.lock().ok().and_then(|f| f.get(id).cloned()) {
            return Ok(flow);
        }
        let deployment = store.deployment(id)?;
        let flow = Arc::new(stepflow_engine::shape_deployment(&deployment)?);
        // Kept under the full id: a prefix may name another deployment later.
        if let Ok(mut flows) = self.flows.lock() {
            flows.insert(deployment.id, flow.clone());
        }
        Ok(flow)
    }

    /// Runs `work` with a connection on a blocking thread.
    pub(crate) async fn with<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Stores, &mut dyn Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let stores = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = match stores.idle.lock().ok().and_then(|mut idle| idle.pop()) {
                Some(store) => store,
                None => stepflow_engine::open_store(&stores.db)?,
            };
            let result = work(&stores, store.as_mut());
            if let Ok(mut idle) = stores.idle.lock()
                && idle.len() < KEPT
            {
                idle.push(store);
            }
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("a request's database work failed: {e}")))?
    }
}
