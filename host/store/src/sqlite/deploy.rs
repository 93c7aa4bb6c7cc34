//! Deployments, content-addressed (migration 5): storing one with its plugins' bytes once per
//! distinct SHA-256 ([`crate::Store::put_deployment`]), loading one by id or unique prefix with
//! every plugin's bytes hashed again ([`crate::Store::deployment`]), and listing them with how
//! many runs use each ([`crate::Store::deployments`]).
//!
//! A deployment's row and plugin list carry a CRC-32 (see `checksum.rs`); the plugins' bytes
//! are checked against their SHA-256 instead, which they are stored under anyway.

use crate::check;
use std::path::Path;
use std::sync::Arc;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::checksum;
use super::encode::{DeploymentRow, sha256_hex};
use super::error::{classify, no_deployment};
use super::queries::Reads;
use crate::{DeployedPlugin, Deployment, DeploymentInfo, FlowInfo, StoreError};

/// At most this many ids are listed in [`StoreError::AmbiguousDeployment`].
const MAX_LISTED: i64 = 10;

const EXISTS: &str = "SELECT 1 FROM deployments WHERE id = ?1";

/// Bytes already stored under the same hash are kept, not written again.
const INSERT_BLOB: &str =
    "INSERT INTO blobs (sha256, bytes) VALUES (?1, ?2) ON CONFLICT (sha256) DO NOTHING";

const INSERT_DEPLOYMENT: &str = "INSERT INTO deployments \
                                 (id, flow, source, source_path, created_ms, checksum) \
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const INSERT_PLUGIN: &str = "INSERT INTO deployment_plugins (deployment, position, name, sha256) \
                             VALUES (?1, ?2, ?3, ?4)";

/// The columns of a deployment's row, in the order [`Stored::read`] reads them.
macro_rules! deployment_columns {
    () => {
        "id, flow, source, source_path, created_ms, checksum"
    };
}

const SELECT_DEPLOYMENT: &str = concat!(
    "SELECT ",
    deployment_columns!(),
    " FROM deployments WHERE id = ?1"
);

/// The ids a prefix matches: GLOB on a validated hex prefix (no wildcard in it) is a range
/// search of the primary key.
const MATCHING: &str = "SELECT id FROM deployments WHERE id GLOB ?1 ORDER BY id LIMIT ?2";

const PLUGINS: &str =
    "SELECT name, sha256 FROM deployment_plugins WHERE deployment = ?1 ORDER BY position";

const BLOB: &str = "SELECT bytes FROM blobs WHERE sha256 = ?1";

/// A listing's columns: the row and how many runs use the deployment (an index search of
/// `runs_by_deployment`).
macro_rules! listed_columns {
    () => {
        concat!(
            deployment_columns!(),
            ", (SELECT COUNT(*) FROM runs WHERE runs.deployment = deployments.id)"
        )
    };
}

/// Every deployment, newest first; `rowid` breaks ties between deployments stored in the same
/// millisecond.
const LIST: &str = concat!(
    "SELECT ",
    listed_columns!(),
    " FROM deployments ORDER BY created_ms DESC, rowid DESC LIMIT ?1"
);

/// The deployments of one flow, newest first (an index search of `deployments_by_flow`).
const LIST_OF_FLOW: &str = concat!(
    "SELECT ",
    listed_columns!(),
    " FROM deployments WHERE flow = ?1 ORDER BY created_ms DESC, rowid DESC LIMIT ?2"
);

