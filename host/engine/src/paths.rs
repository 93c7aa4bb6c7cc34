//! Where stepflow keeps its files when nobody says: the run database and the compile cache.
//!
//! The libraries take explicit paths; these defaults follow the XDG base directory spec, read
//! through one helper so the database and the cache treat `XDG_*` the same way.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The run database when none is given: `$STEPFLOW_DB`, else
/// `$XDG_DATA_HOME/stepflow/stepflow.db`, else `~/.local/share/stepflow/stepflow.db` (and
/// `stepflow.db` in the current directory when not even `HOME` is set).
pub fn default_db_path() -> PathBuf {
    db_path_from(&|name| std::env::var_os(name))
}

/// Where stepflow keeps what belongs with this user's runs but is not a database file (a
/// PostgreSQL database's API token): `$XDG_DATA_HOME/stepflow`, else `~/.local/share/stepflow`
/// (the current directory when not even `HOME` is set); `$STEPFLOW_DB` does not move it.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(&|name| std::env::var_os(name))
}

/// The compile cache for plugins when none is given: `$STEPFLOW_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/stepflow/components`, else `~/.cache/stepflow/components`; `None` (no disk
/// cache) when not even `HOME` is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(&|name| std::env::var_os(name))
}

/// Where plugin toolchains (componentize-py, componentize-js, zig, ...) are installed once and
/// shared by every plugin project: `$STEPFLOW_TOOLS_DIR`, else `$XDG_CACHE_HOME/stepflow/tools`,
/// else `~/.cache/stepflow/tools`; `None` when not even `HOME` is set.
pub fn default_tools_dir() -> Option<PathBuf> {
    tools_dir_from(&|name| std::env::var_os(name))
}

type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn tools_dir_from(env: Env<'_>) -> Option<PathBuf> {
    cache_subdir(env, "STEPFLOW_TOOLS_DIR", "tools")
}

fn db_path_from(env: Env<'_>) -> PathBuf {
    if let Some(db) = set(env, "STEPFLOW_DB") {
        return PathBuf::from(db);
    }
    data_dir_from(env).join("stepflow.db")
}

fn data_dir_from(env: Env<'_>) -> PathBuf {
    match base_dir(env, "XDG_DATA_HOME", Path::new(".local/share")) {
        Some(base) => base.join("stepflow"),
        None => PathBuf::new(),
    }
}

fn cache_dir_from(env: Env<'_>) -> Option<PathBuf> {
    cache_subdir(env, "STEPFLOW_CACHE_DIR", "components")
}

/// `$var`, else `<XDG cache>/stepflow/<sub>`.
fn cache_subdir(env: Env<'_>, var: &str, sub: &str) -> Option<PathBuf> {
    if let Some(dir) = set(env, var) {
        return Some(PathBuf::from(dir));
    }
    base_dir(env, "XDG_CACHE_HOME", Path::new(".cache")).map(|base| base.join("stepflow").join(sub))
}

/// An XDG base directory: `$VAR` when it is set to an absolute path (the spec says relative
/// values are invalid and must be ignored), else `$HOME/<fallback>`.
fn base_dir(env: Env<'_>, var: &str, fallback: &Path) -> Option<PathBuf> {
    match set(env, var).map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => Some(dir),
        _ => set(env, "HOME").map(|home| PathBuf::from(home).join(fallback)),
    }
}

/// A variable that is set and not empty.
fn set(env: Env<'_>, name: &str) -> Option<OsString> {
    env(name).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> HashMap<String, OsString> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect()
    }

    fn db(vars: &[(&str, &str)]) -> PathBuf {
        let env = env_of(vars);
        db_path_from(&|name| env.get(name).cloned())
    }

    fn cache(vars: &[(&str, &str)]) -> Option<PathBuf> {
        let env = env_of(vars);
        cache_dir_from(&|name| env.get(name).cloned())
    }

    #[test]
    fn the_tools_prefer_stepflow_tools_dir_then_xdg_then_home() {
        let tools = |vars: &[(&str, &str)]| {
            let env = env_of(vars);
            tools_dir_from(&|name| env.get(name).cloned())
        };
        let all = [
            ("STEPFLOW_TOOLS_DIR", "/t"),
            ("XDG_CACHE_HOME", "/c"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(tools(&all), Some(PathBuf::from("/t")));
        assert_eq!(tools(&all[1..]), Some(PathBuf::from("/c/stepflow/tools")));
        assert_eq!(
            tools(&all[2..]),
            Some(PathBuf::from("/home/u/.cache/stepflow/tools"))
        );
        assert_eq!(tools(&[]), None);
    }

    #[test]
    fn the_database_prefers_stepflow_db_then_xdg_then_home() {
        let all = [
            ("STEPFLOW_DB", "/tmp/x.db"),
            ("XDG_DATA_HOME", "/data"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(db(&all), PathBuf::from("/tmp/x.db"));
        assert_eq!(db(&all[1..]), PathBuf::from("/data/stepflow/stepflow.db"));
        assert_eq!(
            db(&all[2..]),
            PathBuf::from("/home/u/.local/share/stepflow/stepflow.db")
        );
        assert_eq!(db(&[]), PathBuf::from("stepflow.db"));
    }

    #[test]
    fn the_cache_prefers_stepflow_cache_dir_then_xdg_then_home() {
        let all = [
            ("STEPFLOW_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(cache(&all), Some(PathBuf::from("/c")));
        assert_eq!(
            cache(&all[1..]),
            Some(PathBuf::from("/xdg/stepflow/components"))
        );
        assert_eq!(
            cache(&all[2..]),
            Some(PathBuf::from("/home/u/.cache/stepflow/components"))
        );
        assert_eq!(cache(&[]), None);
    }

    #[test]
    fn empty_and_relative_xdg_values_are_ignored_by_both() {
        let vars = [
            ("STEPFLOW_DB", ""),
            ("STEPFLOW_CACHE_DIR", ""),
            ("XDG_DATA_HOME", "rel"),
            ("XDG_CACHE_HOME", "rel"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            db(&vars),
            PathBuf::from("/h/.local/share/stepflow/stepflow.db")
        );
        assert_eq!(
            cache(&vars),
            Some(PathBuf::from("/h/.cache/stepflow/components"))
        );
    }
}
