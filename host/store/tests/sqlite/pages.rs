//! Listings a page at a time: every run once across the pages, newest first, with the filters
//! (search by id prefix or flow, time ranges) applied on every page; counts by status; the
//! history read in pages with its total.

use super::*;
use stepflow_store::{RunCounts, RunFilter};

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn pages_list_every_run_once_newest_first_and_filters_hold_on_every_page() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    // Two runs in the same millisecond, to check the tie-break across a page boundary.
    for (id, created, flow) in [
        ("r1", 10, "f.v1"),
        ("r2", 20, "g.v1"),
        ("r3", 20, "f.v1"),
        ("r4", 30, "f.v1"),
        ("x5", 40, "f.v1"),
    ] {
        store.create_run(&RunRecord {
            flow: flow.into(),
            ..record(id, created, RunStatus::Waiting)
        })?;
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.runs_page(&RunFilter {
            limit: 2,
            after: after.clone(),
            ..RunFilter::default()
        })?;
        seen.extend(ids(&page.runs).into_iter().map(str::to_string));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["x5", "r4", "r3", "r2", "r1"]);

    let search = |q: &str| -> Result<Vec<String>, StoreError> {
        Ok(store
            .runs_page(&RunFilter {
                search: Some(q.into()),
                ..RunFilter::default()
            })?
            .runs
            .into_iter()
            .map(|r| r.id)
            .collect())
    };
    assert_eq!(search("r")?, ["r4", "r3", "r2", "r1"], "an id prefix");
    assert_eq!(search("g.v1")?, ["r2"], "a flow name");
    assert!(search("zzz")?.is_empty());

    let page = store.runs_page(&RunFilter {
        flow: Some("f.v1".into()),
        created_from: Some(20),
        created_until: Some(40),
        limit: 1,
        ..RunFilter::default()
    })?;
    assert_eq!(ids(&page.runs), ["r4"]);
    let rest = store.runs_page(&RunFilter {
        flow: Some("f.v1".into()),
        created_from: Some(20),
        created_until: Some(40),
        limit: 10,
        after: page.next,
        ..RunFilter::default()
    })?;
    assert_eq!(ids(&rest.runs), ["r3"]);
    assert_eq!(rest.next, None);

    let err = store
        .runs_page(&RunFilter {
            after: Some("not-a-page".into()),
            ..RunFilter::default()
        })
        .expect_err("a made-up position");
    assert!(matches!(err, StoreError::BadPage { .. }), "{err:?}");
    Ok(())
}

#[test]
fn counts_by_status_and_history_pages_with_their_total() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut store = SqliteStore::open(&db(&dir))?;
    store.create_run(&record("a", 1, RunStatus::Waiting))?;
    store.create_run(&record("b", 2, RunStatus::Waiting))?;
    store.create_run(&record("c", 3, RunStatus::Failed))?;
    assert_eq!(
        store.run_counts()?,
        RunCounts {
            waiting: 2,
            failed: 1,
            ..RunCounts::default()
        }
    );
    let state = state("a", json!({}));
    for step in ["s1", "s2", "s3"] {
        let entry = entry("a", step);
        store.save_step(&StepSave {
            run_id: "a",
            status: RunStatus::Running,
            state: &state,
            next_check_ms: None,
            last_error: None,
            history: Some(&entry),
            lease: None,
        })?;
    }
    let (first, total) = store.history_page("a", 0, 2)?;
    assert_eq!(total, 3);
    let seqs: Vec<u64> = first.iter().map(|h| h.seq).collect();
    assert_eq!(seqs, [1, 2]);
    let (rest, _) = store.history_page("a", 2, 2)?;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].step, "f.v1/s3");
    assert_eq!(store.history_page("b", 0, 10)?, (Vec::new(), 0));
    assert!(matches!(
        store.history_page("nobody", 0, 10),
        Err(StoreError::NotFound { .. })
    ));
    Ok(())
}