/// [`crate::Store::put_deployment`]: checks (and hashes) everything first, then in one
/// IMMEDIATE transaction stores the deployment unless its id exists.
pub(super) fn put(
    conn: &mut Connection,
    path: &Path,
    deployment: &Deployment,
    checksums: bool,
) -> Result<bool, StoreError> {
    let row = DeploymentRow::new(deployment)?;
    let id = deployment.id.as_str();
    let action = || format!("storing deployment `{id}`");
    let failed = |e| classify(path, action(), e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed)?;
    let exists = tx
        .prepare_cached(EXISTS)
        .and_then(|mut stmt| stmt.exists([id]))
        .map_err(failed)?;
    if exists {
        // Same id, same content: nothing to write (dropping `tx` ends it without a commit).
        return Ok(false);
    }
    {
        let mut blob = tx.prepare_cached(INSERT_BLOB).map_err(failed)?;
        for plugin in &deployment.plugins {
            blob.execute(rusqlite::params![plugin.sha256, &plugin.bytes[..]])
                .map_err(failed)?;
        }
        tx.prepare_cached(INSERT_DEPLOYMENT)
            .and_then(|mut stmt| {
                stmt.execute(rusqlite::params![
                    id,
                    deployment.flow,
                    deployment.source,
                    deployment.source_path,
                    row.created_ms,
                    checksums.then_some(row.checksum),
                ])
            })
            .map_err(failed)?;
        let mut insert = tx.prepare_cached(INSERT_PLUGIN).map_err(failed)?;
        for (position, plugin) in (0i64..).zip(&deployment.plugins) {
            insert
                .execute(rusqlite::params![id, position, plugin.name, plugin.sha256])
                .map_err(failed)?;
        }
    }
    tx.commit().map_err(failed)?;
    Ok(true)
}

/// [`crate::Store::deployment`]: by id, else by a unique prefix of at least
/// [`crate::check::MIN_DEPLOYMENT_PREFIX`] hex digits; every plugin's bytes are hashed and compared with their SHA-256.
pub(super) fn get(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    id: &str,
) -> Result<Deployment, StoreError> {
    if !reads.has_deployments() {
        return Err(no_deployment(path, id));
    }
    let stored = match Stored::read(conn, path, id)? {
        Some(stored) => stored,
        None => {
            let full = resolve_prefix(conn, path, id)?;
            Stored::read(conn, path, &full)?.ok_or_else(|| no_deployment(path, id))?
        }
    };
    let plugins = stored.plugins(conn, path, reads.verify)?;
    let (id, flow, source, source_path, created_ms) = stored.fields()?;
    Ok(Deployment {
        id,
        flow,
        source,
        source_path,
        plugins,
        created_ms,
    })
}

/// The one id that starts with `prefix`, or why there is none.
fn resolve_prefix(conn: &Connection, path: &Path, prefix: &str) -> Result<String, StoreError> {
    if !crate::check::is_deployment_prefix(prefix) {
        return Err(no_deployment(path, prefix));
    }
    let lower = prefix.to_ascii_lowercase();
    let mut matches: Vec<String> = conn
        .prepare_cached(MATCHING)
        .and_then(|mut stmt| {
            stmt.query_map(rusqlite::params![format!("{lower}*"), MAX_LISTED], |r| {
                r.get::<_, String>(0)
            })?
            .collect()
        })
        .map_err(|e| classify(path, format!("looking up deployment `{prefix}`"), e))?;
    match matches.len() {
        0 => Err(no_deployment(path, prefix)),
        1 => Ok(matches.remove(0)),
        _ => Err(StoreError::AmbiguousDeployment {
            prefix: prefix.to_string(),
            location: path.display().to_string(),
            matches,
        }),
    }
}

/// [`crate::Store::deployments`]: newest first, each row's checksum checked, no bytes read.
pub(super) fn list(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
    flow: Option<&str>,
    limit: usize,
) -> Result<Vec<DeploymentInfo>, StoreError> {
    if !reads.has_deployments() {
        return Ok(Vec::new());
    }
    let action = || "listing deployments".to_string();
    let limit = check::saturating_i64(limit);
    let sql = if flow.is_some() { LIST_OF_FLOW } else { LIST };
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = match flow {
        Some(flow) => stmt.query(rusqlite::params![flow, limit]),
        None => stmt.query(rusqlite::params![limit]),
    }
    .map_err(|e| classify(path, action(), e))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        let values = (0..6)
            .map(|i| row.get::<_, Value>(i))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| classify(path, action(), e))?;
        let runs: i64 = row.get(6).map_err(|e| classify(path, action(), e))?;
        found.push((values, runs));
    }
    drop(rows);
    let mut infos = Vec::with_capacity(found.len());
    for (values, runs) in found {
        let stored = Stored::from_values(path, values);
        let plugins = stored.plugin_list(conn, path, reads.verify)?;
        let (id, flow, _source, source_path, created_ms) = stored.fields()?;
        infos.push(DeploymentInfo {
            id,
            flow,
            source_path,
            plugins,
            created_ms,
            runs: u64::try_from(runs).unwrap_or_default(),
        });
    }
    Ok(infos)
}

