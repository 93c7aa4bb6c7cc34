//! Several `stepflow server` processes on one PostgreSQL: four servers drive a thousand runs
//! while servers are killed (SIGKILL) and paused past their lease (SIGSTOP, then SIGCONT), again
//! and again. At the end every run completed with every step once (a step in flight at a kill
//! or a pause appears again only marked redelivered, with the same idempotency key), no run
//! was lost, and a paused server's late saves were refused.
//!
//! Needs a PostgreSQL server (`STEPFLOW_TEST_POSTGRES`, set by `.ci/run`); the test makes its
//! own scratch database there. It waits for what the servers log and what the database says,
//! never for a time: a pause lasts until the other servers have taken the paused one's runs.

mod common;

use std::time::{Duration, Instant};

use common::{Lcg, Sandbox, ServerProcess, json, message, send_signal, stderr, stdout};

const RUNS: usize = 1000;
const SERVERS: usize = 4;
const ROUNDS: usize = 12;

/// Checkpoints (which record every idempotency key they see in WORK), a wait, a loop and
/// retries with back-off; short plugin time limits, so a short lease covers every call.
const FLOW: &str = r#"flow: spread.v1
plugins:
  h:
    wasm: {plugins}/hostile.wasm
    dirs: [{ host: "WORK", guest: /work, writable: true }]
    timeout: 1s
  deploy:
    wasm: {plugins}/deploy.wasm
    timeout: 1s
  d:
    wasm: {plugins}/dataproc.wasm
    timeout: 1s
data: { pages: 2, flaky: true }
steps:
  - { name: c1, do: h.checkpoint }
  - do: deploy.prepare
  - name: ready
    wait-for: deploy.checks/ready
    every: 50ms
  - { name: c2, do: h.checkpoint }
  - name: pages
    loop-until: d.last-page
    steps:
      - { name: fetch, do: d.fetch-page }
      - name: stage
        retry: { max-attempts: 4, backoff: { initial: 20ms, max: 40ms } }
        steps:
          - do: d.transform
  - { name: c3, do: h.checkpoint }
"#;

