//! The same data-processing flow with its plugin written in Rust, Python, JavaScript and C:
//! every language's run ends in the same data document and the same history of step outcomes,
//! and `stepflow inspect` sees the same step functions in each.
//!
//! A language whose toolchain cannot be installed here is skipped loudly ("skipped: <language>:
//! <why>"); under CI (`CI` set) a skip is a failure, since `.ci/run` installs everything.

mod common;

use std::io::Write;

use common::{Sandbox, json, stderr};
use serde_json::Value;
use stepflow_testkit::{LANGUAGES, in_ci, language_plugin};

/// What a language's run produced: the final data document, and (step, outcome) per call.
struct Outcome {
    language: &'static str,
    data: Value,
    history: Vec<(String, String)>,
    functions: Value,
}

fn loud(line: &str) {
    // Written to the process's stderr directly, so the test harness does not hide it.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn run_language(s: &Sandbox, language: &'static str) -> Result<Outcome, String> {
    let wasm = language_plugin(language, "dataproc")?;
    let flow = s.flow(&format!("{language}.yaml"), &common::pages_flow(&wasm));
    let out = s.run(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        r#"{"pages": 4, "flaky": true}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{language}: {}", stderr(&out));
    let result = json(&out);
    let run = result["run"].as_str().unwrap().to_string();
    let shown = json(&s.run(&["show", &run, "--json"]));
    let history = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["step"].as_str().unwrap().to_string(),
                h["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let inspected = json(&s.run(&["inspect", wasm.to_str().unwrap(), "--json"]));
    // Step functions only: a toolchain may export helpers of its own (componentize-py's init).
    let functions: Vec<Value> = inspected["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["kind"].is_null())
        .cloned()
        .collect();
    Ok(Outcome {
        language,
        data: result["data"].clone(),
        history,
        functions: Value::Array(functions),
    })
}

#[test]
fn every_language_runs_the_flow_to_the_same_end() {
    let s = Sandbox::new();
    let mut outcomes = Vec::new();
    let mut skipped = Vec::new();
    for language in LANGUAGES {
        match run_language(&s, language) {
            Ok(outcome) => outcomes.push(outcome),
            Err(why) => {
                loud(&format!("skipped: {language}: {why}"));
                skipped.push(format!("{language}: {why}"));
            }
        }
    }
    loud(&format!(
        "languages: {} ran ({}), {} skipped",
        outcomes.len(),
        outcomes
            .iter()
            .map(|o| o.language)
            .collect::<Vec<_>>()
            .join(", "),
        skipped.len()
    ));
    assert!(
        !in_ci() || skipped.is_empty(),
        "CI must build every language: {skipped:?}"
    );
    let rust = outcomes
        .iter()
        .find(|o| o.language == "rust")
        .expect("Rust always builds");
    assert_eq!(rust.data["summary"], "4 pages, total 20360");
    assert!(
        rust.history.iter().any(|(_, o)| o == "retrying"),
        "{:?}",
        rust.history
    );
    for other in &outcomes {
        assert_eq!(
            other.data, rust.data,
            "{} ends in another data document",
            other.language
        );
        assert_eq!(
            other.history, rust.history,
            "{} has another history",
            other.language
        );
        assert_eq!(
            other.functions, rust.functions,
            "{} exports other step functions",
            other.language
        );
    }
}
