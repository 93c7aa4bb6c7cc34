//! Deployments, content-addressed: storing one (its plugins' bytes once per distinct
//! SHA-256), loading one by id or unique prefix with every plugin's bytes hashed again,
//! listing them, and the flows they are of.

use std::sync::Arc;

use stepflow_store::check::{self, MAX_AMBIGUOUS_LISTED};
use stepflow_store::{DeployedPlugin, Deployment, DeploymentInfo, FlowInfo, StoreError};
use tokio_postgres::Row;

use crate::connect::wait;
use crate::db::{self, Db};
use crate::error::{classify, no_deployment};

const INSERT_BLOB: &str = "INSERT INTO stepflow.blobs (sha256, bytes) VALUES ($1, $2) \
     ON CONFLICT (sha256) DO NOTHING";

/// Of two servers storing the same deployment at once, the second waits for the first and
/// then stores nothing.
const INSERT_DEPLOYMENT: &str = "INSERT INTO stepflow.deployments \
     (id, flow, source, source_path, created_ms) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO NOTHING RETURNING 1";

const INSERT_PLUGIN: &str = "INSERT INTO stepflow.deployment_plugins \
     (deployment, position, name, sha256) VALUES ($1, $2, $3, $4)";

const SELECT: &str = "SELECT id, flow, source, source_path, created_ms \
     FROM stepflow.deployments WHERE id = $1";

const MATCHING: &str = "SELECT id FROM stepflow.deployments WHERE id >= $1 AND id < $2 \
     ORDER BY id LIMIT $3";

const PLUGINS: &str = "SELECT p.name, p.sha256, b.bytes FROM stepflow.deployment_plugins p \
     LEFT JOIN stepflow.blobs b ON b.sha256 = p.sha256 WHERE p.deployment = $1 ORDER BY p.position";

const PLUGIN_LIST: &str = "SELECT name, sha256 FROM stepflow.deployment_plugins \
     WHERE deployment = $1 ORDER BY position";

const LISTED: &str = "SELECT d.id, d.flow, d.source_path, d.created_ms, \
     (SELECT count(*) FROM stepflow.runs r WHERE r.deployment = d.id) FROM stepflow.deployments d";

const FLOWS: &str = "SELECT d.flow, count(*), max(d.created_ms), \
     (SELECT n.id FROM stepflow.deployments n WHERE n.flow = d.flow \
      ORDER BY n.created_ms DESC, n.seq DESC LIMIT 1), \
     (SELECT count(*) FROM stepflow.runs r WHERE r.flow = d.flow) \
     FROM stepflow.deployments d GROUP BY d.flow ORDER BY d.flow";

/// [`stepflow_store::Store::put_deployment`].
pub(crate) fn put(db: &mut Db, deployment: &Deployment) -> Result<bool, StoreError> {
    db.ensure()?;
    let created_ms = check::deployment(deployment)?;
    let id = deployment.id.as_str();
    let action = || format!("storing deployment `{id}`");
    let location = db.location.clone();
    let loc = location.as_str();
    let tx = {
        crate::db::count();
        wait(db.client.get_mut().transaction())
    }
    .map_err(|e| classify(loc, action(), e))?;
    for plugin in &deployment.plugins {
        db::rows(
            &tx,
            &db.statements,
            loc,
            INSERT_BLOB,
            &[&plugin.sha256, &&plugin.bytes[..]],
            &action,
        )?;
    }
    let new = db::row(
        &tx,
        &db.statements,
        loc,
        INSERT_DEPLOYMENT,
        &[
            &id,
            &deployment.flow,
            &deployment.source,
            &deployment.source_path,
            &created_ms,
        ],
        &action,
    )?
    .is_some();
    if !new {
        // Same id, same content: nothing to write (dropping `tx` rolls back).
        return Ok(false);
    }
    for (position, plugin) in (0i32..).zip(&deployment.plugins) {
        db::rows(
            &tx,
            &db.statements,
            loc,
            INSERT_PLUGIN,
            &[&id, &position, &plugin.name, &plugin.sha256],
            &action,
        )?;
    }
    {
        crate::db::count();
        wait(tx.commit())
    }
    .map_err(|e| classify(loc, action(), e))?;
    Ok(true)
}

fn bad(loc: &str, id: &str, column: &str, detail: impl ToString) -> StoreError {
    StoreError::BadDeployment {
        id: id.to_string(),
        location: loc.to_string(),
        column: column.to_string(),
        detail: detail.to_string(),
    }
}

fn field<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    at: usize,
    loc: &str,
    id: &str,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(at).map_err(|e| bad(loc, id, column, e))
}

