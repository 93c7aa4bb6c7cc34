//! Builds the example plugins for stepflow's tests, benchmarks and examples.
//!
//! The Rust plugins under `plugins/rust` are a workspace of their own that targets
//! `wasm32-wasip2`. [`rust_plugin`] runs its `build` script (which adds the target with rustup
//! when it is missing) once per process — cargo itself serialises concurrent builds and skips
//! up-to-date ones — and returns the path of one component under `plugins/rust/target`, where
//! the example flow files expect them. [`mixed_flow`] is the flow the server's tests drive.
//! [`store`] is the conformance suite every `Store` backend runs
//! ([`store_conformance!`](crate::store_conformance)).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod postgres;
pub mod store;

/// The repository's root directory: found from the package directory cargo gives the running
/// test or benchmark (`CARGO_MANIFEST_DIR` at run time), else from where this crate was
/// compiled. Two clones that share one target directory share this crate's compiled code, so
/// the path baked in at compile time may be the other clone's.
pub fn repo_root() -> PathBuf {
    let is_root = |dir: &Path| dir.join("wit/plugin.wit").is_file() && dir.join("plugins").is_dir();
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| dir.ancestors().find(|d| is_root(d)).map(Path::to_path_buf))
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .nth(2)
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo target directory the current executable was built into.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // <target>/<profile>/deps/<test-binary> or <target>/<profile>/<binary>
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Where benchmarks and durability tests keep their databases: `$STEPFLOW_BENCH_DIR`, else
/// the target directory. Refused when it is on tmpfs, where `fdatasync` does nothing, so a
/// figure or a crash test there would say nothing about a disk.
pub fn durable_dir() -> Result<PathBuf, String> {
    let dir = std::env::var_os("STEPFLOW_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("durable-scratch"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if on_tmpfs(&dir) {
        return Err(format!(
            "{} is on tmpfs, where fdatasync does nothing: set STEPFLOW_BENCH_DIR to a \
             directory on a disk",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Whether `dir` is on tmpfs (or ramfs): memory, where a sync is free.
pub fn on_tmpfs(dir: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::statfs(dir).is_ok_and(|s| {
        // `f_type` is i64 here but another integer type on other platforms.
        #[allow(clippy::unnecessary_cast)]
        let kind = s.f_type as i64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

/// The path of the built Rust plugin `name` (e.g. `quickstart`), building all of them first.
///
/// Panics with a message that says what to do when the build fails: this is test support.
pub fn rust_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT.get_or_init(build_rust_plugins);
    match dir {
        Ok(dir) => dir.join(format!("{name}.wasm")),
        Err(e) => panic!("{e}"),
    }
}

/// Builds `plugins/rust` with its `build` script; returns the directory holding the `.wasm` files.
pub fn build_rust_plugins() -> Result<PathBuf, String> {
    let dir = repo_root().join("plugins/rust");
    let script = dir.join("build");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "building the Rust plugins failed ({status}); run {} to see why",
            script.display()
        ));
    }
    Ok(dir.join("target/wasm32-wasip2/release"))
}

/// The languages the example plugins are written in, each under `plugins/<language>`.
pub const LANGUAGES: [&str; 4] = ["rust", "python", "javascript", "c"];

/// Builds the plugins of `language` (`plugins/<language>/build`, once per process) and returns
/// the directory that holds its `.wasm` files, or why they cannot be built on this machine
/// (a test then reports "skipped: <language>: <why>").
pub fn language_plugins(language: &str) -> Result<PathBuf, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: OnceLock<Mutex<HashMap<String, Result<PathBuf, String>>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(language.to_string())
        .or_insert_with(|| build_language(language))
        .clone()
}

fn build_language(language: &str) -> Result<PathBuf, String> {
    if language == "rust" {
        return build_rust_plugins();
    }
    let dir = repo_root().join("plugins").join(language);
    let script = dir.join("build");
    if !script.exists() {
        return Err(format!("{} does not exist", script.display()));
    }
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(dir.join("target"))
}

/// The built plugin `name` of `language`.
pub fn language_plugin(language: &str, name: &str) -> Result<PathBuf, String> {
    let path = language_plugins(language)?.join(format!("{name}.wasm"));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("the build did not produce {}", path.display()))
    }
}

