//! A plugin author's path, outside this repository: `stepflow plugin new` in a temporary
//! folder, then `plugin build`, `validate`, `run --build` (the project's own one-line `build`
//! calls back into the binary) and `plugin test`, for each language. Every language's
//! template has the same steps, so every run ends in the same data document.
//!
//! A language whose toolchain cannot be installed here is skipped loudly ("skipped: ..."); under
//! CI (`CI` set) a skip is a failure.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Sandbox, json, stderr, stdout};
use serde_json::json;
use stepflow_testkit::{in_ci, repo_root};

/// The toolchains go where the repository's own plugin builds put them, so a test run installs
/// each only once.
fn tools_dir() -> PathBuf {
    std::env::var_os("STEPFLOW_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools"))
}

/// The binary with the shared toolchains and a compile cache of the sandbox's own, so the
/// first load of the new component compiles it.
fn stepflow(s: &Sandbox, args: &[&str]) -> Output {
    s.cmd()
        .env("STEPFLOW_TOOLS_DIR", tools_dir())
        .env("STEPFLOW_CACHE_DIR", s.path("compiled"))
        .args(args)
        .output()
        .expect("run stepflow")
}

fn text(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// new → build → validate → run → the template's data, in a folder outside the repository.
fn author_a_plugin(language: &str) {
    let s = Sandbox::new();
    let name = format!("hello-{language}");
    let dir = s.path(&name);
    assert!(
        !dir.starts_with(repo_root()),
        "the project must live outside the repository"
    );
    let out = stepflow(
        &s,
        &["plugin", "new", "--lang", language, &name, text(&dir)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("stepflow plugin test"),
        "{}",
        stdout(&out)
    );
    let world = std::fs::read_to_string(dir.join("wit/world.wit")).expect("the world");
    assert!(world.contains(&format!("world {name} {{")), "{world}");
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/deps/stepflow-plugin/plugin.wit")).expect("the WIT"),
        std::fs::read_to_string(repo_root().join("wit/plugin.wit")).expect("the repo's WIT"),
        "the vendored package is this binary's"
    );

    let built = stepflow(&s, &["plugin", "build", text(&dir)]);
    if !built.status.success() {
        let why = stderr(&built);
        let _ = writeln!(std::io::stderr(), "skipped: {language}: {why}");
        assert!(!in_ci(), "CI must build every language: {language}: {why}");
        return;
    }
    let wasm = dir.join("target").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "no {}", wasm.display());
    assert!(stdout(&built).contains("built "), "{}", stdout(&built));

    // The first load compiles the component; a large one (an interpreter inside) says so
    // while it works, and how long it took.
    let flow = dir.join("flow.yaml");
    let valid = s
        .cmd()
        .env("STEPFLOW_TOOLS_DIR", tools_dir())
        .env("STEPFLOW_CACHE_DIR", s.path("compiled"))
        .env("STEPFLOW_LOG", "info")
        .args(["validate", text(&flow)])
        .output()
        .expect("run stepflow");
    assert_eq!(valid.status.code(), Some(0), "{}", stderr(&valid));
    let announced = stderr(&valid).contains("compiling the plugin (")
        && stderr(&valid).contains("compiled the plugin in");
    let large = matches!(language, "python" | "javascript");
    assert_eq!(announced, large, "{language}: {}", stderr(&valid));

    // Its `build` is the project's one-line script, which calls this binary back.
    let ran = stepflow(&s, &["run", "--build", text(&flow), "--json"]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let result = json(&ran);
    assert_eq!(
        result["data"],
        json!({"name": "world", "want": 2, "fail_first": true,
               "greeting": "hello, world", "greetings": 2}),
        "{language}"
    );
    let run = result["run"].as_str().expect("a run id");
    let shown = json(&stepflow(&s, &["show", run, "--json"]));
    let outcomes: Vec<&str> = shown["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| h["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        outcomes,
        ["retrying", "done", "false", "done", "true"],
        "{language}: the first greeting fails once and the handler retries it"
    );

    let tested = stepflow(&s, &["plugin", "test", text(&dir)]);
    assert_eq!(tested.status.code(), Some(0), "{}", stderr(&tested));
    let timeline = stdout(&tested);
    assert!(
        timeline.contains("loop-until") && timeline.contains("status completed"),
        "{timeline}"
    );
    assert!(dir.join("target/test.db").is_file());
}

#[test]
fn a_rust_plugin_project_builds_and_runs_outside_the_repository() {
    author_a_plugin("rust");
}

#[test]
fn a_python_plugin_project_builds_and_runs_outside_the_repository() {
    author_a_plugin("python");
}

#[test]
fn a_javascript_plugin_project_builds_and_runs_outside_the_repository() {
    author_a_plugin("javascript");
}

#[test]
fn a_c_plugin_project_builds_and_runs_outside_the_repository() {
    author_a_plugin("c");
}

#[test]
fn plugin_new_refuses_a_bad_name_and_a_folder_in_use() {
    let s = Sandbox::new();
    let out = stepflow(&s, &["plugin", "new", "--lang", "rust", "Fetch_Orders"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not kebab-case"), "{}", stderr(&out));

    let dir = s.path("taken");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("keep.txt"), "mine").expect("write");
    let out = stepflow(&s, &["plugin", "new", "--lang", "python", "x", text(&dir)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        1,
        "nothing was written"
    );
}

#[test]
fn plugin_build_says_what_a_folder_lacks() {
    let s = Sandbox::new();
    let out = stepflow(&s, &["plugin", "build", text(s.dir.path())]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("is not a plugin project") && err.contains("stepflow plugin new"),
        "{err}"
    );
}
