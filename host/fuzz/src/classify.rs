//! Target `classify`: a component loaded as a plugin ([`Plugin::from_bytes`], on a runtime
//! with no compile cache) and its exports classified ([`Plugin::exports`]), then each export
//! and a made-up name looked up as every kind. Loading may fail; nothing may panic.
//!
//! Input: byte 0 chooses how the rest becomes a component. Odd: the rest is the component
//! (mutations of real ones, e.g. `plugins/rust`'s `noop.wasm`). Even: the rest drives a
//! generator that writes a WIT world exporting functions with chosen signatures, at the top and
//! in interfaces, over `step-context` and `step-error` and near misses of them (a field renamed,
//! retyped, dropped, moved or added; a case more or less), and builds a component of it with
//! `wit-component` (a dummy core module), so that most inputs reach the classifier.

use std::fmt::Write as _;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use stepflow_plugin::{Plugin, PluginOptions, Runtime, RuntimeConfig};
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

/// The process's runtime: no disk cache, no pooling (nothing is instantiated).
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            pooling: false,
            ..RuntimeConfig::default()
        })
        .expect("a plugin runtime")
    })
}

/// The fields of the real `step-context`, in order.
const CONTEXT: [(&str, &str); 7] = [
    ("run-id", "string"),
    ("%flow", "string"),
    ("step", "string"),
    ("attempt", "u32"),
    ("idempotency-key", "string"),
    ("redelivered", "bool"),
    ("data", "string"),
];

/// Scalar types a near miss may use instead.
const SCALARS: [&str; 8] = [
    "string", "u32", "bool", "u64", "s32", "char", "f32", "list<u8>",
];

/// Types a parameter or a result may have.
const TYPES: [&str; 26] = [
    "step-context",
    "string",
    "bool",
    "result<option<string>, step-error>",
    "result<bool, step-error>",
    "option<string>",
    "u32",
    "step-error",
    "result<bool, string>",
    "result<_, step-error>",
    "result",
    "list<u8>",
    "tuple<string, bool>",
    "option<bool>",
    "bad-context",
    "bad-error",
    "result<bool, bad-error>",
    "result<option<u32>, step-error>",
    "result<option<string>, bad-error>",
    "result<option<string>>",
    "result<step-context, step-error>",
    "list<step-context>",
    "option<step-context>",
    "color",
    "perm",
    "f64",
];

/// A record like `step-context`, with one near miss chosen by the input.
fn bad_context(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let mut fields: Vec<(String, String)> = CONTEXT
        .iter()
        .map(|(n, t)| ((*n).to_string(), (*t).to_string()))
        .collect();
    for _ in 0..u.int_in_range(1u8..=2)? {
        let i = u.choose_index(fields.len())?;
        match u.int_in_range(0u8..=4)? {
            0 if fields.len() > 1 => {
                fields.remove(i);
            }
            1 => fields[i].0.push_str("-x"),
            2 => fields[i].1 = (*u.choose(&SCALARS)?).to_string(),
            3 => {
                let j = u.choose_index(fields.len())?;
                fields.swap(i, j);
            }
            _ => fields.insert(i, (format!("extra{i}"), (*u.choose(&SCALARS)?).to_string())),
        }
    }
    let mut seen = std::collections::HashSet::new();
    fields.retain(|(n, _)| seen.insert(n.clone()));
    let body: Vec<String> = fields.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    Ok(format!("record bad-context {{ {} }}", body.join(", ")))
}

/// A variant like `step-error`, with one near miss chosen by the input.
fn bad_error(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let cases = match u.int_in_range(0u8..=5)? {
        0 => "retryable(string)".to_string(),
        1 => "retryable(string), fatal(string), other(string)".to_string(),
        2 => "fatal(string), retryable(string)".to_string(),
        3 => "retryable, fatal(string)".to_string(),
        4 => format!("retryable({}), fatal(string)", u.choose(&SCALARS)?),
        _ => "retryable(string), fatal2(string)".to_string(),
    };
    Ok(format!("variant bad-error {{ {cases} }}"))
}