/// Whether this is a CI run, where every language must build (nothing may be skipped).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Writes `<name>.yaml` to `dir`: flow `<name>.v1` of `steps` no-op plugin steps (`s0`, `s1`,
/// ...), what the benchmarks measure the engine's own cost per step with.
pub fn noop_flow(dir: &Path, name: &str, steps: usize) -> PathBuf {
    use std::fmt::Write as _;
    let mut yaml = format!(
        "flow: {name}.v1\nplugins:\n  noop:\n    wasm: {}\nsteps:\n",
        rust_plugin("noop").display()
    );
    for i in 0..steps {
        let _ = writeln!(yaml, "  - {{ name: s{i}, do: noop.noop }}");
    }
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

/// How many `fdatasync` and `fsync` calls a child run of the current benchmark makes: the
/// benchmark binary runs again under `strace -c` with `env` set to `value` (it must then do the
/// one run to count and exit). `None` when strace is not installed or the child failed.
pub fn syncs_of_child_run(env: &str, value: &str) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = tempfile::NamedTempFile::new().ok()?;
    let status = std::process::Command::new("strace")
        .args(["-f", "-qq", "-c", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(out.path())
        .arg(&exe)
        .env(env, value)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let table = std::fs::read_to_string(out.path()).ok()?;
    // strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall".
    Some(
        table
            .lines()
            .filter(|l| l.ends_with(" fdatasync") || l.ends_with(" fsync"))
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum(),
    )
}

/// A flow file with waits, a case, retries with back-off (one with a handler) and a loop over
/// the `deploy` and `dataproc` Rust plugins: the server's tests run many of it.
pub fn mixed_flow() -> String {
    MIXED_FLOW
        .replace("{deploy}", &rust_plugin("deploy").display().to_string())
        .replace("{dataproc}", &rust_plugin("dataproc").display().to_string())
}

/// Inputs of [`mixed_flow`] that take different paths: one skips the case, one has more
/// pages, one fails validation twice.
pub const MIXED_INPUTS: [&str; 3] = [
    r#"{"current": "2.0"}"#,
    r#"{"pages": 3}"#,
    r#"{"flaky_validations": 2}"#,
];

const MIXED_FLOW: &str = r#"flow: mixed.v1
plugins:
  deploy:
    wasm: {deploy}
  d:
    wasm: {dataproc}
data:
  version: "2.0"
  current: "1.0"
  rollout_ms: 300
  flaky_validations: 1
  pages: 2
  flaky: true
steps:
  - do: deploy.prepare
  - name: ready
    wait-for: deploy.checks/ready
    every: 200ms
  - name: shouldDeploy
    case: deploy.checks/should-deploy
    steps:
      - do: deploy.deploy
      - name: deployed
        wait-for: deploy.checks/deployed
        every: 600ms
      - name: validation
        retry:
          handler: deploy.should-retry
          max-attempts: 3
          backoff: { initial: 100ms, max: 200ms }
        steps:
          - do: deploy.validate
  - name: pages
    loop-until: d.last-page
    steps:
      - { name: fetch, do: d.fetch-page }
      - name: stage
        retry:
          max-attempts: 4
          backoff: { initial: 50ms, max: 100ms }
        steps:
          - do: d.transform
  - do: d.summarize
"#;

#[cfg(test)]
mod tests {
    use super::on_tmpfs;
    use std::path::Path;

    /// `/proc/mounts` is the oracle: every mount point it lists as tmpfs is seen as tmpfs, and
    /// every one on a disk file system is not.
    #[test]
    fn tmpfs_is_told_from_a_disk_as_proc_mounts_says() {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        // The last mount at a place is the one seen there.
        let last: std::collections::BTreeMap<&str, &str> = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().skip(1);
                Some((f.next()?, f.next()?))
            })
            .collect();
        let mut checked = (0, 0);
        for (point, kind) in last {
            let point = Path::new(point);
            if !point.is_dir() {
                continue;
            }
            if kind == "tmpfs" {
                assert!(on_tmpfs(point), "{} is tmpfs", point.display());
                checked.0 += 1;
            } else if ["ext4", "xfs", "btrfs"].contains(&kind) {
                assert!(!on_tmpfs(point), "{} is {kind}", point.display());
                checked.1 += 1;
            }
        }
        assert!(
            checked.1 > 0,
            "no disk file system to check against: {mounts}"
        );
    }
}
