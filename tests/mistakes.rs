//! Hostile input and operator mistakes against the real binary: each test is a bug that was
//! found by trying, and fails without its fix.

mod common;

use std::process::Stdio;

use common::{Sandbox, json, stderr, stdout};

const QUICKSTART: &str = r#"
flow: quickstart.v1
plugins:
  quickstart:
    wasm: {plugins}/quickstart.wasm
steps:
  - do: quickstart.step1
  - name: aCondition
    wait-for: quickstart.a-condition
  - do: quickstart.step2
"#;

/// A flow that waits an hour at `done` after its first step.
const WAITS: &str = r#"flow: wait.v1
plugins:
  d:
    wasm: {plugins}/dataproc.wasm
steps:
  - { name: fetch, do: d.fetch-page }
  - name: done
    wait-for: d.last-page
    every: 1h
  - { name: summary, do: d.summarize }
"#;

/// How many runs the sandbox's database holds; 0 when nothing created it.
fn run_count(s: &Sandbox) -> usize {
    if !s.db().exists() {
        return 0;
    }
    json(&s.run(&["runs", "--json"]))
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

/// The id of the only run in the sandbox's database.
fn only_run(s: &Sandbox) -> String {
    let listed = json(&s.run(&["runs", "--json"]));
    let runs = listed.as_array().expect("a list");
    assert_eq!(runs.len(), 1, "{listed}");
    runs[0]["run"].as_str().expect("an id").to_string()
}

#[test]
fn a_closed_stdout_neither_panics_nor_stops_the_run() {
    let s = Sandbox::new();
    let flow = s.flow("q.yaml", QUICKSTART);
    // The read end of stdout is closed before the binary writes its first line.
    let mut child = s
        .cmd()
        .args(["run", flow.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let run = only_run(&s);
    let shown = json(&s.run(&["show", &run, "--json"]));
    assert_eq!(shown["status"], "completed");

    for args in [
        vec!["show", run.as_str()],
        vec!["runs"],
        vec!["show", run.as_str(), "--json"],
    ] {
        let mut child = s
            .cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn input_that_is_not_an_object_is_refused_and_starts_no_run() {
    let s = Sandbox::new();
    let flow = s.flow("q.yaml", QUICKSTART);
    for input in ["[1]", "null", "42", "\"text\""] {
        let out = s.run(&["run", flow.to_str().unwrap(), "--input", input]);
        assert_eq!(out.status.code(), Some(2), "{input}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--input must be a JSON object"),
            "{input}: {}",
            stderr(&out)
        );
    }
    assert_eq!(run_count(&s), 0);
}

#[test]
fn build_runs_in_the_directory_of_a_flow_file_given_by_its_bare_name() {
    let s = Sandbox::new();
    let yaml = QUICKSTART.replace(
        "wasm: {plugins}/quickstart.wasm",
        "wasm: {plugins}/quickstart.wasm\n    build: echo built > built.txt",
    );
    s.flow("q.yaml", &yaml);
    let out = s
        .cmd()
        .current_dir(s.dir.path())
        .args(["run", "--build", "q.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        s.path("built.txt").exists(),
        "the build command did not run in the flow's directory"
    );
}

#[test]
fn json_graph_prints_json() {
    let s = Sandbox::new();
    let flow = s.flow("q.yaml", QUICKSTART);
    let out = s.run(&["--json", "graph", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let graph = json(&out);
    assert_eq!(graph["flow"], "quickstart.v1");
    let transitions = graph["transitions"].as_array().expect("transitions");
    assert!(
        transitions
            .iter()
            .any(|t| t["source"] == "start:quickstart.v1/aCondition"),
        "{graph}"
    );
}

#[test]
fn an_unknown_run_is_a_usage_error_with_a_hint_and_json_errors_are_json() {
    let s = Sandbox::new();
    // Create the database, so the miss is the run, not the file.
    let flow = s.flow("q.yaml", QUICKSTART);
    assert_eq!(
        s.run(&["run", flow.to_str().unwrap()]).status.code(),
        Some(0)
    );
    for cmd in ["show", "resume", "cancel"] {
        let out = s.run(&[cmd, "nope"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no run `nope`"),
            "{cmd}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("stepflow runs"),
            "{cmd}: {}",
            stderr(&out)
        );
        let out = s.run(&[cmd, "nope", "--json"]);
        let error = json(&out);
        assert_eq!(error["exit_code"], 2, "{cmd}: {error}");
        assert!(
            error["error"]
                .as_str()
                .unwrap_or("")
                .contains("no run `nope`"),
            "{cmd}: {error}"
        );
    }
}

#[test]
fn a_waiting_run_says_when_it_is_due_and_resume_now_checks_at_once() {
    let s = Sandbox::new();
    let flow = s.flow("wait.yaml", WAITS);
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--no-wait",
        "--input",
        r#"{"pages": 2}"#,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run = only_run(&s);
    let listed = stdout(&s.run(&["runs"]));
    assert!(
        listed.contains("NEXT DUE") && listed.contains("in 1h 0m"),
        "{listed}"
    );
    assert!(listed.contains("--now"), "{listed}");
    let shown = stdout(&s.run(&["show", &run]));
    assert!(shown.contains("next due in 1h 0m"), "{shown}");
    assert!(shown.contains(&format!("stepflow resume {run}")), "{shown}");
    let checks = |s: &Sandbox| {
        json(&s.run(&["show", &run, "--json"]))["history"]
            .as_array()
            .map(|h| h.len())
            .unwrap_or(0)
    };
    assert_eq!(checks(&s), 2, "fetch and the first check of `done`");
    // Without --now the wait is not due: nothing is called.
    assert_eq!(s.run(&["resume", &run, "--no-wait"]).status.code(), Some(3));
    assert_eq!(checks(&s), 2);
    // With --now the condition is checked at once (still false: one page of two).
    let out = s.run(&["resume", &run, "--now", "--no-wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(checks(&s), 3);
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// The pids of the two sleepers, from the file the build command wrote.
fn sleeper_pids(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("the build command wrote its pids");
    text.split_whitespace().map(str::to_string).collect()
}

/// A build command that starts a sleeper in the background and one in the foreground, and says
/// their pids.
const SLEEPY_BUILD: &str =
    "sleep 300 & bg=$!; sleep 300 & echo \"$bg $!\" > pids; echo \"pids $bg $!\"; wait";

#[test]
fn a_build_command_past_its_time_limit_is_stopped_with_its_children() {
    let s = Sandbox::new();
    let yaml = QUICKSTART.replace(
        "wasm: {plugins}/quickstart.wasm",
        &format!("wasm: {{plugins}}/quickstart.wasm\n    build: '{SLEEPY_BUILD}'"),
    );
    let flow = s.flow("q.yaml", &yaml);
    let out = s.run(&[
        "run",
        "--build",
        "--build-timeout",
        "1s",
        flow.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not finish within 1 s"),
        "{}",
        stderr(&out)
    );
    for pid in sleeper_pids(&s.path("pids")) {
        assert!(!alive(&pid), "the build's child {pid} is still running");
    }
    assert_eq!(run_count(&s), 0);
}

#[test]
fn ctrl_c_during_a_build_stops_it_with_its_children_and_starts_no_run() {
    let s = Sandbox::new();
    let yaml = QUICKSTART.replace(
        "wasm: {plugins}/quickstart.wasm",
        &format!("wasm: {{plugins}}/quickstart.wasm\n    build: '{SLEEPY_BUILD}'"),
    );
    let flow = s.flow("q.yaml", &yaml);
    let mut child = s
        .cmd()
        .args(["run", "--build", flow.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A build command's output goes to stderr: wait for the line that names the sleepers.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("pids ") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "the build command ended before naming its children");
    }
    let pids: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert_eq!(pids, sleeper_pids(&s.path("pids")));
    common::send_signal(child.id(), "INT");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(3), "{rest}");
    assert!(rest.contains("no run was started"), "{rest}");
    for pid in pids {
        assert!(!alive(&pid), "the build's child {pid} is still running");
    }
}

#[test]
fn input_has_a_size_limit_that_a_user_can_raise() {
    let s = Sandbox::new();
    let flow = s.flow("q.yaml", QUICKSTART);
    let flow = flow.to_str().unwrap();
    // Endless input costs at most the limit.
    let out = s.run(&["run", flow, "--input", "@/dev/zero"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-input"), "{}", stderr(&out));
    let big = s.path("big.json");
    let blob = "x".repeat(2048);
    std::fs::write(&big, format!(r#"{{"blob": "{blob}"}}"#)).unwrap();
    let at_big = format!("@{}", big.display());
    let out = s.run(&["run", flow, "--input", &at_big, "--max-input", "1KiB"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("larger than 1024 bytes"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&[
        "run",
        flow,
        "--input",
        &at_big,
        "--max-input",
        "4KiB",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["data"]["blob"], blob.as_str());
}

#[test]
fn a_plugin_log_line_names_its_step_once() {
    let s = Sandbox::new();
    let flow = s.flow(
        "log.yaml",
        "flow: log.v1\nplugins:\n  h: { wasm: \"{plugins}/hostile.wasm\" }\nsteps:\n  - { name: tags, do: h.log-tags }\n",
    );
    let out = s
        .cmd()
        .env("STEPFLOW_LOG", "info")
        .args(["run", flow.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("tagged line"))
        .unwrap_or_else(|| panic!("no log line: {err}"));
    assert_eq!(line.matches("step=").count(), 1, "{line}");
    assert_eq!(line.matches("run=").count(), 1, "{line}");
    assert!(line.contains("extra=1"), "{line}");
}

#[test]
fn one_process_drives_a_run_whatever_path_reaches_its_database() {
    let s = Sandbox::new();
    let blocked = common::blocked_run(&s, "lease.v1");
    let run = blocked.run.clone();
    // The same database through a symlink, and with the old lock directory gone: a second
    // driver is refused by the lease in the database itself.
    let link = s.path("link.db");
    std::os::unix::fs::symlink(s.db(), &link).unwrap();
    let _ = std::fs::remove_dir_all(format!("{}.locks", s.db().display()));
    let out = common::bin()
        .arg("--db")
        .arg(&link)
        .args(["resume", &run])
        .env("STEPFLOW_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is being driven by"),
        "{}",
        stderr(&out)
    );
    let listed = json(&s.run(&["runs", "--json"]));
    assert!(
        listed[0]["owner"].as_str().is_some_and(|o| !o.is_empty()),
        "{listed}"
    );
    let (code, rest) = blocked.release();
    assert_eq!(code, Some(0), "{rest:?}");
    // Each step ran once, and no lock files were left behind.
    let shown = json(&s.run(&["show", &run, "--json"]));
    let steps = common::history_steps(&shown);
    assert_eq!(steps, ["lease.v1/first", "lease.v1/slow", "lease.v1/last"]);
    assert!(!std::path::Path::new(&format!("{}.locks", s.db().display())).exists());
}

#[test]
fn a_run_whose_driver_was_killed_resumes_at_once() {
    let s = Sandbox::new();
    let mut blocked = common::blocked_run(&s, "killed.v1");
    let run = blocked.run.clone();
    blocked.child.kill().unwrap();
    blocked.child.wait().unwrap();
    // The lease has not expired, but its owner is gone: the resume takes it over.
    let out = s.run(&["resume", &run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = json(&s.run(&["runs", "--json"]));
    assert!(
        listed[0]["owner"].is_null(),
        "a finished drive releases its lease: {listed}"
    );
}

#[test]
fn a_step_that_changed_kind_where_the_run_waits_is_refused_on_upgrade() {
    let s = Sandbox::new();
    let flow = s.flow("wait.yaml", WAITS);
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--no-wait",
        "--input",
        r#"{"pages": 2}"#,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run = only_run(&s);
    // `done` keeps its name but becomes an action: it would run where a condition was awaited.
    let edited = WAITS.replace(
        "  - name: done\n    wait-for: d.last-page\n    every: 1h\n",
        "  - { name: done, do: d.fetch-page }\n",
    );
    assert_ne!(edited, WAITS);
    // Runs go on with their own deployment, so the edit reaches this run only through an
    // upgrade onto the edited flow's deployment (made by a run of it), which is refused.
    let other = s.flow("edited.yaml", &edited);
    let out = s.run(&["run", other.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = json(&out)["run"].as_str().unwrap().to_string();
    let to = json(&s.run(&["show", &done, "--json"]))["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.run(&["upgrade", &run, "--to", &to]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("wait.v1/done"), "{err}");
    assert!(err.contains("wait-for") && err.contains("step"), "{err}");
    // Nothing ran: the history still ends at the first check.
    let shown = json(&s.run(&["show", &run, "--json"]));
    assert_eq!(
        shown["history"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );
}

#[test]
fn a_wait_timeout_shorter_than_its_interval_is_checked_at_the_deadline() {
    let s = Sandbox::new();
    let flow = s.flow(
        "timeout.yaml",
        &WAITS.replace("    every: 1h\n", "    every: 1h\n    timeout: 2s\n"),
    );
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--no-wait",
        "--input",
        r#"{"pages": 2}"#,
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run = only_run(&s);
    let shown = json(&s.run(&["show", &run, "--json"]));
    let next = shown["next_check_ms"].as_u64().expect("a next check");
    let first_check = shown["history"][1]["started_ms"].as_u64().expect("a check");
    // The next check is at the deadline (2 s after the wait began), not an hour later.
    assert!(
        next <= first_check + 2_000,
        "next check {next} is after the deadline {}",
        first_check + 2_000
    );
}

#[test]
fn a_wasm_file_that_is_not_a_component_is_refused_at_its_place_in_the_flow_file() {
    let s = Sandbox::new();
    let core = s.path("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let text = s.path("text.wasm");
    std::fs::write(&text, b"hello, not wasm").unwrap();
    for (file, says) in [
        (&core, "core WebAssembly module"),
        (&text, "not WebAssembly"),
    ] {
        let yaml = format!(
            "flow: f.v1\nplugins:\n  p:\n    wasm: {}\nsteps:\n  - do: p.x\n",
            file.display()
        );
        let flow = s.flow("f.yaml", &yaml);
        let out = s.run(&["validate", flow.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("f.yaml:4:"), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains("[0, 97, 115"), "a byte dump: {err}");
    }
}

#[test]
fn read_only_commands_create_nothing_and_read_a_database_on_a_read_only_mount() {
    let s = Sandbox::new();
    // A mistyped --db: `runs` and `show` say so and create no file.
    let missing = s.path("typo/runs.db");
    for args in [vec!["runs"], vec!["show", "some-run"]] {
        let out = common::bin()
            .arg("--db")
            .arg(&missing)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no run database at"),
            "{}",
            stderr(&out)
        );
        assert!(
            !missing.exists() && !s.path("typo").exists(),
            "{args:?} created a file"
        );
    }

    // A real database, then the same directory bind-mounted read-only.
    let flow = s.flow("q.yaml", QUICKSTART);
    assert_eq!(
        s.run(&["run", flow.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let run = only_run(&s);
    let ro = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["--bind", "-o", "ro"])
        .arg(s.dir.path())
        .arg(ro.path())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        let why = "skipped: read-only mount: `mount --bind -o ro` is not permitted here";
        eprintln!("{why}");
        assert!(!stepflow_testkit::in_ci(), "{why}");
        return;
    }
    // Some kernels need a remount for `ro` to take on a bind mount.
    let _ = std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(ro.path())
        .status();
    let db = ro.path().join("runs.db");
    let result = std::panic::catch_unwind(|| {
        assert!(
            std::fs::write(ro.path().join("probe"), "x").is_err(),
            "the mount is writable"
        );
        for args in [vec!["runs", "--json"], vec!["show", run.as_str(), "--json"]] {
            let out = common::bin()
                .arg("--db")
                .arg(&db)
                .args(&args)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            assert!(stdout(&out).contains(&run), "{args:?}: {}", stdout(&out));
        }
    });
    let _ = std::process::Command::new("umount").arg(ro.path()).status();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_flow_file_has_a_size_limit_that_a_user_can_raise() {
    let s = Sandbox::new();
    let out = s.run(&["validate", "/dev/zero"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--max-flow-size"), "{}", stderr(&out));
    // A valid flow padded with a comment past 1 KiB: refused under 1KiB, read under 1MiB.
    let padded = format!("{QUICKSTART}\n# {}\n", "x".repeat(2048));
    let flow = s.flow("big.yaml", &padded);
    let out = s.run(&[
        "--max-flow-size",
        "1KiB",
        "validate",
        flow.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = s.run(&[
        "--max-flow-size",
        "1MiB",
        "validate",
        flow.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn every_error_handler_asked_about_a_failure_is_shown_under_the_failing_step() {
    let s = Sandbox::new();
    let flow = s.flow(
        "nested.yaml",
        r#"flow: nested.v1
plugins:
  h: { wasm: "{plugins}/hostile.wasm" }
steps:
  - name: outer
    retry: { handler: h.declines }
    steps:
      - name: inner
        retry: { handler: h.handler-fails }
        steps:
          - { name: work, do: h.fails }
"#,
    );
    let out = s.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = only_run(&s);
    let shown = json(&s.run(&["show", &run, "--json"]));
    let history = shown["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{shown}");
    let row = &history[0];
    assert_eq!(row["step"], "nested.v1/outer/inner/work");
    assert_eq!(row["outcome"], "failed");
    // The step's own error is kept, not replaced by a handler's.
    assert!(
        row["error"].as_str().unwrap_or("").contains("boom"),
        "{row}"
    );
    // The inner handler fails with a fatal error: that ends the retrying, so the outer
    // handler is never asked.
    let handlers = row["handlers"].as_array().expect("handlers");
    assert_eq!(handlers.len(), 1, "{row}");
    assert_eq!(handlers[0]["group"], "nested.v1/outer/inner");
    assert!(
        handlers[0]["given"].as_str().unwrap_or("").contains("boom"),
        "{row}"
    );
    assert!(
        handlers[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("the handler broke"),
        "{row}"
    );

    let text = stdout(&s.run(&["show", &run]));
    assert!(text.contains("boom"), "{text}");
    assert!(
        text.contains("handler of nested.v1/outer/inner was asked: failed:"),
        "{text}"
    );
    assert!(
        !text.contains("handler of nested.v1/outer was asked"),
        "{text}"
    );
}

#[test]
fn a_patch_that_would_grow_the_data_past_its_limit_fails_the_step_and_keeps_the_data() {
    let s = Sandbox::new();
    // big-output returns an 8 MiB patch; the plugin may return that much, the run may not hold it.
    let flow = s.flow(
        "big.yaml",
        "flow: big.v1\nplugins:\n  h: { wasm: \"{plugins}/hostile.wasm\", max-output: 16MiB }\nsteps:\n  - { name: grow, do: h.big-output }\n",
    );
    let out = s.run(&["--max-data", "4MiB", "run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let run = only_run(&s);
    let shown = json(&s.run(&["show", &run, "--json"]));
    assert_eq!(shown["status"], "failed");
    assert_eq!(
        shown["data"],
        serde_json::json!({}),
        "the patch was not applied"
    );
    let row = &shown["history"][0];
    assert_eq!(row["outcome"], "failed");
    assert!(
        row["error"]
            .as_str()
            .unwrap_or("")
            .contains("over the limit of 4194304 bytes"),
        "{row}"
    );
    // With room for it, a resume runs the step again and the run completes.
    let out = s.run(&["--max-data", "16MiB", "resume", &run, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A plugin that prints 10 MiB: every line it printed that was kept is a log line tagged with
/// the plugin, run and step; what is kept stays under the 64 KiB per-call cap, and the rest is
/// counted, to the byte, in one warning.
#[test]
fn loud_output_is_tagged_bounded_and_the_dropped_bytes_are_counted() {
    let s = Sandbox::new();
    let flow = s.flow(
        "loud.yaml",
        "flow: loud.v1\nplugins:\n  h: { wasm: \"{plugins}/hostile.wasm\" }\nsteps:\n  - { name: print, do: h.print-lots }\n",
    );
    let out = s
        .cmd()
        .env("STEPFLOW_LOG", "info")
        .args(["run", flow.to_str().unwrap()])
        .output()
        .expect("run stepflow");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = only_run(&s);
    let err = stderr(&out);
    let printed: Vec<&str> = err.lines().filter(|l| l.contains("yyyy")).collect();
    let tags = format!("plugin=\"h\" run=\"{run}\" step=\"loud.v1/print\"");
    assert!(!printed.is_empty(), "{err}");
    for line in &printed {
        assert!(line.contains(&tags), "an untagged line: {line}");
    }
    // print-lots writes 10,240 lines of 1,023 `y` and a newline, then "done printing\n".
    let kept: usize = printed.iter().map(|l| l.matches('y').count() + 1).sum();
    assert!(kept <= 64 << 10, "{kept} bytes logged, over the cap");
    assert!(kept > 60 << 10, "only {kept} bytes logged");
    let dropped = 10_240 * 1_024 + "done printing\n".len() - (64 << 10);
    assert!(
        err.contains(&format!("{dropped} more bytes of output dropped")),
        "{}",
        err.lines()
            .filter(|l| !l.contains("yyyy"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_server_with_impossible_settings_says_which_and_starts_nothing() {
    let s = Sandbox::new();
    let out = s.run(&["server", "--no-api", "--lease", "10ms"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--lease 10ms is too short") && err.contains("so give at least 1s"),
        "one sentence, no gap: {err}"
    );
    let out = s.run(&["server", "--no-api", "--drive-threads", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--drive-threads"), "{}", stderr(&out));
    assert!(!s.db().exists(), "no database was made");
}
