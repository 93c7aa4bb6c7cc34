//! Shared helpers for the end-to-end tests: the real `stepflow` binary, real plugins, a fresh
//! database per test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A scratch directory with its own database.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("runs.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary, pointed at this sandbox's database, with quiet logs.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stepflow"));
        c.arg("--db").arg(self.db());
        c.env("STEPFLOW_LOG", "warn");
        c.env_remove("STEPFLOW_DB");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run stepflow")
    }

    /// Writes a flow file; `{plugins}` is replaced by the directory of the built Rust plugins.
    pub fn flow(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.path(name);
        let text = yaml.replace("{plugins}", &plugins_dir().display().to_string());
        std::fs::write(&path, text).expect("write flow");
        path
    }
}

/// The built Rust plugins.
pub fn plugins_dir() -> PathBuf {
    stepflow_testkit::rust_plugin("noop")
        .parent()
        .map(Path::to_path_buf)
        .expect("plugin dir")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON a command printed: the whole output is one document, or its last line is.
pub fn json(o: &Output) -> serde_json::Value {
    let text = stdout(o);
    serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(text.lines().last().unwrap_or("")))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}\nstderr: {}", stderr(o)))
}

/// The repository root.
pub fn repo() -> PathBuf {
    stepflow_testkit::repo_root()
}

/// The data-processing flow over the `dataproc` plugin at `wasm`: a loop over pages with a
/// retried, flaky transform, then a summary (used by the crash and language tests).
pub fn pages_flow(wasm: &Path) -> String {
    format!(
        r#"flow: pages.v1
plugins:
  d:
    wasm: {}
    memory: 256MiB
steps:
  - name: pages
    loop-until: d.last-page
    steps:
      - {{ name: fetch, do: d.fetch-page }}
      - name: stage
        retry: {{ max-attempts: 3 }}
        steps:
          - {{ name: transform, do: d.transform }}
  - {{ name: summarize, do: d.summarize }}
"#,
        wasm.display()
    )
}

/// The binary in the background with piped stdout and stderr, logging at `log`.
pub fn spawn(s: &Sandbox, args: &[&str], log: &str) -> Child {
    s.cmd()
        .args(args)
        .env("STEPFLOW_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stepflow")
}

/// A run of `first`, `slow`, `last` (checkpoint steps of the hostile plugin) whose `slow` step
/// blocks until a file `release` appears in the returned work directory; returns once `slow` is
/// blocked, with the process, the run id and the rest of its stdout.
pub struct BlockedRun {
    pub child: Child,
    pub run: String,
    pub work: PathBuf,
    pub out: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

pub fn blocked_run(s: &Sandbox, flow: &str) -> BlockedRun {
    let work = s.path("work");
    std::fs::create_dir(&work).unwrap();
    let yaml = r#"flow: FLOW
plugins:
  h:
    wasm: {plugins}/hostile.wasm
    dirs: [{ host: "WORK", guest: /work, writable: true }]
steps:
  - { name: first, do: h.checkpoint }
  - { name: slow, do: h.checkpoint }
  - { name: last, do: h.checkpoint }
"#
    .replace("WORK", &work.display().to_string())
    .replace("FLOW", flow);
    let path = s.flow("blocked.yaml", &yaml);
    let input = format!(r#"{{"block_in": "{flow}/slow"}}"#);
    let mut child = spawn(
        s,
        &["run", path.to_str().unwrap(), "--input", &input],
        "info",
    );
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let run = out
        .next()
        .unwrap()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        if line.unwrap().contains("waiting for release") {
            break;
        }
    }
    BlockedRun {
        child,
        run,
        work,
        out,
    }
}

impl BlockedRun {
    /// Lets `slow` finish and collects the rest of stdout and the exit code.
    pub fn release(mut self) -> (Option<i32>, Vec<String>) {
        std::fs::write(self.work.join("release"), "go").unwrap();
        let rest: Vec<String> = self.out.by_ref().map(|l| l.unwrap()).collect();
        (self.child.wait().unwrap().code(), rest)
    }
}
