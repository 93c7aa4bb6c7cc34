//! No input makes the parser panic: mutated and truncated example files, random text, deep
//! nesting and alias bombs all come back as `Ok` or a located `Err`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use stepflow_flowfile::{Function, FunctionKind, Functions, parse};
use stepflow_model::{
    Action, BoxFuture, Condition, ErrorHandler, StepContext, StepError, StepFlow, StepResult,
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn seeds() -> Vec<String> {
    let mut seeds: Vec<String> = ["quickstart.yaml", "deploy.yaml", "data-processing.yaml"]
        .iter()
        .map(|name| std::fs::read_to_string(examples().join(name)).unwrap())
        .collect();
    seeds.push(
        "flow: f\nplugins:\n  p: { wasm: x, env: [A], dirs: [{ host: ., guest: /w, writable: true }], memory: 1MiB, timeout: 1s, fuel: 9, max-output: 1KB, reuse-instances: true }\ndata: &d { a: [1, 2], b: *d }\nsteps:\n  - { name: g, steps: [{ name: r, retry: { handler: p.h, max-attempts: 2, backoff: { initial: 1s, max: 2s, multiplier: 3, jitter: false } }, steps: [{ do: p.a }] }] }\n"
            .to_string(),
    );
    // The items that fan out, nested in each other, and their neighbours' names.
    seeds.push(
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/files/fan-out.yaml"),
        )
        .unwrap(),
    );
    seeds.push(
        "flow: f\nplugins:\n  p: { wasm: x }\ndata: { a: [1, 2], b: { c: [[3]] } }\nsteps:\n  - { name: e, for-each: /a, results: /r, concurrency: 2, steps: [{ name: q, parallel: [{ name: x, steps: [{ do: p.a }] }, { name: y, steps: [{ name: i, for-each: '/b/c~10', results: /s, steps: [{ do: p.b }] }] }] }] }\n  - { name: e#x, do: p.c }\n  - { name: w, for-each: '', results: /t, steps: [{ do: p.d }] }\n"
            .to_string(),
    );
    seeds
}

/// Accepts every reference, so parsed files also go through `to_steps` and the model's build.
struct Anything;

impl Action for Anything {
    fn run(&self, _: StepContext) -> BoxFuture<'static, StepResult<Option<serde_json::Value>>> {
        Box::pin(async { Ok(None) })
    }
}
impl Condition for Anything {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(true) })
    }
}
impl ErrorHandler for Anything {
    fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(true) })
    }
}

impl Functions for Anything {
    fn resolve(&self, _: &str, _: &str, kind: FunctionKind) -> Result<Function, String> {
        Ok(match kind {
            FunctionKind::Action => Function::Action(Arc::new(Anything)),
            FunctionKind::Condition => Function::Condition(Arc::new(Anything)),
            FunctionKind::ErrorHandler => Function::ErrorHandler(Arc::new(Anything)),
        })
    }
}

/// Parses, and when that works exercises everything else a parsed file offers.
fn exercise(text: &str) {
    let path = Path::new("examples/fuzz.yaml");
    match parse(text, path) {
        Ok(file) => {
            let _ = file.references();
            // Every function resolves, so a file the parser accepted must build: an error here
            // would reach the user with no position in the file.
            let steps = file
                .to_steps(&Anything)
                .unwrap_or_else(|e| panic!("a parsed file does not build its steps: {e}\n{text}"));
            if let Err(e) = StepFlow::new(steps) {
                panic!("a parsed file does not compile: {e}\n{text}");
            }
        }
        Err(d) => {
            assert_eq!(d.file, path);
            assert!(!d.message.is_empty());
            // A position is always inside the text (or 0:0 for the whole file).
            let lines = text.split('\n').count().max(1);
            assert!(d.line <= lines + 1, "line {} of {lines}: {d}", d.line);
        }
    }
}

/// A char boundary at or below `at`.
fn floor(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(usize),
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let junk = prop_oneof![
        "[:\\-\\[\\]{}&*!|>'\"%@`#, \n\t~?.0-9a-z/]{1,6}",
        Just("\n  - ".to_string()),
        Just(": ".to_string()),
        Just("steps:".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        Just("\u{feff}".to_string()),
        Just("é😀".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), junk.clone()).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), junk).prop_map(|(a, s)| Mutation::Replace(a, s)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let len = text.len().max(1);
    match m {
        Mutation::Truncate(at) => text[..floor(text, at % len)].to_string(),
        Mutation::Delete(at, n) => {
            let from = floor(text, at % len);
            let to = floor(text, from + n);
            format!("{}{}", &text[..from], &text[to..])
        }
        Mutation::Insert(at, s) => {
            let at = floor(text, at % len);
            format!("{}{s}{}", &text[..at], &text[at..])
        }
        Mutation::Replace(at, s) => {
            let from = floor(text, at % len);
            let to = floor(text, from + s.len());
            format!("{}{s}{}", &text[..from], &text[to..])
        }
        Mutation::DuplicateLine(i) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let i = i % lines.len();
                lines.insert(i, lines[i]);
            }
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let n = lines.len();
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_panic(
        seed in 0usize..6,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut text = seeds()[seed].clone();
        for m in &mutations {
            text = apply(&text, m);
        }
        exercise(&text);
    }

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        exercise(&text);
    }

    #[test]
    fn yaml_like_garbage_never_panics(text in "[a-z:\\-\\[\\]{}&*!|>'\"%@`#, \n\t~?.0-9]{0,200}") {
        exercise(&text);
        exercise(&format!("flow: f\nsteps:\n{text}"));
    }
}

