//! One connection with its prepared statements: every statement is prepared once per
//! connection (a parse and a plan saved), then only bound and run, inside a transaction or not.

use std::cell::RefCell;
use std::collections::HashMap;

use stepflow_store::StoreError;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Statement};

use crate::connect::wait;
use crate::error::classify;

/// Statements sent by every store of the process, for benchmarks ([`crate::statements_sent`]).
pub(crate) static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one statement sent.
pub(crate) fn count() {
    SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The values bound to a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The statements prepared on one connection, by their SQL.
#[derive(Default)]
pub(crate) struct Statements {
    prepared: RefCell<HashMap<String, Statement>>,
}

/// A connection, its statements, and the database's URL as messages show it. A connection
/// that was closed (the server restarted, or ended a session left idle in a transaction) is
/// opened again at the next call.
pub(crate) struct Db {
    pub client: RefCell<Client>,
    pub statements: Statements,
    pub location: String,
    /// The URL as given, to connect again.
    pub url: String,
    /// Whether the session is read-only (set again on a new connection).
    pub read_only: bool,
}

impl Statements {
    /// Forgets every statement: they belonged to a connection that is gone.
    fn clear(&self) {
        self.prepared.borrow_mut().clear();
    }

    /// `sql` prepared on `on`'s connection, once.
    fn get<C: GenericClient + Sync>(
        &self,
        on: &C,
        location: &str,
        sql: &str,
        action: &dyn Fn() -> String,
    ) -> Result<Statement, StoreError> {
        if let Some(statement) = self.prepared.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = wait(on.prepare(sql)).map_err(|e| classify(location, action(), e))?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// Runs `sql` on `on` (the connection or a transaction of it) and returns its rows.
pub(crate) fn rows<C: GenericClient + Sync>(
    on: &C,
    statements: &Statements,
    location: &str,
    sql: &str,
    params: Params<'_>,
    action: &dyn Fn() -> String,
) -> Result<Vec<Row>, StoreError> {
    let statement = statements.get(on, location, sql, action)?;
    count();
    wait(on.query(&statement, params)).map_err(|e| classify(location, action(), e))
}

/// Runs `sql` on `on` and returns its first row, if any.
pub(crate) fn row<C: GenericClient + Sync>(
    on: &C,
    statements: &Statements,
    location: &str,
    sql: &str,
    params: Params<'_>,
    action: &dyn Fn() -> String,
) -> Result<Option<Row>, StoreError> {
    Ok(rows(on, statements, location, sql, params, action)?
        .into_iter()
        .next())
}

/// Runs `sql` on `on` and returns how many rows it changed, or the driver's own error (for
/// callers that tell a constraint's refusal from other failures).
pub(crate) fn execute_raw<C: GenericClient + Sync>(
    on: &C,
    statements: &Statements,
    location: &str,
    sql: &str,
    params: Params<'_>,
    action: &dyn Fn() -> String,
) -> Result<Result<u64, tokio_postgres::Error>, StoreError> {
    let statement = statements.get(on, location, sql, action)?;
    count();
    Ok(wait(on.execute(&statement, params)))
}

impl Db {
    /// Opens the connection again if it was closed.
    pub(crate) fn ensure(&self) -> Result<(), StoreError> {
        if !self.client.borrow().is_closed() {
            return Ok(());
        }
        tracing::warn!(db = %self.location, "the connection to PostgreSQL was closed; connecting again");
        let client = crate::connect::connect(&self.url, &self.location, self.read_only)?;
        self.statements.clear();
        *self.client.borrow_mut() = client;
        Ok(())
    }

    /// [`rows`] on the connection itself.
    pub(crate) fn rows(
        &self,
        sql: &str,
        params: Params<'_>,
        action: &dyn Fn() -> String,
    ) -> Result<Vec<Row>, StoreError> {
        self.ensure()?;
        let client = self.client.borrow();
        rows(
            &*client,
            &self.statements,
            &self.location,
            sql,
            params,
            action,
        )
    }

    /// [`row`] on the connection itself.
    pub(crate) fn row(
        &self,
        sql: &str,
        params: Params<'_>,
        action: &dyn Fn() -> String,
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.rows(sql, params, action)?.into_iter().next())
    }
}

/// Reads column `at` of `row`, or says which column of which run could not be read.
pub(crate) fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    at: usize,
    location: &str,
    id: &str,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(at)
        .map_err(|e| crate::error::bad_record(location, id, column, e))
}