/// One function declaration named `name`: one of the three step-function shapes, or
/// parameters and a result chosen freely (mostly after a `step-context`, as a plugin author
/// would write).
fn function(u: &mut Unstructured<'_>, name: &str) -> arbitrary::Result<String> {
    let asynchronous = if u.ratio(1u8, 64u8)? { "async " } else { "" };
    let (params, result) = match u.int_in_range(0u8..=5)? {
        0 => (
            "p0: step-context".to_string(),
            " -> result<option<string>, step-error>".to_string(),
        ),
        1 => (
            "p0: step-context".to_string(),
            " -> result<bool, step-error>".to_string(),
        ),
        2 => (
            "p0: step-context, p1: string".to_string(),
            " -> result<bool, step-error>".to_string(),
        ),
        _ => {
            let mut params = Vec::new();
            for i in 0..u.int_in_range(0u8..=3)? {
                let ty = if i == 0 && u.ratio(3u8, 4u8)? {
                    "step-context"
                } else {
                    *u.choose(&TYPES)?
                };
                params.push(format!("p{i}: {ty}"));
            }
            let result = match u.int_in_range(0u8..=3)? {
                0 => String::new(),
                _ => format!(" -> {}", u.choose(&TYPES)?),
            };
            (params.join(", "), result)
        }
    };
    Ok(format!("{name}: {asynchronous}func({params}){result};"))
}

/// The types every generated interface and world uses.
fn type_definitions(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(format!(
        "record step-context {{ {} }}\n  variant step-error {{ retryable(string), fatal(string) }}\n  {}\n  {}\n  enum color {{ red, green }}\n  flags perm {{ read, write }}\n",
        CONTEXT
            .iter()
            .map(|(n, t)| format!("{n}: {t}"))
            .collect::<Vec<_>>()
            .join(", "),
        bad_context(u)?,
        bad_error(u)?,
    ))
}

/// WIT text of a package with a world `w` that exports what the input says.
pub fn wit(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    const USE: &str = "use types.{step-context, step-error, bad-context, bad-error, color, perm};";
    let version = if u.arbitrary()? { "@1.2.3" } else { "" };
    let mut text = format!(
        "package fuzz:gen{version};\n\ninterface types {{\n  {}}}\n",
        type_definitions(u)?
    );
    let interfaces = u.int_in_range(0u8..=2)?;
    for i in 0..interfaces {
        let _ = writeln!(text, "\ninterface i{i} {{\n  {USE}");
        for f in 0..u.int_in_range(0u8..=4)? {
            let _ = writeln!(text, "  {}", function(u, &format!("f{f}"))?);
        }
        text.push_str("}\n");
    }
    let _ = writeln!(text, "\nworld w {{\n  {USE}");
    for f in 0..u.int_in_range(0u8..=5)? {
        let _ = writeln!(text, "  export {}", function(u, &format!("top{f}"))?);
    }
    for i in 0..interfaces {
        let _ = writeln!(text, "  export i{i};");
    }
    text.push_str("}\n");
    Ok(text)
}

/// A component built from the WIT text the input drives; `None` when the generator gave up.
pub fn generate(data: &[u8]) -> Option<Vec<u8>> {
    let text = wit(&mut Unstructured::new(data)).ok()?;
    let mut resolve = Resolve::default();
    let package = resolve.push_str("gen.wit", &text).ok()?;
    let world = resolve.select_world(&[package], Some("w")).ok()?;
    let mut module = dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8).ok()?;
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .ok()?
        .encode()
        .ok()
}

/// The fuzz body.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let wasm = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        match generate(rest) {
            Some(wasm) => wasm,
            None => return,
        }
    };
    classify(&wasm);
}

/// Loads `wasm` as a plugin and looks every export up as each kind.
pub fn classify(wasm: &[u8]) {
    let plugin = match Plugin::from_bytes(
        runtime(),
        "fuzz",
        wasm,
        "fuzz.wasm",
        PluginOptions::default(),
    ) {
        Ok(plugin) => plugin,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let exports = plugin.exports();
    let names = exports
        .iter()
        .map(|e| e.name.as_str())
        .chain(["top0", "i0/f0", "nope", "", "/", "i0/"]);
    for name in names {
        for result in [
            plugin.action(name),
            plugin.condition(name),
            plugin.error_handler(name),
        ] {
            match result {
                Ok(function) => {
                    let _ = (function.reference(), function.kind());
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
    for export in &exports {
        if let Err(why) = &export.kind {
            assert!(
                !why.is_empty(),
                "`{}` is not a step function, and says why",
                export.name
            );
        }
    }
}
