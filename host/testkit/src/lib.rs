//! Builds the example plugins for stepflow's tests, benchmarks and examples.
//!
//! The Rust plugins under `plugins/rust` are a workspace of their own that targets
//! `wasm32-wasip2`. [`rust_plugin`] adds that target with rustup when it is missing, builds the
//! workspace once per process (cargo itself serialises concurrent builds and skips up-to-date
//! ones) into `<target>/wasm-plugins`, and returns the path of one component.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
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

/// Builds `plugins/rust` for wasm32-wasip2; returns the directory holding the `.wasm` files.
pub fn build_rust_plugins() -> Result<PathBuf, String> {
    ensure_wasm_target()?;
    let out = target_dir().join("wasm-plugins");
    let manifest = repo_root().join("plugins/rust/Cargo.toml");
    let status = Command::new(cargo())
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &out)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the Rust plugins failed ({status}); run `cargo build --release --target wasm32-wasip2 --manifest-path {}` to see why",
            manifest.display()
        ));
    }
    Ok(out.join("wasm32-wasip2").join("release"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Adds the wasm32-wasip2 target with rustup when it is not installed.
pub fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to add the wasm32-wasip2 target: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("`rustup target add wasm32-wasip2` failed".into())
    }
}
