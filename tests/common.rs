//! Shared helpers for the end-to-end tests: the real `stepflow` binary, real plugins, a fresh
//! database per test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