/// [`stepflow_store::Store::deployment`]: by id, else by a unique prefix.
pub(crate) fn get(db: &Db, id: &str) -> Result<Deployment, StoreError> {
    let loc = db.location.as_str();
    let action = || format!("loading deployment `{id}`");
    let row = match db.row(SELECT, &[&id], &action)? {
        Some(row) => row,
        None => {
            let full = resolve_prefix(db, id)?;
            db.row(SELECT, &[&full], &action)?
                .ok_or_else(|| no_deployment(loc, id))?
        }
    };
    let full: String = field(&row, 0, loc, id, "id")?;
    let created: i64 = field(&row, 4, loc, &full, "created_ms")?;
    let mut plugins = Vec::new();
    for plugin in db.rows(PLUGINS, &[&full], &action)? {
        let name: String = field(&plugin, 0, loc, &full, "plugin name")?;
        let sha256: String = field(&plugin, 1, loc, &full, "plugin sha256")?;
        let column = format!("plugin `{name}`");
        let bytes: Option<Vec<u8>> = field(&plugin, 2, loc, &full, &column)?;
        let Some(bytes) = bytes else {
            return Err(bad(loc, &full, &column, "its bytes are missing"));
        };
        let computed = check::sha256_hex(&bytes);
        if computed != sha256 {
            return Err(StoreError::DeploymentChecksum {
                id: full.clone(),
                location: loc.to_string(),
                part: format!("plugin `{name}`'s bytes"),
                stored: sha256,
                computed,
            });
        }
        plugins.push(DeployedPlugin {
            name,
            sha256,
            bytes: Arc::from(bytes),
        });
    }
    Ok(Deployment {
        flow: field(&row, 1, loc, &full, "flow")?,
        source: field(&row, 2, loc, &full, "source")?,
        source_path: field(&row, 3, loc, &full, "source_path")?,
        created_ms: u64::try_from(created).map_err(|e| bad(loc, &full, "created_ms", e))?,
        plugins,
        id: full,
    })
}

/// The one id that starts with `prefix`, or why there is none.
fn resolve_prefix(db: &Db, prefix: &str) -> Result<String, StoreError> {
    let loc = db.location.as_str();
    if !check::is_deployment_prefix(prefix) {
        return Err(no_deployment(loc, prefix));
    }
    let lower = prefix.to_ascii_lowercase();
    let upper = format!("{lower}~");
    let limit = i64::try_from(MAX_AMBIGUOUS_LISTED).unwrap_or(10);
    let mut matches: Vec<String> = db
        .rows(MATCHING, &[&lower, &upper, &limit], &|| {
            format!("looking up deployment `{prefix}`")
        })?
        .iter()
        .map(|row| field(row, 0, loc, prefix, "id"))
        .collect::<Result<_, _>>()?;
    match matches.len() {
        0 => Err(no_deployment(loc, prefix)),
        1 => Ok(matches.remove(0)),
        _ => Err(StoreError::AmbiguousDeployment {
            prefix: prefix.to_string(),
            location: loc.to_string(),
            matches,
        }),
    }
}

/// [`stepflow_store::Store::deployments`]: newest first, without bytes.
pub(crate) fn list(
    db: &Db,
    flow: Option<&str>,
    limit: usize,
) -> Result<Vec<DeploymentInfo>, StoreError> {
    let loc = db.location.as_str();
    let action = || "listing deployments".to_string();
    let limit = check::saturating_i64(limit);
    let rows = match flow {
        Some(flow) => db.rows(
            &format!("{LISTED} WHERE d.flow = $1 ORDER BY d.created_ms DESC, d.seq DESC LIMIT $2"),
            &[&flow, &limit],
            &action,
        )?,
        None => db.rows(
            &format!("{LISTED} ORDER BY d.created_ms DESC, d.seq DESC LIMIT $1"),
            &[&limit],
            &action,
        )?,
    };
    let mut infos = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = field(&row, 0, loc, "?", "id")?;
        let plugins = db
            .rows(PLUGIN_LIST, &[&id], &action)?
            .iter()
            .map(|p| {
                Ok((
                    field(p, 0, loc, &id, "plugin name")?,
                    field(p, 1, loc, &id, "plugin sha256")?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let created: i64 = field(&row, 3, loc, &id, "created_ms")?;
        let runs: i64 = field(&row, 4, loc, &id, "runs")?;
        infos.push(DeploymentInfo {
            flow: field(&row, 1, loc, &id, "flow")?,
            source_path: field(&row, 2, loc, &id, "source_path")?,
            plugins,
            created_ms: u64::try_from(created).unwrap_or_default(),
            runs: u64::try_from(runs).unwrap_or_default(),
            id,
        });
    }
    Ok(infos)
}

/// [`stepflow_store::Store::flows`].
pub(crate) fn flows(db: &Db) -> Result<Vec<FlowInfo>, StoreError> {
    let loc = db.location.as_str();
    let rows = db.rows(FLOWS, &[], &|| "listing flows".to_string())?;
    rows.iter()
        .map(|row| {
            let n = |at: usize, column: &str| -> Result<u64, StoreError> {
                let v: i64 = field(row, at, loc, "?", column)?;
                Ok(u64::try_from(v).unwrap_or_default())
            };
            Ok(FlowInfo {
                name: field(row, 0, loc, "?", "flow")?,
                deployments: n(1, "count")?,
                latest_ms: n(2, "created_ms")?,
                latest_deployment: field(row, 3, loc, "?", "id")?,
                runs: n(4, "runs")?,
            })
        })
        .collect()
}
