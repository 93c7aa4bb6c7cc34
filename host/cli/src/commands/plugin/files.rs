//! The files built into the binary for plugin projects: what `stepflow plugin new` writes (the
//! shared `plugins/template`, the language's `plugins/<language>/template` and the
//! `stepflow:plugin` WIT package of this version) and each language's build kit (the
//! repository's own `plugins/<language>/build` and what it needs), so a project outside the
//! repository is built by the same script as the plugins inside it.

use std::path::Path;

use crate::cli::PluginLanguage;

/// One file: its path inside the project (or kit), its text, and whether it is a program.
pub struct File {
    pub path: &'static str,
    pub text: &'static str,
    pub executable: bool,
}

macro_rules! file {
    ($path:literal, $source:literal) => {
        File {
            path: $path,
            text: include_str!(concat!("../../../../../", $source)),
            executable: false,
        }
    };
    ($path:literal, $source:literal, executable) => {
        File {
            path: $path,
            text: include_str!(concat!("../../../../../", $source)),
            executable: true,
        }
    };
}

/// What every new project has, whatever its language. The word `template` in these files is
/// the plugin's name.
const COMMON: &[File] = &[
    file!("wit/world.wit", "plugins/template/wit/world.wit"),
    file!("wit/deps/stepflow-plugin/plugin.wit", "wit/plugin.wit"),
    file!("flow.yaml", "plugins/template/flow.yaml"),
    file!("build", "plugins/template/build", executable),
    file!(".gitignore", "plugins/template/gitignore"),
];

const RUST: &[File] = &[
    file!("Cargo.toml", "plugins/rust/template/Cargo.toml"),
    file!("src/lib.rs", "plugins/rust/template/src/lib.rs"),
];

const PYTHON: &[File] = &[file!("app.py", "plugins/python/template/app.py")];

const JAVASCRIPT: &[File] = &[file!("index.js", "plugins/javascript/template/index.js")];

/// The WASI WIT packages a Python or JavaScript world needs once it imports `wasi:http` (a Rust
/// plugin gets them from the `wasi` crate), one package per file as `wit/deps` wants them:
/// there from the start, so calling HTTP is an import
/// in the world and a grant in the flow, nothing to fetch.
const WASI_WIT: &[File] = &[
    file!("wit/deps/wasi-cli.wit", "plugins/wit-deps/wasi/cli.wit"),
    file!(
        "wit/deps/wasi-clocks.wit",
        "plugins/wit-deps/wasi/clocks.wit"
    ),
    file!(
        "wit/deps/wasi-filesystem.wit",
        "plugins/wit-deps/wasi/filesystem.wit"
    ),
    file!("wit/deps/wasi-http.wit", "plugins/wit-deps/wasi/http.wit"),
    file!("wit/deps/wasi-io.wit", "plugins/wit-deps/wasi/io.wit"),
    file!(
        "wit/deps/wasi-random.wit",
        "plugins/wit-deps/wasi/random.wit"
    ),
    file!(
        "wit/deps/wasi-sockets.wit",
        "plugins/wit-deps/wasi/sockets.wit"
    ),
];

const C: &[File] = &[
    file!("plugin.c", "plugins/c/template/plugin.c"),
    file!("stepflow/step.h", "plugins/c/common/step.h"),
    file!("stepflow/step.c", "plugins/c/common/step.c"),
    file!("stepflow/json.h", "plugins/c/common/json.h"),
    file!("stepflow/json.c", "plugins/c/common/json.c"),
];

/// The files of a new project in `language`.
pub fn project(language: PluginLanguage) -> impl Iterator<Item = &'static File> {
    let own = match language {
        PluginLanguage::Rust => RUST,
        PluginLanguage::Python => PYTHON,
        PluginLanguage::Javascript => JAVASCRIPT,
        PluginLanguage::C => C,
    };
    let wasi: &[File] = match language {
        PluginLanguage::Python | PluginLanguage::Javascript => WASI_WIT,
        PluginLanguage::Rust | PluginLanguage::C => &[],
    };
    COMMON.iter().chain(own).chain(wasi)
}

/// The build kit of `language`: `build` (run as `build --project DIR`) and its companions.
pub fn kit(language: PluginLanguage) -> &'static [File] {
    match language {
        PluginLanguage::Rust => &[file!("build", "plugins/rust/build", executable)],
        PluginLanguage::Python => &[file!("build", "plugins/python/build", executable)],
        PluginLanguage::Javascript => &[
            file!("build", "plugins/javascript/build", executable),
            file!("package.json", "plugins/javascript/package.json"),
            file!("package-lock.json", "plugins/javascript/package-lock.json"),
        ],
        PluginLanguage::C => &[
            file!("build", "plugins/c/build", executable),
            file!(
                "tools/adapter/Cargo.toml",
                "plugins/c/tools/adapter/Cargo.toml"
            ),
            file!(
                "tools/adapter/Cargo.lock",
                "plugins/c/tools/adapter/Cargo.lock"
            ),
            file!(
                "tools/adapter/src/main.rs",
                "plugins/c/tools/adapter/src/main.rs"
            ),
        ],
    }
}

/// Writes `text` to `path` (creating its folder; a program gets mode 0755), aside and then
/// renamed, so a build running at the same time never sees half a file.
pub fn write(path: &Path, text: &str, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    if executable {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, path)
}