/// Every run's status and lease owner, from `runs --json`.
fn runs(s: &Sandbox) -> Vec<(String, String, Option<String>)> {
    let out = s.run(&["runs", "--json", "--limit", "100000"]);
    assert_eq!(out.status.code(), Some(0), "runs: {}", stderr(&out));
    json(&out)
        .as_array()
        .expect("a list of runs")
        .iter()
        .map(|r| {
            (
                r["run"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
                r["owner"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Polls the database until `done` holds; fails after `bound` (a guard against hangs).
fn until(
    s: &Sandbox,
    what: &str,
    bound: Duration,
    mut done: impl FnMut(&[(String, String, Option<String>)]) -> bool,
) {
    let start = Instant::now();
    loop {
        let now = runs(s);
        if done(&now) {
            return;
        }
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::park_timeout(Duration::from_millis(200));
    }
}

/// A run's history as (step, attempt, outcome, redelivered), from `show --json`.
fn history(s: &Sandbox, run: &str) -> (Vec<(String, u64, String)>, usize, serde_json::Value) {
    let shown = json(&s.run(&["show", run, "--json"]));
    let entries = shown["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history for {run}: {shown}"));
    let redelivered = entries.iter().filter(|h| h["redelivered"] == true).count();
    let steps = entries
        .iter()
        .map(|h| {
            (
                h["step"].as_str().unwrap_or_default().to_string(),
                h["attempt"].as_u64().unwrap_or_default(),
                h["outcome"].to_string(),
            )
        })
        .collect();
    (steps, redelivered, shown)
}

fn start(s: &Sandbox) -> ServerProcess {
    ServerProcess::start(s, &["--no-api", "--concurrency", "10", "--lease", "2s"])
}

#[test]
fn four_servers_on_one_postgres_survive_kills_and_pauses_and_apply_no_step_twice() {
    let Some(s) = Sandbox::durable().on_postgres("scale_out") else {
        return;
    };
    let seed = common::seed();
    eprintln!("chaos schedule seed: {seed} (replay with STEPFLOW_TEST_SEED={seed})");
    let mut rng = Lcg(seed);
    let work = s.path("work");
    std::fs::create_dir(&work).expect("work dir");
    let flow = s.flow(
        "spread.yaml",
        &FLOW.replace("WORK", &work.display().to_string()),
    );

    // A thousand submissions, from four submitters at once.
    let ids: Vec<String> = std::thread::scope(|scope| {
        let submitters: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..RUNS / 4)
                        .map(|_| {
                            let out =
                                s.run(&["submit", flow.to_str().expect("utf-8"), "--input", "{}"]);
                            assert_eq!(out.status.code(), Some(0), "submit: {}", stderr(&out));
                            stdout(&out).trim().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        submitters
            .into_iter()
            .flat_map(|t| t.join().expect("a submitter"))
            .collect()
    });
    assert_eq!(ids.len(), RUNS);

    let mut servers: Vec<Option<ServerProcess>> = (0..SERVERS).map(|_| Some(start(&s))).collect();
    let mut kills = 0;
    let mut pauses = Vec::new();
    let mut logs: Vec<Vec<String>> = Vec::new();
    for round in 0..ROUNDS {
        // Faults only while there is work left to hit (a server with nothing to do logs no
        // steps to wait for).
        let left = runs(&s)
            .iter()
            .filter(|(_, status, _)| status != "completed")
            .count();
        if left < 100 {
            eprintln!("round {round}: only {left} runs left; no more faults");
            break;
        }
        // The killed ones come back.
        for slot in servers.iter_mut() {
            if slot.is_none() {
                *slot = Some(start(&s));
            }
        }
        // Some progress on a server before it is hit.
        let target = rng.below(SERVERS as u64) as usize;
        let Some(server) = servers[target].as_mut() else {
            continue;
        };
        let steps = 1 + rng.below(40);
        let mut finished = false;
        for _ in 0..steps {
            let event = server.wait_for("steps before the fault", |e| {
                matches!(
                    message(e),
                    "step finished" | "run failed" | "server stopped"
                )
            });
            assert_ne!(message(&event), "run failed", "round {round}: {event}");
            finished |= message(&event) != "step finished";
            if finished {
                break;
            }
        }
        // Kills and pauses take turns, on a random server.
        if round % 2 == 0 {
            if let Some(server) = servers[target].take() {
                logs.push(server.log.clone());
                server.kill();
                kills += 1;
            }
        } else {
            let pid = server.child.id();
            send_signal(pid, "STOP");
            // Paused until the others have taken every run it held (its leases expired).
            let held_by = format!(":{pid}:");
            until(
                &s,
                "the paused server's runs to be taken over",
                Duration::from_secs(180),
                |runs| {
                    !runs.iter().any(|(_, status, owner)| {
                        status != "completed"
                            && owner.as_deref().is_some_and(|o| o.contains(&held_by))
                    })
                },
            );
            send_signal(pid, "CONT");
            pauses.push(target);
        }
    }
    for slot in servers.iter_mut() {
        if slot.is_none() {
            *slot = Some(start(&s));
        }
    }
    until(
        &s,
        "every run to complete",
        Duration::from_secs(900),
        |runs| {
            assert!(
                runs.iter().all(|(_, status, _)| status != "failed"),
                "a run failed"
            );
            runs.len() == RUNS && runs.iter().all(|(_, status, _)| status == "completed")
        },
    );
    let mut per_server = Vec::new();
    for server in servers.into_iter().flatten() {
        server.terminate();
        let (code, out, log) = server.finish();
        let tail = log[log.len().saturating_sub(30)..].join("\n");
        assert_eq!(code, Some(0), "{out}\n{tail}");
        per_server.push(log);
    }
    // A paused server that came back found its leases taken: its saves were refused.
    let refused: usize = per_server
        .iter()
        .chain(logs.iter())
        .flatten()
        .filter(|line| line.contains("was lost") || line.contains("the drive failed"))
        .count();
    if !pauses.is_empty() {
        assert!(
            refused > 0,
            "{} pauses, and no save was refused for a lost lease",
            pauses.len()
        );
    }

    // What an uninterrupted run does, in the foreground on SQLite.
    let fg = Sandbox::durable();
    let fg_work = fg.path("work");
    std::fs::create_dir(&fg_work).expect("work dir");
    let fg_flow = fg.flow(
        "spread.yaml",
        &FLOW.replace("WORK", &fg_work.display().to_string()),
    );
    let out = fg.run(&["run", fg_flow.to_str().expect("utf-8"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (expected, _, _) = history(&fg, json(&out)["run"].as_str().expect("run id"));

    let mut redelivered = 0;
    let mut seen_twice = 0;
    for id in &ids {
        let (steps, again, shown) = history(&s, id);
        assert_eq!(
            steps, expected,
            "run {id}: every step once, in order (seed {seed})"
        );
        redelivered += again;
        assert_eq!(shown["status"], "completed", "{shown}");
        for c in ["c1", "c2", "c3"] {
            let cp = &shown["data"]["checkpoints"][c];
            let key = cp["key"].as_str().unwrap_or_default();
            assert!(key.starts_with(&format!("{id}/spread.v1/{c}#")), "{cp}");
            // A key the plugin saw before is a call repeated: only ever a redelivered one.
            if cp["seen_before"] == true {
                seen_twice += 1;
                assert_eq!(cp["redelivered"], true, "run {id} step {c}: {cp}");
            }
        }
    }
    // The work spread: how many runs each of the last servers completed.
    let spread: Vec<usize> = per_server
        .iter()
        .map(|log| {
            log.iter()
                .filter(|l| l.contains("\"run completed\""))
                .count()
        })
        .collect();
    eprintln!(
        "{kills} kills, {} pauses, {refused} late saves refused, {redelivered} steps redelivered, \
         {seen_twice} checkpoints seen twice; runs completed by each of the last servers: {spread:?}",
        pauses.len()
    );
}
