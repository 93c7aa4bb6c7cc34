//! Listings a page at a time: every run once across the pages, newest first, with the filters
//! (status, flow, deployment, search by flow name or id prefix, time ranges) applied on every
//! page; counts by status; the history read in pages with its total.

use serde_json::json;
use stepflow_store::{RunCounts, RunFilter, RunRecord, RunStatus, StepSave, StoreError};

use super::fixtures::{entry, record, run_ids, state, step};
use super::{CaseResult, Opener};

/// Pages of two list every run once, newest first (a tie in the same millisecond across a page
/// boundary too); a search is a flow's exact name if there is one, else an id prefix; filters
/// hold on the page after `after`; a made-up position is [`StoreError::BadPage`].
pub fn pages_list_every_run_once_newest_first_and_filters_hold_on_every_page(
    open: &Opener,
) -> CaseResult {
    let mut store = open();
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
        assert!(page.runs.len() <= 2, "at most the limit: {page:?}");
        seen.extend(run_ids(&page.runs).into_iter().map(str::to_string));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(seen.len() <= 5, "the pages end: {seen:?}");
    }
    assert_eq!(seen, ["x5", "r4", "r3", "r2", "r1"], "every run once");

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
    assert_eq!(search("x5")?, ["x5"], "a whole id");
    assert!(search("zzz")?.is_empty(), "nothing matches");

    let page = store.runs_page(&RunFilter {
        flow: Some("f.v1".into()),
        created_from: Some(20),
        created_until: Some(40),
        limit: 1,
        ..RunFilter::default()
    })?;
    assert_eq!(run_ids(&page.runs), ["r4"], "the first page");
    let rest = store.runs_page(&RunFilter {
        flow: Some("f.v1".into()),
        created_from: Some(20),
        created_until: Some(40),
        limit: 10,
        after: page.next,
        ..RunFilter::default()
    })?;
    assert_eq!(
        run_ids(&rest.runs),
        ["r3"],
        "the filters hold on the next page"
    );
    assert_eq!(rest.next, None, "the last page");

    let err = store
        .runs_page(&RunFilter {
            after: Some("not-a-page".into()),
            ..RunFilter::default()
        })
        .expect_err("a made-up position");
    assert!(
        matches!(&err, StoreError::BadPage { after } if after == "not-a-page"),
        "{err:?}"
    );
    Ok(())
}

/// Each filter of [`RunFilter`] alone and together: status, flow, search, and the created and
/// updated time ranges (from inclusive, until exclusive).
pub fn every_filter_of_a_listing_holds(open: &Opener) -> CaseResult {
    let mut store = open();
    for (id, created, flow, status) in [
        ("a", 10, "f.v1", RunStatus::Waiting),
        ("b", 20, "f.v1", RunStatus::Running),
        ("c", 30, "g.v1", RunStatus::Waiting),
        ("d", 40, "g.v1", RunStatus::Failed),
    ] {
        store.create_run(&RunRecord {
            flow: flow.into(),
            ..record(id, created, status)
        })?;
    }
    // `d` is saved now (its updated_ms is the store's clock, far past every created_ms).
    store.save_step(&step("d", RunStatus::Failed, &state("z", json!({}))))?;
    let ids = |filter: RunFilter| -> Result<Vec<String>, StoreError> {
        let page = store.runs_page(&filter)?;
        let listed = store.runs_where(&filter)?;
        assert_eq!(page.runs, listed, "runs_page and runs_where agree");
        Ok(listed.into_iter().map(|r| r.id).collect())
    };
    let all = RunFilter::default;
    assert_eq!(ids(all())?, ["d", "c", "b", "a"], "every run");
    assert_eq!(
        ids(RunFilter {
            status: Some(RunStatus::Waiting),
            ..all()
        })?,
        ["c", "a"],
        "status"
    );
    assert_eq!(
        ids(RunFilter {
            flow: Some("g.v1".into()),
            ..all()
        })?,
        ["d", "c"],
        "flow"
    );
    assert_eq!(
        ids(RunFilter {
            flow: Some("g.v1".into()),
            status: Some(RunStatus::Waiting),
            ..all()
        })?,
        ["c"],
        "flow and status"
    );
    assert_eq!(
        ids(RunFilter {
            search: Some("f.v1".into()),
            status: Some(RunStatus::Running),
            ..all()
        })?,
        ["b"],
        "search and status"
    );
    assert_eq!(
        ids(RunFilter {
            created_from: Some(20),
            created_until: Some(40),
            ..all()
        })?,
        ["c", "b"],
        "created from 20 (inclusive) until 40 (exclusive)"
    );
    assert_eq!(
        ids(RunFilter {
            created_from: Some(41),
            ..all()
        })?,
        Vec::<String>::new(),
        "created after every run"
    );
    assert_eq!(
        ids(RunFilter {
            updated_from: Some(1_000),
            ..all()
        })?,
        ["d"],
        "updated from 1000: the saved run"
    );
    assert_eq!(
        ids(RunFilter {
            updated_until: Some(1_000),
            ..all()
        })?,
        ["c", "b", "a"],
        "updated before 1000: the others"
    );
    assert_eq!(
        ids(RunFilter {
            updated_from: Some(20),
            updated_until: Some(30),
            ..all()
        })?,
        ["b"],
        "updated from 20 until 30"
    );
    assert_eq!(
        ids(RunFilter {
            deployment: Some("0".repeat(64)),
            ..all()
        })?,
        Vec::<String>::new(),
        "a deployment no run uses"
    );
    Ok(())
}

/// `run_counts` counts each status; `history_page` reads entries after a position with the
/// run's total, and an unknown run is [`StoreError::NotFound`].
pub fn counts_by_status_and_history_pages_with_their_total(open: &Opener) -> CaseResult {
    let mut store = open();
    assert_eq!(store.run_counts()?, RunCounts::default(), "an empty store");
    store.create_run(&record("a", 1, RunStatus::Waiting))?;
    store.create_run(&record("b", 2, RunStatus::Waiting))?;
    store.create_run(&record("c", 3, RunStatus::Failed))?;
    store.create_run(&record("d", 4, RunStatus::Cancelled))?;
    assert_eq!(
        store.run_counts()?,
        RunCounts {
            waiting: 2,
            failed: 1,
            cancelled: 1,
            ..RunCounts::default()
        },
        "counts"
    );
    let state = state("a", json!({}));
    for name in ["s1", "s2", "s3"] {
        let entry = entry("a", name);
        store.save_step(&StepSave {
            history: std::slice::from_ref(&entry),
            ..step("a", RunStatus::Running, &state)
        })?;
    }
    assert_eq!(
        store.run_counts()?,
        RunCounts {
            running: 1,
            waiting: 1,
            failed: 1,
            cancelled: 1,
            ..RunCounts::default()
        },
        "counts after a's saves"
    );
    let (first, total) = store.history_page("a", 0, 2)?;
    assert_eq!(total, 3, "the total");
    let seqs: Vec<u64> = first.iter().map(|h| h.seq).collect();
    assert_eq!(seqs, [1, 2], "the first page");
    let (rest, total) = store.history_page("a", 2, 2)?;
    assert_eq!((rest.len(), total), (1, 3), "the rest");
    assert_eq!(rest[0].step, "f.v1/s3", "the last entry");
    assert_eq!(
        store.history_page("b", 0, 10)?,
        (Vec::new(), 0),
        "a run without history"
    );
    let err = store
        .history_page("nobody", 0, 10)
        .expect_err("an unknown run");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    Ok(())
}