/// A deployment's row as stored, before it is checked and decoded.
struct Stored<'p> {
    /// The id as asked for, for messages until the row's own id is read.
    id: String,
    path: &'p Path,
    /// The values of `deployment_columns!()`, in order.
    values: Vec<Value>,
}

impl<'p> Stored<'p> {
    /// The row of deployment `id`, or `None` when there is none.
    fn read(conn: &Connection, path: &'p Path, id: &str) -> Result<Option<Self>, StoreError> {
        let values = conn
            .prepare_cached(SELECT_DEPLOYMENT)
            .and_then(|mut stmt| {
                stmt.query_row([id], |row| {
                    (0..6)
                        .map(|i| row.get::<_, Value>(i))
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .optional()
            })
            .map_err(|e| classify(path, format!("loading deployment `{id}`"), e))?;
        Ok(values.map(|values| Stored::from_values(path, values)))
    }

    /// A row already read.
    fn from_values(path: &'p Path, values: Vec<Value>) -> Self {
        let id = match values.first() {
            Some(Value::Text(id)) => id.clone(),
            _ => "?".to_string(),
        };
        Stored { id, path, values }
    }

    /// A [`StoreError::BadDeployment`] for `column` of this deployment.
    fn bad(&self, column: impl Into<String>, detail: impl ToString) -> StoreError {
        StoreError::BadDeployment {
            id: self.id.clone(),
            location: self.path.display().to_string(),
            column: column.into(),
            detail: detail.to_string(),
        }
    }

    /// The value of column `index` as text.
    fn text(&self, index: usize, column: &str) -> Result<String, StoreError> {
        match self.values.get(index) {
            Some(Value::Text(text)) => Ok(text.clone()),
            Some(other) => Err(self.bad(column, format!("not text but {:?}", other.data_type()))),
            None => Err(self.bad(column, "missing")),
        }
    }

    /// The decoded row: id, flow, source, source path, creation time.
    fn fields(&self) -> Result<(String, String, String, String, u64), StoreError> {
        let created_ms = match self.values.get(4) {
            Some(Value::Integer(ms)) => {
                u64::try_from(*ms).map_err(|_| self.bad("created_ms", format!("negative: {ms}")))?
            }
            _ => return Err(self.bad("created_ms", "not an integer")),
        };
        Ok((
            self.text(0, "id")?,
            self.text(1, "flow")?,
            self.text(2, "source")?,
            self.text(3, "source_path")?,
            created_ms,
        ))
    }

    /// The plugin list as `(name, sha256)`, in order, with the row's checksum (which covers
    /// the list too) checked if `verify`.
    fn plugin_list(
        &self,
        conn: &Connection,
        path: &Path,
        verify: bool,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(Value, Value)> = conn
            .prepare_cached(PLUGINS)
            .and_then(|mut stmt| {
                stmt.query_map([&self.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|e| classify(path, format!("loading deployment `{}`", self.id), e))?;
        if verify {
            self.verify(&rows)?;
        }
        rows.into_iter()
            .enumerate()
            .map(|(at, (name, sha256))| {
                let column = format!("plugin {at}");
                match (name, sha256) {
                    (Value::Text(name), Value::Text(sha256)) => Ok((name, sha256)),
                    _ => Err(self.bad(column, "its name or sha256 is not text")),
                }
            })
            .collect()
    }

    /// Checks the row's checksum (if it has one) against the row and `plugins`.
    fn verify(&self, plugins: &[(Value, Value)]) -> Result<(), StoreError> {
        let stored = match self.values.get(5) {
            Some(Value::Null) => return Ok(()),
            Some(Value::Integer(sum)) => u32::try_from(*sum)
                .map_err(|_| self.bad("checksum", format!("out of range: {sum}")))?,
            _ => return Err(self.bad("checksum", "not an integer")),
        };
        let mut sum = checksum::Sum::default();
        for value in self.values.iter().take(5) {
            sum.add(ValueRef::from(value));
        }
        for (name, sha256) in plugins {
            sum.add(ValueRef::from(name));
            sum.add(ValueRef::from(sha256));
        }
        let computed = sum.finish();
        if computed == stored {
            return Ok(());
        }
        Err(StoreError::DeploymentChecksum {
            id: self.id.clone(),
            location: self.path.display().to_string(),
            part: "its row and plugin list".into(),
            stored: format!("{stored:#010x}"),
            computed: format!("{computed:#010x}"),
        })
    }

    /// The plugins with their bytes, each hashed and compared with its SHA-256 (if `verify`).
    fn plugins(
        &self,
        conn: &Connection,
        path: &Path,
        verify: bool,
    ) -> Result<Vec<DeployedPlugin>, StoreError> {
        let list = self.plugin_list(conn, path, verify)?;
        let mut plugins = Vec::with_capacity(list.len());
        for (name, sha256) in list {
            let bytes: Option<Value> = conn
                .prepare_cached(BLOB)
                .and_then(|mut stmt| stmt.query_row([&sha256], |r| r.get(0)).optional())
                .map_err(|e| {
                    classify(
                        path,
                        format!("loading plugin `{name}` of deployment `{}`", self.id),
                        e,
                    )
                })?;
            let column = || format!("plugin `{name}` (blob {sha256})");
            let bytes: Arc<[u8]> = match bytes {
                Some(Value::Blob(bytes)) => bytes.into(),
                Some(other) => {
                    return Err(self.bad(
                        column(),
                        format!("its bytes are {:?}, not a blob", other.data_type()),
                    ));
                }
                None => return Err(self.bad(column(), "its bytes are missing")),
            };
            if verify {
                let computed = sha256_hex(&bytes);
                if computed != sha256 {
                    return Err(StoreError::DeploymentChecksum {
                        id: self.id.clone(),
                        location: self.path.display().to_string(),
                        part: format!("the bytes of plugin `{name}`"),
                        stored: sha256,
                        computed,
                    });
                }
            }
            plugins.push(DeployedPlugin {
                name,
                sha256,
                bytes,
            });
        }
        Ok(plugins)
    }
}

/// Each flow with deployments: how many, the newest, and how many runs it has.
const FLOWS: &str = "SELECT d.flow, count(*), max(d.created_ms), \
                     (SELECT id FROM deployments n WHERE n.flow = d.flow \
                      ORDER BY n.created_ms DESC, n.id DESC LIMIT 1), \
                     (SELECT count(*) FROM runs r WHERE r.flow = d.flow) \
                     FROM deployments d GROUP BY d.flow ORDER BY d.flow";

/// [`crate::Store::flows`]: every flow that has a deployment, by name.
pub(super) fn flows(
    conn: &Connection,
    reads: &Reads,
    path: &Path,
) -> Result<Vec<FlowInfo>, StoreError> {
    if !reads.has_deployments() {
        return Ok(Vec::new());
    }
    let action = || "listing flows".to_string();
    let mut stmt = conn
        .prepare_cached(FLOWS)
        .map_err(|e| classify(path, action(), e))?;
    let mut rows = stmt.query([]).map_err(|e| classify(path, action(), e))?;
    let mut flows = Vec::new();
    while let Some(row) = rows.next().map_err(|e| classify(path, action(), e))? {
        let get_u64 = |i: usize| -> Result<u64, StoreError> {
            let n: i64 = row.get(i).map_err(|e| classify(path, action(), e))?;
            Ok(u64::try_from(n).unwrap_or_default())
        };
        flows.push(FlowInfo {
            name: row.get(0).map_err(|e| classify(path, action(), e))?,
            deployments: get_u64(1)?,
            latest_ms: get_u64(2)?,
            latest_deployment: row.get(3).map_err(|e| classify(path, action(), e))?,
            runs: get_u64(4)?,
        });
    }
    Ok(flows)
}
