//! Shared helpers for the end-to-end tests: the real `stepflow` binary, real plugins, a fresh
//! database per test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A scratch directory with its own database: a SQLite file in it, or a scratch PostgreSQL
/// database ([`Sandbox::on_postgres`]).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The scratch PostgreSQL database the commands use instead of the file, if any.
    pub postgres: Option<stepflow_testkit::postgres::ScratchDatabase>,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
            postgres: None,
        }
    }

    /// A sandbox for a durability test (a crash, a kill): on a disk, in `$STEPFLOW_BENCH_DIR`
    /// or the target directory, never on tmpfs, where a lost write could not be told from a
    /// saved one.
    pub fn durable() -> Self {
        let dir = stepflow_testkit::durable_dir().unwrap_or_else(|why| panic!("{why}"));
        Sandbox {
            dir: tempfile::tempdir_in(dir).expect("tempdir"),
            postgres: None,
        }
    }

    /// A sandbox for a test that writes much and measures nothing about durability: on tmpfs
    /// (`/dev/shm`) where there is one, so a commit costs no disk flush.
    pub fn scratch() -> Self {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        Sandbox {
            dir: dir.expect("tempdir"),
            postgres: None,
        }
    }

    /// This sandbox with its runs in a scratch PostgreSQL database instead of the file; `None`
    /// (after `skipped: why`) where no PostgreSQL is given.
    pub fn on_postgres(mut self, test: &str) -> Option<Self> {
        let server = stepflow_testkit::postgres::server_url(test)?;
        let scratch = stepflow_testkit::postgres::ScratchDatabase::create(&server, test)
            .unwrap_or_else(|e| panic!("a scratch database for {test}: {e}"));
        self.postgres = Some(scratch);
        Some(self)
    }

    /// What `--db` says: the scratch database's URL, or the file.
    pub fn db_arg(&self) -> std::ffi::OsString {
        match &self.postgres {
            Some(scratch) => scratch.url.clone().into(),
            None => self.db().into_os_string(),
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
        let mut c = bin();
        c.arg("--db").arg(self.db_arg());
        // What the binary keeps beside its default database (a PostgreSQL database's API
        // token) stays in the sandbox.
        c.env("XDG_DATA_HOME", self.dir.path().join("data"));
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

/// The binary with quiet logs, no database from the environment, and compiled plugins cached
/// under the target directory (shared by the tests), never in the user's own cache.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stepflow"));
    c.env("STEPFLOW_LOG", "warn");
    c.env_remove("STEPFLOW_DB");
    c.env(
        "STEPFLOW_CACHE_DIR",
        stepflow_testkit::target_dir().join("e2e-component-cache"),
    );
    c
}

/// The `step` of each of a shown run's history rows (`stepflow show RUN --json`), in order.
pub fn history_steps(shown: &serde_json::Value) -> Vec<&str> {
    shown["history"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|h| h["step"].as_str()).collect())
        .unwrap_or_default()
}

/// Sends `signal` (`INT`, `TERM`, `HUP`, ...) to process `pid`, as a person or a service
/// manager would.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
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
    /// Its stderr, line by line, read by a thread so the process never blocks on a full pipe.
    pub err: std::sync::mpsc::Receiver<String>,
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
    let (tx, err) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut blocked = BlockedRun {
        child,
        run,
        work,
        out,
        err,
    };
    blocked.wait_for_stderr("waiting for release");
    blocked
}

impl BlockedRun {
    /// Waits until the process writes a line to stderr that contains `text` (at most 180 s, so
    /// a hung process fails the test instead of hanging it).
    pub fn wait_for_stderr(&mut self, text: &str) {
        loop {
            match self.err.recv_timeout(std::time::Duration::from_secs(180)) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(e) => panic!("no stderr line with {text:?}: {e}"),
            }
        }
    }

    /// Lets `slow` finish and collects the rest of stdout and the exit code.
    pub fn release(mut self) -> (Option<i32>, Vec<String>) {
        std::fs::write(self.work.join("release"), "go").unwrap();
        let rest: Vec<String> = self.out.by_ref().map(|l| l.unwrap()).collect();
        (self.child.wait().unwrap().code(), rest)
    }
}

/// A `stepflow server` in the background, logging JSON lines that a thread hands to the test
/// as they come, so the test waits for what the server says it did, never for a time.
pub struct ServerProcess {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far, shown when an expectation fails.
    pub log: Vec<String>,
}

/// How long a test waits for one log line before it gives up and shows the log: a bound
/// against hangs, not a synchronisation.
const LOG_LINE_BOUND: std::time::Duration = std::time::Duration::from_secs(180);

