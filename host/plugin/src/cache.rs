//! The on-disk cache of compiled components, so a restart does not recompile.
//!
//! An entry is keyed by the SHA-256 of the component's bytes and the engine's compatibility hash
//! (wasmtime version and every setting that changes the machine code). It is written atomically
//! (temporary file, then rename) and carries the SHA-256 of its own contents, checked before the
//! bytes are handed to wasmtime: a corrupt, truncated or foreign entry is rebuilt, never trusted.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    max_bytes: u64,
}

/// How a component was obtained, for callers that report load times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Compiled now (and stored in the cache, if there is one).
    Compiled,
    /// Read from the on-disk cache.
    Cache,
}

const MAGIC: &[u8; 8] = b"SFCACHE1";

/// The cache's size before the least recently used entries are removed.
const DEFAULT_MAX_BYTES: u64 = 2 << 30;

impl Cache {
    pub fn new(dir: PathBuf) -> Self {
        Cache {
            dir,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Loads `wasm` from the cache, or compiles it with `compile` and stores the result.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<(Component, LoadedFrom)> {
        let path = self.entry_path(engine, wasm);
        if let Some(component) = read_entry(engine, &path) {
            // Mark it used, so pruning keeps what is in use (best effort).
            let _ = std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok((component, LoadedFrom::Cache));
        }
        let component = compile()?;
        prune(&self.dir, self.max_bytes);
        if let Err(e) = write_entry(&path, &component) {
            tracing::warn!(path = %path.display(), "could not store the compiled component: {e}");
        }
        Ok((component, LoadedFrom::Compiled))
    }

    fn entry_path(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let content = Sha256::digest(wasm);
        self.dir.join(format!(
            "{}-{:016x}.cwasm",
            hex(&content[..16]),
            engine_hash.finish()
        ))
    }
}

// The one unsafe call of the workspace: deserialising a compiled artifact (see SAFETY below).
#[allow(unsafe_code)]
fn read_entry(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = std::fs::read(path).ok()?;
    let body = verified_body(&bytes);
    if body.is_none() {
        tracing::warn!(path = %path.display(), "ignoring a corrupt cache entry; recompiling");
        return None;
    }
    // SAFETY: the bytes were produced by `Component::serialize` of this crate (the checksum
    // written with them matches), and wasmtime itself refuses an artifact from another version
    // or configuration.
    match unsafe { Component::deserialize(engine, body?) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring a stale cache entry ({e}); recompiling");
            None
        }
    }
}

/// `MAGIC | sha256(body) | body` -> `body`, if the checksum holds.
fn verified_body(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC)?;
    if rest.len() < 32 {
        return None;
    }
    let (sum, body) = rest.split_at(32);
    (Sha256::digest(body).as_slice() == sum).then_some(body)
}

fn write_entry(path: &Path, component: &Component) -> std::io::Result<()> {
    let body = component
        .serialize()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    let mut out = Vec::with_capacity(body.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)
}

/// Removes the least recently used entries until the cache holds less than `max_bytes`
/// (a rebuilt Python or JavaScript plugin adds tens of MB each time). Best effort: an entry
/// another process is using stays valid for it, since it was read into memory.
fn prune(dir: &Path, max_bytes: u64) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = read
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total < max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_removes_the_least_recently_used_entries_first() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (name, age) in [
            ("a.cwasm", 3),
            ("b.cwasm", 1),
            ("c.cwasm", 2),
            ("keep.txt", 9),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(old - std::time::Duration::from_secs(age * 60))
                .unwrap();
        }
        prune(dir.path(), 150);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["b.cwasm", "keep.txt"]);
    }

    #[test]
    fn a_body_with_a_wrong_checksum_is_refused() {
        let mut good = MAGIC.to_vec();
        good.extend_from_slice(&Sha256::digest(b"body"));
        good.extend_from_slice(b"body");
        assert_eq!(verified_body(&good), Some(&b"body"[..]));
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(verified_body(&bad), None);
        assert_eq!(verified_body(&good[..20]), None);
        assert_eq!(verified_body(b"something else entirely"), None);
    }
}
