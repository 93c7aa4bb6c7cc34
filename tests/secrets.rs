//! Secrets with the real binary and a real plugin that says its secret everywhere it can (its
//! stdout and stderr, a host log line, its patch, its error): after runs that used a secret
//! from the environment and one from a file, and a step that failed with the secret in its
//! error, neither value is in the output, the history, the data document or the database's
//! bytes; each shows as `[secret NAME]`.

mod common;

use common::{Sandbox, json, stderr, stdout};

const FROM_ENV: &str = "env-s3cr3t-9876-abcd";
const FROM_FILE: &str = "file-s3cr3t-5e5e-ab12";

const FLOW: &str = "flow: secrets.v1
plugins:
  h:
    wasm: {plugins}/hostile.wasm
    secrets:
      API_TOKEN: { env: STEPFLOW_TEST_SECRET }
      FILE_TOKEN: { file: token.txt }
steps:
  - { name: leak, do: h.leak-env }
";

/// Everything a run left where a reader could see it: the command's output, and `show`.
fn seen(s: &Sandbox, input: &str) -> (Option<i32>, String, String) {
    let flow = s.path("secrets.yaml");
    let out = s
        .cmd()
        .env("STEPFLOW_LOG", "info")
        .env("STEPFLOW_TEST_SECRET", FROM_ENV)
        .args(["run", flow.to_str().unwrap(), "--input", input, "--json"])
        .output()
        .expect("run");
    let run = json(&out)["run"].as_str().unwrap_or_default().to_string();
    let shown = stdout(&s.run(&["show", &run, "--json"]));
    (
        out.status.code(),
        format!("{}\n{}", stdout(&out), stderr(&out)),
        shown,
    )
}

#[test]
fn a_secret_never_reaches_the_output_the_history_the_data_or_the_store() {
    let s = Sandbox::new();
    s.flow("secrets.yaml", FLOW);
    std::fs::write(s.path("token.txt"), format!("{FROM_FILE}\n")).unwrap();

    let (code, output, shown) = seen(&s, r#"{"var": "API_TOKEN"}"#);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("stdout says [secret API_TOKEN]"),
        "{output}"
    );
    assert!(
        output.contains("the log says [secret API_TOKEN]"),
        "{output}"
    );
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("show");
    assert_eq!(shown["data"]["value"], "[secret API_TOKEN]", "{shown}");
    assert_eq!(
        shown["data"]["nested"]["header"],
        "Bearer [secret API_TOKEN]"
    );

    let (code, output, shown) = seen(&s, r#"{"var": "FILE_TOKEN", "fail": true}"#);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        shown.contains("the server refused [secret FILE_TOKEN]"),
        "the failed step's error is redacted: {shown}"
    );

    // Nothing anywhere has either value: the outputs, the histories, the database's files.
    let mut everything = output + &shown;
    for entry in std::fs::read_dir(s.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("runs.db") {
            everything.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    for secret in [FROM_ENV, FROM_FILE] {
        assert!(!everything.contains(secret), "a secret leaked: {secret}");
    }
}

#[test]
fn a_secret_that_cannot_be_read_is_refused_before_the_run_starts() {
    let s = Sandbox::new();
    let flow = s.flow("secrets.yaml", FLOW);
    std::fs::write(s.path("token.txt"), "tok-file-value").unwrap();
    let out = s.run(&["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`API_TOKEN` comes from the environment variable `STEPFLOW_TEST_SECRET`, which is not set"),
        "{}",
        stderr(&out)
    );
    let out = s
        .cmd()
        .env("STEPFLOW_TEST_SECRET", "abc")
        .args(["run", flow.to_str().unwrap()])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("too short"), "{}", stderr(&out));
    assert!(!s.db().exists() || s.run(&["runs", "--json"]).status.success());
}
