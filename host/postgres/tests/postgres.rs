//! The store conformance suite against a real PostgreSQL (the server at
//! `STEPFLOW_TEST_POSTGRES`; every test on a scratch database of its own), and what only
//! PostgreSQL has: migrations raced by several servers, wake-ups by notification.

use std::sync::Arc;

use stepflow_postgres::PostgresStore;
use stepflow_store::Store;
use stepflow_testkit::postgres::{ScratchDatabase, server_url};
use stepflow_testkit::store::{Backend, Opener};

/// PostgreSQL as a backend under test: each database is a scratch database, dropped with the
/// opener.
struct Postgres;

impl Backend for Postgres {
    fn fresh(&self) -> Option<Opener> {
        let server = server_url("the PostgreSQL store conformance suite")?;
        let scratch = ScratchDatabase::create(&server, "conformance")
            .unwrap_or_else(|e| panic!("a scratch database: {e}"));
        Some(Box::new(move || -> Box<dyn Store> {
            Box::new(
                PostgresStore::open(&scratch.url)
                    .unwrap_or_else(|e| panic!("opening {}: {e}", scratch.url)),
            )
        }))
    }
}

mod conformance {
    use super::*;

    fn backend() -> impl Backend {
        Postgres
    }

    stepflow_testkit::store_conformance!(backend());
}

#[test]
fn servers_starting_at_once_apply_each_migration_once() -> Result<(), Box<dyn std::error::Error>> {
    let Some(server) = server_url("migrations") else {
        return Ok(());
    };
    let scratch = Arc::new(ScratchDatabase::create(&server, "migrations")?);
    let barrier = Arc::new(std::sync::Barrier::new(6));
    let opened: Vec<_> = (0..6)
        .map(|_| {
            let (scratch, barrier) = (scratch.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::open(&scratch.url)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for thread in opened {
        thread.join().map_err(|_| "a thread panicked")??;
    }
    let store = PostgresStore::open(&scratch.url)?;
    assert_eq!(store.runs(None, 10)?.len(), 0);
    Ok(())
}

#[test]
fn a_bad_url_or_an_unreachable_server_is_a_clear_error() {
    let Some(_) = server_url("bad URLs") else {
        return;
    };
    let bad = PostgresStore::open("postgres://nobody:secret@127.0.0.1:1/none").err();
    let text = bad.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("connecting"), "{text}");
    assert!(
        !text.contains("secret"),
        "the password is never shown: {text}"
    );
    let bad = PostgresStore::open("postgres://h/db?sslmode=sideways").err();
    let text = bad.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains("URL"), "{text}");
}