impl ServerProcess {
    /// Starts `stepflow server --log-format json` with `args` on the sandbox's database.
    pub fn start(s: &Sandbox, args: &[&str]) -> Self {
        let mut all = vec!["server", "--log-format", "json"];
        // Tests run side by side: each server's API takes a free port (it logs which).
        if !args.iter().any(|a| *a == "--listen" || *a == "--no-api") {
            all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut child = spawn(s, &all, "info");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ServerProcess {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The next JSON log line; `None` once the server closed its stderr (it exited).
    pub fn next_event(&mut self) -> Option<serde_json::Value> {
        loop {
            match self.lines.recv_timeout(LOG_LINE_BOUND) {
                Ok(line) => {
                    self.log.push(line.clone());
                    match serde_json::from_str(&line) {
                        Ok(event) => return Some(event),
                        Err(_) => continue, // e.g. a panic message: kept in the log
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no log line for {LOG_LINE_BOUND:?}; log:\n{}", self.tail())
                }
            }
        }
    }

    /// Reads log lines until the API says where it listens, and returns that address.
    pub fn api_addr(&mut self) -> String {
        let listening = self.wait_for("the API to listen", |e| {
            message(e).starts_with("api listening")
        });
        listening["addr"]
            .as_str()
            .expect("the bound address")
            .to_string()
    }

    /// Reads log lines until one satisfies `want`, and returns it; fails with the log if the
    /// server exits first.
    pub fn wait_for(
        &mut self,
        what: &str,
        mut want: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        while let Some(event) = self.next_event() {
            if want(&event) {
                return event;
            }
        }
        panic!("the server exited before {what}; log:\n{}", self.tail())
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self) -> String {
        let start = self.log.len().saturating_sub(40);
        self.log[start..].join("\n")
    }

    /// Sends SIGTERM (as `kill` does): the server stops claiming and drains.
    pub fn terminate(&self) {
        send_signal(self.child.id(), "TERM");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Waits for the server to exit: its exit code, its stdout, the rest of its log.
    pub fn finish(mut self) -> (Option<i32>, String, Vec<String>) {
        while self.next_event().is_some() {}
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            std::io::Read::read_to_string(&mut stdout, &mut out).expect("read stdout");
        }
        let code = self.child.wait().expect("wait").code();
        (code, out, self.log)
    }
}

/// The message of a server's JSON log line (`""` if it has none).
pub fn message(event: &serde_json::Value) -> &str {
    event["message"].as_str().unwrap_or("")
}

/// A small deterministic random source, so a failing schedule can be replayed from its seed.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Runs `flow` with `input` to the end, killing the process (SIGKILL) after a random 0 to
/// `most - 1` finished steps each time and resuming it, until a resume finishes; then resumes
/// once more in case the last kill left anything. Returns the run id and how many kills it
/// took. The schedule's seed is printed, to replay a failure.
pub fn run_with_kills(s: &Sandbox, flow: &Path, input: &str, most: u64) -> (String, usize) {
    let seed = seed();
    println!("kill seed: {seed} (replay with STEPFLOW_TEST_SEED={seed})");
    let mut rng = Lcg(seed);
    let mut kills = 0;
    let mut run: Option<String> = None;
    loop {
        let args: Vec<String> = match &run {
            None => vec![
                "run".into(),
                flow.display().to_string(),
                "--input".into(),
                input.into(),
            ],
            Some(id) => vec!["resume".into(), id.clone()],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = spawn(s, &args, "error");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let header = lines.next().unwrap().unwrap();
        if run.is_none() {
            run = Some(header.split_whitespace().nth(1).unwrap().to_string());
        }
        let steps = rng.below(most);
        let mut done = 0;
        let mut exited = false;
        while done < steps {
            match lines.next() {
                Some(Ok(line)) if line.starts_with(['✓', '↻']) => done += 1,
                Some(Ok(_)) => {}
                _ => {
                    exited = true;
                    break;
                }
            }
        }
        if exited {
            let status = child.wait().unwrap();
            assert!(status.success(), "the run ended with {status}");
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        assert!(kills <= 400, "the run did not finish after {kills} kills");
    }
    let id = run.unwrap();
    let out = s.run(&["resume", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (id, kills)
}

/// The seed of a test's random schedule: `STEPFLOW_TEST_SEED` to replay a failure, else the
/// clock. The test prints it.
pub fn seed() -> u64 {
    std::env::var("STEPFLOW_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        })
}

/// A deployment that waits for an approval signal between its first step and the rest.
pub const APPROVAL: &str = "flow: approval.v1
plugins:
  deploy: { wasm: {plugins}/deploy.wasm }
data: { version: \"2.0\", current: \"1.0\", rollout_ms: 0, flaky_validations: 0 }
steps:
  - do: deploy.prepare
  - { name: approval, wait-for: { signal: approve }, timeout: 24h }
  - do: deploy.deploy
  - do: deploy.cleanup
";

/// A run that failed in the foreground: it reads `input.txt` from the sandbox, which is not
/// there yet (write it, and a resume succeeds). Returns its id.
pub fn failed_run(s: &Sandbox) -> String {
    let failing = format!(
        "flow: fail.v1\nplugins:\n  h:\n    wasm: {{plugins}}/hostile.wasm\n    dirs: [{{ host: \"{}\", guest: /data }}]\nsteps:\n  - {{ name: read, do: h.read-file }}\n",
        s.dir.path().display()
    );
    let failing = s.flow("fail.yaml", &failing);
    let out = s.run(&[
        "run",
        failing.to_str().unwrap(),
        "--input",
        r#"{"path": "/data/input.txt"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let failed = json(&out);
    assert_eq!(failed["status"], "failed");
    failed["run"].as_str().unwrap().to_string()
}

/// Runs the install script `script` (relative to the repository) of a test's outside tools:
/// `Err(why)` when it says this machine cannot have them (exit 3, `skipped: why`).
pub fn install_tools(script: &str) -> Result<(), String> {
    // One install at a time: two tests of one binary running `apt-get` at once would meet its
    // lock, and the second would fail for no fault of the machine.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(repo().join(script))
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) => Err(stdout(&out)
            .trim()
            .trim_start_matches("skipped: ")
            .to_string()),
        _ => panic!("{script} failed:\n{}\n{}", stdout(&out), stderr(&out)),
    }
}
