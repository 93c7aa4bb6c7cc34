//! The web page in a real browser (Debian's chromium driven by playwright-core), against the
//! real `stepflow server`: the runs list, a run that waits for an approval signal approved
//! from the page and finishing live, a failed run resumed from the page; the scenario checks
//! its screenshots' colours, not only the page's elements (`tests/web/scenario.mjs`).
//!
//! `tests/web/install` installs chromium and playwright-core when they are missing; where it
//! cannot, the test says `skipped: why`, and under `CI` a skip fails.

mod common;

use std::process::Command;

use common::{
    APPROVAL, Sandbox, ServerProcess, failed_run, install_tools, json, message, repo, stderr,
    stdout,
};

#[test]
fn an_operator_approves_a_waiting_run_and_resumes_a_failed_one_from_the_page() {
    if let Err(why) = install_tools("tests/web/install") {
        assert!(std::env::var_os("CI").is_none(), "skipped under CI: {why}");
        eprintln!("skipped: web page in a browser: {why}");
        return;
    }
    let s = Sandbox::durable();
    // A run that failed: it reads a file that is not there yet.
    let failed = failed_run(&s);
    let approval = s.flow("approval.yaml", APPROVAL);
    let out = s.run(&["submit", approval.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let waiting = stdout(&out).trim().to_string();

    let mut server = ServerProcess::start(&s, &[]);
    let listening = server.wait_for("the API to listen", |e| {
        message(e).starts_with("api listening")
    });
    let addr = listening["addr"]
        .as_str()
        .expect("the bound address")
        .to_string();
    server.wait_for("the run to wait", |e| {
        message(e) == "run waits for a signal" && e["run"] == waiting.as_str()
    });
    let mut token_file = s.db().into_os_string();
    token_file.push(".api-token");
    let token = std::fs::read_to_string(&token_file).expect("the token file");
    // The cause of the failure is fixed; the page resumes the run.
    std::fs::write(s.path("input.txt"), "now it exists").unwrap();

    let screenshots = s.path("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let out = Command::new("node")
        .arg(repo().join("tests/web/scenario.mjs"))
        .env("STEPFLOW_URL", format!("http://{addr}"))
        .env("STEPFLOW_TOKEN", token.trim())
        .env("WAITING_RUN", &waiting)
        .env("FAILED_RUN", &failed)
        .env("SCREENSHOTS", &screenshots)
        .output()
        .expect("node");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the browser scenario failed:\n{}\n{}\nserver log:\n{}",
        stdout(&out),
        stderr(&out),
        server.tail()
    );
    eprintln!("{}", stdout(&out).trim());
    server.terminate();
    assert_eq!(server.finish().0, Some(0));
    for run in [&waiting, &failed] {
        let shown = json(&s.run(&["show", run, "--json"]));
        assert_eq!(shown["status"], "completed", "{shown}");
    }
    let shown = json(&s.run(&["show", &waiting, "--json"]));
    assert_eq!(
        shown["data"]["signals"]["approve"]["by"], "browser",
        "{shown}"
    );
}