#[test]
fn every_truncation_of_every_example_is_handled() {
    for seed in seeds() {
        for at in 0..=seed.len() {
            if seed.is_char_boundary(at) {
                exercise(&seed[..at]);
            }
        }
    }
}

fn nested_flow(levels: usize) -> String {
    let mut text = String::from("flow: f\nplugins:\n  p: { wasm: x }\nsteps: ");
    for i in 0..levels {
        text.push_str(&format!("[{{ name: g{i}, steps: "));
    }
    text.push_str("[]");
    for _ in 0..levels {
        text.push_str("}]");
    }
    text
}

fn nested_blocks(levels: usize) -> String {
    let mut text = String::from("flow: f\nplugins:\n  p: { wasm: x }\nsteps:\n");
    for depth in 0..levels {
        let indent = "  ".repeat(depth * 2 + 1);
        text.push_str(&format!("{indent}- name: g{depth}\n{indent}  steps:\n"));
    }
    text
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    // Run where the stack is small (256 KiB): the parser brings its own.
    let outcome = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(|| {
            let d = parse(&nested_flow(5000), Path::new("f.yaml")).unwrap_err();
            assert_eq!(d.line, 4, "{d}");
            assert!(d.message.contains("too large or too complex"), "{d}");
            assert!(d.hint.unwrap_or_default().contains("nests too deeply"));

            let d = parse(&nested_blocks(2000), Path::new("f.yaml")).unwrap_err();
            assert!(d.line > 4, "{d}");
            assert!(d.message.contains("too large or too complex"), "{d}");

            let deep_data = format!(
                "flow: f\ndata: {}1{}\nsteps: []\n",
                "[".repeat(5000),
                "]".repeat(5000)
            );
            let d = parse(&deep_data, Path::new("f.yaml")).unwrap_err();
            assert_eq!(d.line, 2, "{d}");

            // An anchor deep down, replayed deep down.
            let deep = format!("{}&a 1{}", "[".repeat(60), "]".repeat(60));
            let replay = format!("{}*a{}", "[".repeat(60), "]".repeat(60));
            let aliased = format!("flow: f\ndata: [{deep}, {replay}]\nsteps: []\n");
            let _ = parse(&aliased, Path::new("f.yaml"));
        })
        .unwrap()
        .join();
    assert!(outcome.is_ok());
}

#[test]
fn moderate_nesting_is_fine() {
    for levels in [12, 30] {
        let text = nested_flow(levels).replacen("[]", "[{ do: p.a }]", 1);
        let file = parse(&text, Path::new("f.yaml")).unwrap();
        let steps = file.to_steps(&Anything).unwrap_or_else(|e| panic!("{e}"));
        assert!(StepFlow::new(steps).is_ok());
    }
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("flow: f\ndata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        text.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("steps: []\n");
    let d = parse(&text, Path::new("f.yaml")).unwrap_err();
    assert!(d.line >= 3, "{d}");
}

#[test]
fn huge_numbers_are_errors() {
    for (text, line) in [
        (
            "flow: f\nplugins:\n  p: { wasm: x, memory: 99999999999999999999GiB }\nsteps: []\n",
            3,
        ),
        (
            "flow: f\nplugins:\n  p: { wasm: x, fuel: 99999999999999999999999 }\nsteps: []\n",
            3,
        ),
        (
            "flow: f\nplugins:\n  p: { wasm: x, timeout: 99999999999999999999d }\nsteps: []\n",
            3,
        ),
        (
            "flow: f\nplugins:\n  p: { wasm: x }\nsteps:\n  - { name: r, retry: { max-attempts: 99999999999 }, steps: [] }\n",
            5,
        ),
        (
            "flow: f\nplugins:\n  p: { wasm: x }\nsteps:\n  - { name: e, for-each: /a, results: /r, concurrency: 99999999999999999999999, steps: [{ do: p.a }] }\n",
            5,
        ),
    ] {
        let d = parse(text, Path::new("f.yaml")).unwrap_err();
        assert_eq!(d.line, line, "{d}");
    }
}
