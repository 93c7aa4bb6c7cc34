//! `stepflow plugin new`: writes a standalone plugin project.

use std::path::{Path, PathBuf};

use super::files::{self, File};
use crate::cli::PluginLanguage;
use crate::error::Exit;
use crate::output;

/// Words WIT reserves: a world cannot be called by one of them.
const WIT_KEYWORDS: &[&str] = &[
    "as",
    "async",
    "bool",
    "borrow",
    "char",
    "constructor",
    "enum",
    "export",
    "f32",
    "f64",
    "flags",
    "from",
    "func",
    "future",
    "import",
    "include",
    "interface",
    "list",
    "option",
    "own",
    "package",
    "record",
    "resource",
    "result",
    "s16",
    "s32",
    "s64",
    "s8",
    "static",
    "stream",
    "string",
    "tuple",
    "type",
    "u16",
    "u32",
    "u64",
    "u8",
    "use",
    "variant",
    "with",
    "world",
];

/// `stepflow plugin new --lang LANG NAME [DIR]`.
pub fn new(
    language: PluginLanguage,
    name: &str,
    dir: Option<&Path>,
    json: bool,
) -> Result<(), Exit> {
    check_name(name)?;
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(Exit::usage(format!(
            "{} already exists and is not empty; give another directory: \
             `stepflow plugin new --lang {language} {name} DIR`",
            dir.display()
        )));
    }
    for file in files::project(language) {
        write(&dir, file, name)?;
    }
    if json {
        output::line(serde_json::json!({
            "plugin": name,
            "language": language.to_string(),
            "dir": dir.display().to_string(),
            "wasm": dir.join("target").join(format!("{name}.wasm")).display().to_string(),
        }));
    } else {
        let shown = dir.display();
        output::line(format!(
            "created the {language} plugin `{name}` in {shown}/"
        ));
        output::line(format!(
            "  stepflow plugin test {shown}    # build it and run flow.yaml (the first build installs the toolchain)"
        ));
        output::line(format!(
            "  then edit {shown}/wit/world.wit and {}, see flow.yaml for how steps use them",
            source_file(language)
        ));
    }
    Ok(())
}

/// The file a person edits first.
fn source_file(language: PluginLanguage) -> &'static str {
    match language {
        PluginLanguage::Rust => "src/lib.rs",
        PluginLanguage::Python => "app.py",
        PluginLanguage::Javascript => "index.js",
        PluginLanguage::C => "plugin.c",
    }
}

/// A plugin name is a WIT world name, a flow-file plugin name and a file name at once.
fn check_name(name: &str) -> Result<(), Exit> {
    let words_ok = !name.is_empty()
        && name.split('-').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !words_ok {
        return Err(Exit::usage(format!(
            "the plugin name `{}` is not kebab-case: lower-case words of letters and digits, \
             each starting with a letter, joined by `-` (e.g. `payments` or `fetch-orders`)",
            name.escape_debug()
        )));
    }
    if WIT_KEYWORDS.contains(&name) {
        return Err(Exit::usage(format!(
            "the plugin name `{name}` is a WIT keyword; choose another (e.g. `my-{name}`)"
        )));
    }
    Ok(())
}

/// Writes `file` under `dir` with the plugin's name in place of `template`.
fn write(dir: &Path, file: &File, name: &str) -> Result<(), Exit> {
    let path = dir.join(file.path);
    files::write(&path, &file.text.replace("template", name), file.executable)
        .map_err(|e| Exit::usage(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_kebab_case_words_that_start_with_a_letter() {
        for good in ["hello", "fetch-orders", "v2", "a1-b2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Hello",
            "fetch_orders",
            "-x",
            "x-",
            "x--y",
            "2fa",
            "x-2",
            "world",
            "a.b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
