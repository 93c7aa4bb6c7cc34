//! `stepflow plugin build`: builds a plugin project with its language's build kit, installed
//! once in the shared tools directory, showing progress and how long it took.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::files;
use crate::cli::PluginLanguage;
use crate::error::Exit;
use crate::output;
use crate::progress::human_ms;

/// A plugin project found on disk.
pub struct Project {
    pub dir: PathBuf,
    pub language: PluginLanguage,
    /// The world in `wit/world.wit`: the plugin's name and its component's file name.
    pub name: String,
}

impl Project {
    /// The project in `dir`, its language told by its files.
    pub fn find(given: &Path) -> Result<Project, Exit> {
        let not_a_project = |what: &str| {
            Exit::usage(format!(
                "{} is not a plugin project: {what}; create one with \
                 `stepflow plugin new --lang rust|python|javascript|c NAME`",
                given.display()
            ))
        };
        // Absolute, so the build may run anywhere.
        let dir = std::fs::canonicalize(given)
            .ok()
            .filter(|d| d.is_dir())
            .ok_or_else(|| not_a_project("there is no such directory"))?;
        let has = |file: &str| dir.join(file).is_file();
        let language = if has("Cargo.toml") {
            PluginLanguage::Rust
        } else if has("app.py") {
            PluginLanguage::Python
        } else if has("index.js") {
            PluginLanguage::Javascript
        } else if has("plugin.c") {
            PluginLanguage::C
        } else {
            return Err(not_a_project(
                "it has no Cargo.toml, app.py, index.js or plugin.c",
            ));
        };
        let world = dir.join("wit").join("world.wit");
        let text = std::fs::read_to_string(&world)
            .map_err(|e| not_a_project(&format!("cannot read {}: {e}", world.display())))?;
        let name = world_name(&text).ok_or_else(|| {
            Exit::usage(format!(
                "{}: no `world NAME {{` found; the world names the plugin",
                world.display()
            ))
        })?;
        Ok(Project {
            dir,
            language,
            name,
        })
    }

    /// Where the build puts the component.
    pub fn wasm(&self) -> PathBuf {
        self.dir.join("target").join(format!("{}.wasm", self.name))
    }
}

/// The first `world NAME` of a WIT file.
fn world_name(wit: &str) -> Option<String> {
    wit.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("world")?;
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        (rest.starts_with(char::is_whitespace) && !name.is_empty()).then_some(name)
    })
}

/// `stepflow plugin build [DIR]`.
pub fn build(dir: &Path, json: bool) -> Result<Project, Exit> {
    let project = Project::find(dir)?;
    let tools = stepflow_engine::default_tools_dir().ok_or_else(|| {
        Exit::usage("no directory for the plugin toolchains: set STEPFLOW_TOOLS_DIR (or HOME)")
    })?;
    let kit = install_kit(&tools, project.language)?;
    let first = !kit.join(".built").exists();
    let started = Instant::now();
    let shown = Shown::start(&project, first, &tools, json);
    let result = run_kit(&kit, &tools, &project, &shown);
    let took = started.elapsed();
    shown.finish();
    result?;
    if first {
        // Only a marker for the next build's message; failing to write it changes nothing else.
        let _ = std::fs::write(kit.join(".built"), b"");
    }
    if !json {
        output::line(format!(
            "built {} in {}",
            project.wasm().display(),
            human_ms(u64::try_from(took.as_millis()).unwrap_or(u64::MAX))
        ));
    }
    Ok(project)
}

/// Writes the language's build kit under the tools directory (again only when this binary's
/// kit differs), so every project shares one installed toolchain.
fn install_kit(tools: &Path, language: PluginLanguage) -> Result<PathBuf, Exit> {
    let kit = tools.join("kits").join(language.to_string());
    for file in files::kit(language) {
        let path = kit.join(file.path);
        if std::fs::read(&path).is_ok_and(|bytes| bytes == file.text.as_bytes()) {
            continue;
        }
        files::write(&path, file.text, file.executable).map_err(|e| {
            Exit::usage(format!(
                "cannot write the {language} build kit at {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(kit)
}

/// Runs `kit/build --project DIR`, its output shown as progress and kept for a failure.
fn run_kit(kit: &Path, tools: &Path, project: &Project, shown: &Shown) -> Result<(), Exit> {
    let script = kit.join("build");
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--project")
        .arg(&project.dir)
        .current_dir(&project.dir)
        .env("STEPFLOW_TOOLS_DIR", tools)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Exit::usage(format!("cannot run {}: {e}", script.display())))?;
    // Both streams, line by line: the latest line is the progress message.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(stream) = child.stdout.take() {
        readers.push(forward(stream, tx.clone()));
    }
    if let Some(stream) = child.stderr.take() {
        readers.push(forward(stream, tx.clone()));
    }
    drop(tx);
    let mut lines = Vec::new();
    for line in rx {
        shown.message(&line);
        lines.push(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(|e| Exit::usage(format!("cannot wait for {}: {e}", script.display())))?;
    if status.success() && project.wasm().is_file() {
        return Ok(());
    }
    for line in &lines {
        eprintln!("{line}");
    }
    let why = if status.success() {
        format!("it did not write {}", project.wasm().display())
    } else {
        format!("it ended with {status}; its output is above")
    };
    Err(Exit::usage(format!(
        "the {} build of `{}` failed: {why}",
        project.language, project.name
    )))
}

/// Sends each line of `stream` to `tx` until it ends.
fn forward(
    stream: impl std::io::Read + Send + 'static,
    tx: std::sync::mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    })
}

/// What a person sees while a build runs: a spinner with the elapsed time and the tool's latest
/// line on a terminal, one line before and after otherwise, nothing with `--json`.
struct Shown {
    bar: Option<ProgressBar>,
}

impl Shown {
    fn start(project: &Project, first: bool, tools: &Path, json: bool) -> Shown {
        let what = format!(
            "building the {} plugin `{}`",
            project.language, project.name
        );
        let note = if first {
            format!(
                " (the first {} build installs its pinned toolchain into {}: {})",
                project.language,
                tools.display(),
                first_build_time(project.language)
            )
        } else {
            String::new()
        };
        if json {
            return Shown { bar: None };
        }
        if !std::io::stderr().is_terminal() {
            eprintln!("{what}{note}");
            return Shown { bar: None };
        }
        if first {
            eprintln!("{what}{note}");
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(what);
        bar.enable_steady_tick(Duration::from_millis(120));
        Shown { bar: Some(bar) }
    }

    fn message(&self, line: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(line.trim().to_string());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How long the first build of a language takes on a small machine, measured on 2 cores.
fn first_build_time(language: PluginLanguage) -> &'static str {
    match language {
        PluginLanguage::Rust => "about a minute",
        PluginLanguage::Python => "about a minute",
        PluginLanguage::Javascript => "about a minute",
        PluginLanguage::C => "5 to 10 minutes, it compiles wit-bindgen and wasm-tools",
    }
}

#[cfg(test)]
mod tests {
    use super::world_name;

    #[test]
    fn the_world_is_found_past_comments_and_packages() {
        let wit = "// world notme\npackage my-org:x;\n\n/// docs\nworld fetch-orders {\n}\n";
        assert_eq!(world_name(wit).as_deref(), Some("fetch-orders"));
        assert_eq!(world_name("worldly {\n").as_deref(), None);
        assert_eq!(world_name("package a:b;\n").as_deref(), None);
    }
}
