//! Every kind of mistake in a flow file: each test asserts the exact line, column and message,
//! and what the hint says.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stepflow_flowfile::{Diagnostic, Function, FunctionKind, Functions, parse};
use stepflow_model::{BoxFuture, Condition, StepContext, StepResult};

const FILE: &str = "flows/f.yaml";

/// A valid head: a flow name and one plugin `deploy`; tests append their `steps`.
const HEAD: &str = "flow: f.v1\nplugins:\n  deploy: { wasm: deploy.wasm }\n";

fn error(text: &str) -> Diagnostic {
    match parse(text, Path::new(FILE)) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts position and message exactly, and that the hint contains `hint`.
#[track_caller]
fn assert_error(d: &Diagnostic, line: usize, column: usize, message: &str, hint: &str) {
    assert_eq!(d.file, PathBuf::from(FILE), "{d}");
    assert_eq!((d.line, d.column), (line, column), "{d}");
    assert_eq!(d.message, message, "{d}");
    let got = d.hint.as_deref().unwrap_or("");
    assert!(got.contains(hint), "hint {got:?} should contain {hint:?}");
}

#[test]
fn display_is_file_line_column_message_then_hint() {
    let d = error("flow: a\nstesp: []\n");
    assert_eq!(
        d.to_string(),
        "flows/f.yaml:2:1: unknown key `stesp`\n  hint: did you mean `steps`?"
    );
}

#[test]
fn unknown_key_hints_the_nearest_valid_key() {
    let d = error(&format!("{HEAD}steps:\n  - do: deploy.a\n    evry: 1s\n"));
    assert_error(&d, 6, 5, "unknown key `evry`", "did you mean `every`?");

    let d = error(&format!("{HEAD}steps:\n  - wait_for: deploy.a\n"));
    assert_error(
        &d,
        5,
        5,
        "unknown key `wait_for`",
        "did you mean `wait-for`?",
    );

    let d = error("flow: f\nplugins:\n  p:\n    wsm: a.wasm\nsteps: []\n");
    assert_error(&d, 4, 5, "unknown key `wsm`", "did you mean `wasm`?");
}

#[test]
fn unknown_key_without_a_near_one_lists_the_valid_keys() {
    let d = error("flow: f\nsteps: []\nfrobnicate: 1\n");
    assert_error(
        &d,
        3,
        1,
        "unknown key `frobnicate`",
        "valid keys here: `flow`, `plugins`, `data`, `steps`",
    );
}

#[test]
fn wrong_type_for_a_size() {
    let d = error("flow: f\nplugins:\n  p:\n    wasm: a.wasm\n    memory: lots\nsteps: []\n");
    assert_error(
        &d,
        5,
        13,
        "expected a size like 64MiB, found `lots`",
        "B, KiB, MiB, GiB",
    );
    let d = error("flow: f\nplugins:\n  p: { wasm: a.wasm, max-output: -1 }\nsteps: []\n");
    assert_error(
        &d,
        3,
        34,
        "expected a size like 64MiB, found `-1`",
        "e.g. `64MiB`",
    );
}

#[test]
fn wrong_type_for_lists_numbers_booleans_and_strings() {
    let d = error("flow: f\nplugins:\n  p:\n    wasm: a.wasm\n    env: DEPLOY\nsteps: []\n");
    assert_error(&d, 5, 10, "expected a list", "`- item`");

    let d = error("flow: f\nplugins:\n  p: { wasm: a.wasm, fuel: lots }\nsteps: []\n");
    assert_error(&d, 3, 28, "expected a whole number", "digits");

    let d = error("flow: f\nplugins:\n  p: { wasm: a.wasm, reuse-instances: maybe }\nsteps: []\n");
    assert_error(&d, 3, 39, "expected `true` or `false`", "`true` or `false`");

    let d = error(&format!("{HEAD}steps:\n  - do: deploy.a\n    name: [1]\n"));
    assert_error(&d, 6, 11, "expected a string", "quote it");

    let d = error("flow: f\nsteps: 3\n");
    assert_error(&d, 2, 8, "expected a list", "`- item`");

    let d = error("- a\n");
    assert_error(
        &d,
        1,
        1,
        "expected a mapping of `key: value` pairs",
        "`key: value`",
    );
}

#[test]
fn bad_durations() {
    let d = error("flow: f\nplugins:\n  p: { wasm: a.wasm, timeout: 5 sec }\nsteps: []\n");
    assert_error(
        &d,
        3,
        31,
        "expected a duration like 30s, found `5 sec`",
        "ms, s, m, h or d",
    );
    let d = error(&format!(
        "{HEAD}steps:\n  - wait-for: deploy.ready\n    every: 5\n"
    ));
    assert_error(
        &d,
        6,
        12,
        "expected a duration like 30s, found the bare number `5`",
        "add a unit, e.g. `5s`",
    );
    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry: {{ max-attempts: 2, backoff: {{ initial: 1x, max: 1s }} }}\n    steps: []\n"
    ));
    assert_error(
        &d,
        6,
        51,
        "expected a duration like 30s, found `1x`",
        "e.g. `500ms`",
    );
}

#[test]
fn unknown_plugin_hints_the_nearest_plugin() {
    let d = error(&format!("{HEAD}steps:\n  - do: deplyo.prepare\n"));
    assert_error(
        &d,
        5,
        9,
        "no plugin named `deplyo`",
        "did you mean `deploy`?",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry:\n      handler: other.should-retry\n    steps: []\n"
    ));
    assert_error(
        &d,
        7,
        16,
        "no plugin named `other`",
        "declared plugins here: `deploy`",
    );

    let d = error("flow: f\nsteps:\n  - do: deploy.prepare\n");
    assert_error(
        &d,
        3,
        9,
        "no plugin named `deploy`",
        "declare it under `plugins:`",
    );
}

#[test]
fn malformed_function_references() {
    let d = error(&format!("{HEAD}steps:\n  - do: prepare\n"));
    assert_error(
        &d,
        5,
        9,
        "`prepare` is not a function reference",
        "e.g. `deploy.prepare`",
    );
    let d = error(&format!("{HEAD}steps:\n  - wait-for: deploy.\n"));
    assert_error(
        &d,
        5,
        15,
        "`deploy.` is not a function reference",
        "`<plugin>.<function>`",
    );
}

#[test]
fn duplicate_sibling_names_point_at_the_second() {
    let d = error(&format!(
        "{HEAD}steps:\n  - do: deploy.checks/ready\n  - wait-for: deploy.ready\n"
    ));
    assert_error(
        &d,
        6,
        15,
        "two items here are named `ready` (the first at line 5)",
        "the name `ready` comes from the function `deploy.ready`; give it a `name:`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - do: deploy.a\n  - name: g\n    steps:\n      - do: deploy.a\n      - name: a\n        do: deploy.b\n"
    ));
    assert_error(
        &d,
        9,
        15,
        "two items here are named `a` (the first at line 8)",
        "rename one of them: each item's path (`f.v1/g/a`) must be unique",
    );
}

#[test]
fn the_same_name_in_different_groups_is_fine() {
    let text =
        format!("{HEAD}steps:\n  - do: deploy.a\n  - name: g\n    steps:\n      - do: deploy.a\n");
    assert!(parse(&text, Path::new(FILE)).is_ok());
}

#[test]
fn bad_names() {
    let d = error(&format!("{HEAD}steps:\n  - name: ''\n    do: deploy.a\n"));
    assert_error(&d, 5, 11, "the name is empty", "write a name");

    let d = error(&format!("{HEAD}steps:\n  - name: a/b\n    do: deploy.a\n"));
    assert_error(
        &d,
        5,
        11,
        "the name `a/b` contains `/`",
        "choose a name without them",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: 'a:b'\n    do: deploy.a\n"
    ));
    assert_error(
        &d,
        5,
        11,
        "the name `a:b` contains `:`",
        "choose a name without them",
    );

    let d = error("flow: deploy/v1\nsteps: []\n");
    assert_error(
        &d,
        1,
        7,
        "the flow's name `deploy/v1` contains `/`",
        "`/` in step paths",
    );

    let d = error("flow: ''\nsteps: []\n");
    assert_error(&d, 1, 7, "the flow's name is empty", "write a name");

    let d = error("flow: f\nplugins:\n  de.ploy: { wasm: x.wasm }\nsteps: []\n");
    assert_error(
        &d,
        3,
        3,
        "the plugin name `de.ploy` contains `.`",
        "`<plugin>.<function>`",
    );
}

/// Names that display unlike what they are: each class is refused at the name, escaped.
#[test]
fn misleading_names_are_refused_at_the_name_and_shown_escaped() {
    let d = error(&format!(
        "{HEAD}steps:\n  - name: \"re\\u202Eady\"\n    wait-for: deploy.ready\n"
    ));
    assert_error(
        &d,
        5,
        11,
        "the name \"re\\u{202e}ady\" contains the bidirectional-override character U+202E",
        "retype the name without it",
    );
    assert!(!d.to_string().contains('\u{202e}'), "{d}");

    for c in ['\u{202a}', '\u{202d}', '\u{2066}', '\u{2069}'] {
        let d = error(&format!(
            "{HEAD}steps:\n  - name: a{c}b\n    do: deploy.a\n"
        ));
        assert_error(
            &d,
            5,
            11,
            &format!(
                "the name \"a\\u{{{:x}}}b\" contains the bidirectional-override character U+{:04X}",
                u32::from(c),
                u32::from(c)
            ),
            "display in another order",
        );
    }
    for c in ['\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}'] {
        let d = error(&format!("{HEAD}steps:\n  - name: a{c}\n    do: deploy.a\n"));
        assert_error(
            &d,
            5,
            11,
            &format!(
                "the name \"a\\u{{{:x}}}\" contains the zero-width character U+{:04X}",
                u32::from(c),
                u32::from(c)
            ),
            "cannot be seen",
        );
    }
    for blank in ["' '", "'   '", "\"\\u3000\""] {
        let d = error(&format!(
            "{HEAD}steps:\n  - name: {blank}\n    do: deploy.a\n"
        ));
        assert_eq!((d.line, d.column), (5, 11), "{d}");
        assert!(d.message.ends_with("is only white space"), "{d}");
        assert!(
            d.hint
                .as_deref()
                .unwrap_or("")
                .contains("a name you can see")
        );
    }

    // The flow's name and a name taken from a function are checked alike.
    let d = error("flow: \"f\\u200B.v1\"\nsteps: []\n");
    assert_error(
        &d,
        1,
        7,
        "the flow's name \"f\\u{200b}.v1\" contains the zero-width character U+200B",
        "cannot be seen",
    );
    let d = error(&format!("{HEAD}steps:\n  - do: \"deploy.re\\u202Eady\"\n"));
    assert_error(
        &d,
        5,
        9,
        "the name taken from the function \"re\\u{202e}ady\" contains the bidirectional-override character U+202E",
        "retype the name without it",
    );
    // Spaces inside a visible name are fine.
    let text = format!("{HEAD}steps:\n  - name: deploy it\n    do: deploy.a\n");
    assert!(parse(&text, Path::new(FILE)).is_ok());
}

#[test]
fn an_item_without_a_kind() {
    let d = error(&format!("{HEAD}steps:\n  - name: x\n"));
    assert_error(
        &d,
        5,
        5,
        "this item does nothing: it has none of `do`, `wait-for`, `case`, `loop-until`, `retry`, `parallel`, `for-each`, or `steps`",
        "`do: <plugin>.<function>`",
    );
}

#[test]
fn an_item_with_two_kinds_points_at_the_second() {
    let d = error(&format!(
        "{HEAD}steps:\n  - do: deploy.a\n    wait-for: deploy.b\n"
    ));
    assert_error(
        &d,
        6,
        15,
        "this item has both `do` (line 5) and `wait-for`, but an item has exactly one kind",
        "split it into two items",
    );
    let d = error(&format!(
        "{HEAD}steps:\n  - name: x\n    retry: {{ max-attempts: 2 }}\n    case: deploy.c\n    steps: []\n"
    ));
    assert_error(
        &d,
        7,
        11,
        "this item has both `retry` (line 6) and `case`, but an item has exactly one kind",
        "nest one in the other's `steps`",
    );
}

#[test]
fn wait_options_only_on_wait_for() {
    let d = error(&format!("{HEAD}steps:\n  - do: deploy.a\n    every: 1s\n"));
    assert_error(
        &d,
        6,
        12,
        "`every` applies only to `wait-for`, and this is a `do` step",
        "make the item a `wait-for",
    );
    let d = error(&format!(
        "{HEAD}steps:\n  - name: g\n    timeout: 1s\n    steps: []\n"
    ));
    assert_error(
        &d,
        6,
        14,
        "`timeout` applies only to `wait-for`, and this is a group",
        "remove it",
    );
}

#[test]
fn steps_required_or_forbidden() {
    let d = error(&format!("{HEAD}steps:\n  - do: deploy.x\n    steps: []\n"));
    assert_error(&d, 6, 12, "a `do` step has no `steps`", "as its siblings");

    let d = error(&format!(
        "{HEAD}steps:\n  - wait-for: deploy.x\n    steps:\n      - do: deploy.y\n"
    ));
    assert_error(&d, 7, 7, "a `wait-for` has no `steps`", "as its siblings");

    let d = error(&format!("{HEAD}steps:\n  - case: deploy.c\n"));
    assert_error(
        &d,
        5,
        5,
        "a `case` needs `steps:`, the items it runs",
        "add `steps:`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: l\n    loop-until: deploy.c\n"
    ));
    assert_error(
        &d,
        5,
        5,
        "a `loop-until` needs `steps:`, the items it runs",
        "add `steps:`",
    );
}

#[test]
fn retry_rules() {
    let d = error(&format!(
        "{HEAD}steps:\n  - retry: {{ max-attempts: 2 }}\n    steps: []\n"
    ));
    assert_error(&d, 5, 5, "a `retry` needs a `name`", "`name: validation`");

    let d = error(&format!("{HEAD}steps:\n  - steps: []\n"));
    assert_error(&d, 5, 5, "a group needs a `name`", "`name:");

    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry: {{}}\n    steps: []\n"
    ));
    assert_error(
        &d,
        6,
        12,
        "a `retry` needs `handler`, `max-attempts`, or both",
        "`max-attempts: 3`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry: {{ max-attempts: 0 }}\n    steps: []\n"
    ));
    assert_error(
        &d,
        6,
        28,
        "`max-attempts` must be at least 1",
        "the first one included",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry:\n      max-attempts: 3\n      backoff: {{ initial: 2s, max: 1s }}\n    steps: []\n"
    ));
    assert_error(
        &d,
        8,
        36,
        "the back-off's `max` is shorter than its `initial` wait",
        "at least as long as `initial`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry:\n      max-attempts: 3\n      backoff: {{ initial: 1s, max: 2s, multiplier: 0.5 }}\n    steps: []\n"
    ));
    assert_error(
        &d,
        8,
        52,
        "the `multiplier` must be at least 1, not 0.5",
        "`2` doubles it",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: r\n    retry: {{ max-attempts: 3, backoff: {{ initial: 1s }} }}\n    steps: []\n"
    ));
    assert_error(&d, 6, 42, "missing key `max`", "`max: 30s`");
}

#[test]
fn missing_required_keys() {
    let d = error("flow: f\n");
    assert_error(
        &d,
        1,
        1,
        "missing key `steps`",
        "list the items under `steps:`",
    );

    let d = error("steps: []\n");
    assert_error(&d, 1, 1, "missing key `flow`", "`flow: deploy.v1`");

    let d = error("flow: f\nplugins:\n  p: {}\nsteps: []\n");
    assert_error(&d, 3, 6, "missing key `wasm`", "`wasm: plugin.wasm`");
}

#[test]
fn a_key_without_a_value() {
    let d = error(&format!("{HEAD}steps:\n  - do: ~\n"));
    assert_error(
        &d,
        5,
        9,
        "expected a string, found nothing",
        "write a value after the `:`",
    );
}

#[test]
fn yaml_syntax_errors() {
    let d = error("flow: f\nsteps: [\n");
    assert_error(&d, 2, 8, "unclosed bracket '['", "YAML syntax error");

    let d = error("flow: f\n  nested: oops\nsteps: []\n");
    assert_error(
        &d,
        2,
        9,
        "mapping values are not allowed in this context",
        "indentation",
    );

    let d = error("flow: 'f\nsteps: []\n");
    assert_error(&d, 1, 7, "unclosed quote", "quotes");

    let d = error("flow: f\nplugins:\n  p: { wasm: x }\n  p: { wasm: y }\nsteps: []\n");
    assert_error(
        &d,
        4,
        3,
        "the key `p` appears twice in this mapping",
        "keep one",
    );

    let d = error("flow: f\nsteps: []\n---\nflow: g\nsteps: []\n");
    assert_error(
        &d,
        4,
        1,
        "a flow file holds one YAML document, but a second one starts here",
        "remove the `---` line",
    );
}

#[test]
fn bad_aliases() {
    let d = error(&format!("{HEAD}steps:\n  - {{ do: deploy.a, name: *x }}\n"));
    assert_error(
        &d,
        5,
        27,
        "this alias refers to no anchor",
        "define the anchor",
    );

    let d = error(&format!(
        "{HEAD}steps: &s\n  - do: deploy.a\n  - name: g\n    steps: *s\n"
    ));
    assert_error(
        &d,
        7,
        12,
        "this alias refers to a node that contains it",
        "repeat the items",
    );
}

#[test]
fn anchors_and_merge_keys_work() {
    let text = format!(
        "{HEAD}steps:\n  - &check {{ name: ready, wait-for: deploy.ready, every: 1s }}\n  - {{ <<: *check, name: again }}\n"
    );
    let file = parse(&text, Path::new(FILE)).unwrap();
    assert_eq!(file.steps[1].name, "again");
    match &file.steps[1].kind {
        stepflow_flowfile::ItemKind::WaitFor {
            condition, every, ..
        } => {
            assert_eq!(condition.to_string(), "deploy.ready");
            assert_eq!(*every, Some(std::time::Duration::from_secs(1)));
            // A merged value is reported where it is used: the `<<` entry.
            assert_eq!(condition.at.line, 6);
        }
        other => panic!("expected a wait-for, got {other:?}"),
    }
}

#[test]
fn an_empty_file() {
    for text in ["", "\n\n", "# only a comment\n", "---\n"] {
        let d = error(text);
        assert_error(&d, 1, 1, "the flow file is empty", "`flow: <name>`");
    }
}

#[test]
fn values_json_cannot_hold() {
    let d = error("flow: f\ndata: { x: .nan }\nsteps: []\n");
    assert_error(
        &d,
        2,
        12,
        "`.nan` is not a number JSON can hold",
        "quote it",
    );
}

#[test]
fn plugin_grant_checks() {
    let d =
        error("flow: f\nplugins:\n  p: { wasm: x, dirs: [{ host: ., guest: work }] }\nsteps: []\n");
    assert_error(
        &d,
        3,
        42,
        "the guest path `work` is not absolute",
        "`/work`",
    );

    let d = error("flow: f\nplugins:\n  p: { wasm: x, env: [A, 'B=1'] }\nsteps: []\n");
    assert_error(
        &d,
        3,
        26,
        "`B=1` is not an environment variable name",
        "variable names only",
    );

    let d = error("flow: f\nplugins:\n  p: { wasm: x, memory: 0 }\nsteps: []\n");
    assert_error(
        &d,
        3,
        25,
        "a size must be more than 0 bytes, not `0`",
        "64MiB",
    );

    let d = error("flow: f\nplugins:\n  p: { wasm: x, timeout: 0s }\nsteps: []\n");
    assert_error(&d, 3, 26, "`timeout` must be longer than 0", "30s");
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let missing = Path::new("/nonexistent/stepflow/flow.yaml");
    let d = stepflow_flowfile::load(missing).unwrap_err();
    assert_eq!((d.line, d.column), (0, 0));
    assert!(d.message.starts_with("cannot read the flow file: "), "{d}");
    assert!(
        d.to_string()
            .starts_with("/nonexistent/stepflow/flow.yaml: cannot read")
    );

    let dir = scratch_dir("utf8");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, b"flow: f\nsteps:\n  - do: x\xff.y\n").unwrap();
    let d = stepflow_flowfile::load(&path).unwrap_err();
    assert_eq!((d.line, d.column), (3, 10), "{d}");
    assert_eq!(d.message, "the file is not valid UTF-8 text");
}

// ---- errors found after parsing: wasm files and function resolution ----

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepflow-flowfile-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_missing_wasm_file_points_at_its_key_and_hints_the_build() {
    let dir = scratch_dir("wasm");
    let path = dir.join("flow.yaml");
    let text = "flow: f\nplugins:\n  built:\n    wasm: built.wasm\n  deploy:\n    wasm: out/deploy.wasm\n    build: ./build.sh\nsteps: []\n";
    std::fs::write(dir.join("built.wasm"), COMPONENT_HEADER).unwrap();
    std::fs::write(&path, text).unwrap();
    let file = stepflow_flowfile::load(&path).unwrap();
    let d = file.check_wasm_files().unwrap_err();
    assert_eq!(d.file, path);
    assert_eq!((d.line, d.column), (6, 11), "{d}");
    assert_eq!(
        d.message,
        format!(
            "the plugin `deploy`'s component `{}` does not exist",
            dir.join("out/deploy.wasm").display()
        )
    );
    let hint = d.hint.unwrap();
    assert!(hint.contains("`stepflow run --build`"), "{hint}");
    assert!(hint.contains("`./build.sh`"), "{hint}");

    let text = "flow: f\nplugins:\n  deploy:\n    wasm: out/deploy.wasm\nsteps: []\n";
    let file = parse(text, &path).unwrap();
    let d = file.check_wasm_files().unwrap_err();
    assert_eq!((d.line, d.column), (4, 11), "{d}");
    assert!(d.hint.unwrap().contains("add `build:`"));

    let text = "flow: f\nplugins:\n  built: { wasm: built.wasm }\nsteps: []\n";
    parse(text, &path).unwrap().check_wasm_files().unwrap();
}

/// The first 8 bytes of a component: the magic `\0asm`, version 0x0d, layer 1.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\x00\x01\x00";

/// Writes `bytes` as `p.wasm` next to a flow file that declares it on line 4, column 11, and
/// returns what `check_wasm_files` says.
fn check_wasm(name: &str, bytes: &[u8]) -> (PathBuf, Result<(), Diagnostic>) {
    let dir = scratch_dir(name);
    let wasm = dir.join("p.wasm");
    std::fs::write(&wasm, bytes).unwrap();
    let text = "flow: f\nplugins:\n  p:\n    wasm: p.wasm\nsteps: []\n";
    let file = parse(text, &dir.join("flow.yaml")).unwrap();
    (wasm, file.check_wasm_files())
}

#[test]
fn a_core_module_is_reported_at_its_wasm_key_with_how_to_build_a_component() {
    // A core module's header, then the start of a real module's sections.
    let (wasm, result) = check_wasm("core", b"\0asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00");
    let d = result.unwrap_err();
    assert_eq!((d.line, d.column), (4, 11), "{d}");
    assert_eq!(
        d.message,
        format!(
            "`{}` (the plugin `p`) is a core WebAssembly module, not a component",
            wasm.display()
        )
    );
    assert_eq!(
        d.hint.as_deref(),
        Some(
            "build it as a component (e.g. `cargo build --target wasm32-wasip2`, or `wasm-tools component new`)"
        )
    );
}

#[test]
fn a_file_that_is_not_webassembly_says_what_it_starts_with() {
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "text",
            b"#!/bin/sh\necho hi\n",
            "it starts with \"#!/bin/s\"",
        ),
        (
            "elf",
            b"\x7fELF\x02\x01\x01\x00\x00\x00",
            "it starts with the bytes 7f 45 4c 46 02 01 01 00",
        ),
        ("empty", b"", "it is empty"),
        ("short", b"\0as", "it starts with the bytes 00 61 73"),
    ];
    for (name, bytes, starts) in cases {
        let (wasm, result) = check_wasm(name, bytes);
        let d = result.unwrap_err();
        assert_eq!((d.line, d.column), (4, 11), "{d}");
        assert_eq!(
            d.message,
            format!(
                "`{}` (the plugin `p`) is not WebAssembly ({starts}, not `\\0asm`)",
                wasm.display()
            )
        );
        assert!(
            d.hint
                .as_deref()
                .unwrap_or("")
                .contains("build it as a component"),
            "{d}"
        );
    }
}

#[test]
fn a_component_passes_and_other_webassembly_versions_are_named() {
    let (_, result) = check_wasm("component", COMPONENT_HEADER);
    result.unwrap();
    let (_, result) = check_wasm(
        "component-body",
        &[COMPONENT_HEADER, b"\x07\x01\x00"].concat(),
    );
    result.unwrap();

    let (_, result) = check_wasm("old-component", b"\0asm\x0c\x00\x01\x00");
    let d = result.unwrap_err();
    assert!(
        d.message.ends_with("is WebAssembly of a binary format this stepflow does not read (version and layer 0c 00 01 00; a component has 0d 00 01 00)"),
        "{d}"
    );
    assert!(
        d.hint
            .as_deref()
            .unwrap_or("")
            .contains("rebuild it with current tools"),
        "{d}"
    );

    let (_, result) = check_wasm("cut", b"\0asm\x0d\x00");
    let d = result.unwrap_err();
    assert!(
        d.message
            .ends_with("is cut short: it ends 2 bytes after the WebAssembly magic number"),
        "{d}"
    );
}

/// A resolver that knows one condition `deploy.ready` and refuses everything else the way the
/// CLI's does.
struct OnlyReady;

struct Yes;
impl Condition for Yes {
    fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
        Box::pin(async { Ok(true) })
    }
}

impl Functions for OnlyReady {
    fn resolve(
        &self,
        plugin: &str,
        function: &str,
        kind: FunctionKind,
    ) -> Result<Function, String> {
        match (plugin, function) {
            ("deploy", "ready") if kind == FunctionKind::Condition => {
                Ok(Function::Condition(Arc::new(Yes)))
            }
            ("deploy", "ready") => Err(format!(
                "`deploy.ready` is a condition, but it is used as {kind}"
            )),
            // A buggy resolver: answers with a condition whatever was asked.
            ("deploy", "liar") => Ok(Function::Condition(Arc::new(Yes))),
            _ => Err(format!("plugin `{plugin}` has no function `{function}`")),
        }
    }
}

#[test]
fn a_missing_function_is_located_at_its_reference() {
    let text = format!("{HEAD}steps:\n  - wait-for: deploy.ready\n  - do: deploy.push\n");
    let file = parse(&text, Path::new(FILE)).unwrap();
    let Err(d) = file.to_steps(&OnlyReady) else {
        panic!("expected an error")
    };
    assert_error(
        &d,
        6,
        9,
        "plugin `deploy` has no function `push`",
        "`do` needs an action: an export shaped `func(ctx: step-context) -> result<option<string>, step-error>`",
    );
}

#[test]
fn a_function_of_the_wrong_kind_is_located_at_its_reference() {
    let text = format!(
        "{HEAD}steps:\n  - name: r\n    retry:\n      handler: deploy.ready\n    steps: []\n"
    );
    let file = parse(&text, Path::new(FILE)).unwrap();
    let Err(d) = file.to_steps(&OnlyReady) else {
        panic!("expected an error")
    };
    assert_error(
        &d,
        7,
        16,
        "`deploy.ready` is a condition, but it is used as error handler",
        "a retry `handler` needs an error handler",
    );

    let text = format!("{HEAD}steps:\n  - do: deploy.liar\n");
    let file = parse(&text, Path::new(FILE)).unwrap();
    let Err(d) = file.to_steps(&OnlyReady) else {
        panic!("expected an error")
    };
    assert_error(
        &d,
        5,
        9,
        "`deploy.liar` is used as an action here, but the resolver returned a condition",
        "`do` needs an action",
    );
}

// ---- B6: the size limit on flow files ----

/// A flow file of `len` bytes or a little more: a valid head, then comment lines.
fn padded_flow(len: usize) -> String {
    let mut text = String::from("flow: big.v1\nsteps: []\n");
    while text.len() < len {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    text
}

#[test]
fn a_flow_file_over_the_limit_is_refused_naming_the_file_and_the_limit() {
    let dir = scratch_dir("size");
    let path = dir.join("big.yaml");
    let text = padded_flow(stepflow_flowfile::MAX_FLOW_FILE_BYTES as usize + 1);
    std::fs::write(&path, &text).unwrap();
    let d = stepflow_flowfile::load(&path).unwrap_err();
    assert_eq!(d.file, path);
    assert_eq!((d.line, d.column), (0, 0));
    assert_eq!(
        d.message,
        format!(
            "the flow file is 4 MiB ({} bytes), more than the limit of 4 MiB (4194304 bytes)",
            text.len()
        )
    );
    let hint = d.hint.clone().unwrap_or_default();
    assert!(
        hint.contains("`stepflow_flowfile::load_with_limit`"),
        "{hint}"
    );
    assert!(
        d.to_string()
            .starts_with(&format!("{}: the flow file is", path.display()))
    );

    // A caller may allow more; the limit is inclusive.
    let file = stepflow_flowfile::load_with_limit(&path, text.len() as u64).unwrap();
    assert_eq!(file.flow, "big.v1");
    let d = stepflow_flowfile::load_with_limit(&path, text.len() as u64 - 1).unwrap_err();
    assert!(d.message.contains("more than the limit of"), "{d}");

    // A small file is read as before.
    let small = dir.join("small.yaml");
    std::fs::write(&small, padded_flow(1000)).unwrap();
    stepflow_flowfile::load(&small).unwrap();
}

/// `validate /dev/zero` grew without limit; now the read stops at the limit, at once.
#[cfg(unix)]
#[test]
fn a_device_that_never_ends_is_refused_quickly() {
    let started = std::time::Instant::now();
    let d = stepflow_flowfile::load(Path::new("/dev/zero")).unwrap_err();
    assert_eq!(d.file, PathBuf::from("/dev/zero"));
    assert_eq!(
        d.message,
        "the flow file is not a regular file, and it gave more than the limit of 4 MiB (4194304 bytes) without ending"
    );
    assert!(
        d.hint
            .as_deref()
            .unwrap_or("")
            .contains("not a device or a pipe"),
        "{d}"
    );
    // A generous bound: reading 4 MiB takes milliseconds, an unbounded read never ends.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    let d = stepflow_flowfile::load_with_limit(Path::new("/dev/zero"), 10).unwrap_err();
    assert!(
        d.message
            .contains("more than the limit of 10 bytes without"),
        "{d}"
    );
}

#[test]
fn signal_waits_check_their_name_and_options_at_their_place() {
    let d = error(&format!(
        "{HEAD}steps:\n  - wait-for: {{ signal: \"app rove\" }}\n"
    ));
    assert_eq!((d.line, d.column), (5, 15), "{d}");
    assert!(
        d.message
            .contains("the signal name \"app rove\" contains ' '"),
        "{d}"
    );
    assert!(
        d.hint
            .as_deref()
            .unwrap_or("")
            .contains("{signal: approve}"),
        "{d}"
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - wait-for: {{ signal: approve }}\n    every: 1s\n"
    ));
    assert_error(
        &d,
        6,
        12,
        "`every` does not apply to a wait for a signal: the signal moves it when it arrives",
        "remove `every`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - wait-for: {{ signl: approve }}\n"
    ));
    assert!(d.message.contains("unknown key `signl`"), "{d}");

    let d = error(&format!("{HEAD}steps:\n  - wait-for: 5\n"));
    assert!(
        d.message
            .contains("a condition `<plugin>.<function>` or `{signal: <name>}`"),
        "{d}"
    );
}

// ---- parallel and for-each ----

/// A `parallel` named `regions` at line 5 whose `parallel:` key is on line 6 and whose
/// branches (`branches`, indented as list items under it) start on line 7, column 9.
fn parallel(branches: &str) -> String {
    format!("{HEAD}steps:\n  - name: regions\n    parallel:\n{branches}")
}

#[test]
fn a_parallel_needs_branches_each_with_a_name_and_steps() {
    let d = error(&format!(
        "{HEAD}steps:\n  - name: regions\n    parallel: []\n"
    ));
    assert_error(
        &d,
        6,
        15,
        "the parallel `regions` has no branches",
        "list the branches under `parallel:`, each with a `name:` and its `steps:`",
    );

    let d = error(&parallel(
        "      - name: eu\n        steps:\n          - do: deploy.a\n      - steps:\n          - do: deploy.a\n",
    ));
    assert_error(
        &d,
        10,
        9,
        "branch 2 of the parallel `regions` needs a `name`",
        "add e.g. `name: eu`; it is part of the path of every step inside the branch (`f.v1/regions/eu/...`)",
    );

    let d = error(&parallel("      - name: eu\n"));
    assert_error(
        &d,
        7,
        9,
        "the branch `eu` needs `steps:`, the items it runs",
        "add `steps:` with a list of items below it",
    );

    let d = error(&parallel("      - name: eu\n        steps: []\n"));
    assert_error(
        &d,
        8,
        16,
        "the branch `eu` has no steps",
        "give it at least one item, e.g. `- do: deploy.deploy`, or leave the branch out",
    );

    let d = error(&parallel("      - name: eu\n        do: deploy.a\n"));
    assert_error(
        &d,
        8,
        9,
        "unknown key `do`",
        "valid keys here: `name`, `steps`",
    );
}

#[test]
fn branch_names_are_checked_like_item_names() {
    let branch = |name: &str| {
        parallel(&format!(
            "      - name: {name}\n        steps: [{{ do: deploy.a }}]\n"
        ))
    };
    let d = error(&branch("''"));
    assert_error(&d, 7, 15, "the branch name is empty", "write a name");
    let d = error(&branch("e/u"));
    assert_error(
        &d,
        7,
        15,
        "the branch name `e/u` contains `/`",
        "choose a name without them",
    );
    let d = error(&branch("'e:u'"));
    assert_error(
        &d,
        7,
        15,
        "the branch name `e:u` contains `:`",
        "choose a name without them",
    );
    let d = error(&branch("\"e\\tu\""));
    assert_error(
        &d,
        7,
        15,
        "the branch name `e\\tu` contains a control character",
        "choose a name without them",
    );
    let d = error(&branch("\"e\\u202Eu\""));
    assert_error(
        &d,
        7,
        15,
        "the branch name \"e\\u{202e}u\" contains the bidirectional-override character U+202E",
        "retype the name without it",
    );

    let d = error(&parallel(
        "      - name: eu\n        steps: [{ do: deploy.a }]\n      - name: us\n        steps: [{ do: deploy.a }]\n      - name: eu\n        steps: [{ do: deploy.b }]\n",
    ));
    assert_error(
        &d,
        11,
        15,
        "two branches of the parallel `regions` are named `eu` (the first at line 7)",
        "rename one of them: each branch's path (`f.v1/regions/eu`) must be unique",
    );

    // The same name in two branches, or a branch named like its parallel, is fine.
    let text = parallel(
        "      - name: regions\n        steps: [{ do: deploy.a }]\n      - name: us\n        steps: [{ do: deploy.a }]\n",
    );
    assert!(parse(&text, Path::new(FILE)).is_ok());
}

#[test]
fn a_parallel_has_a_name_and_no_steps_of_its_own() {
    let d = error(&format!(
        "{HEAD}steps:\n  - parallel:\n      - {{ name: eu, steps: [{{ do: deploy.a }}] }}\n"
    ));
    assert_error(&d, 5, 5, "a `parallel` needs a `name`", "add e.g. `name:");

    let d = error(&format!(
        "{HEAD}steps:\n  - name: regions\n    parallel:\n      - {{ name: eu, steps: [{{ do: deploy.a }}] }}\n    steps: [{{ do: deploy.b }}]\n"
    ));
    assert_error(
        &d,
        8,
        12,
        "a `parallel` has no `steps` of its own: its branches hold them",
        "move the items into a branch under `parallel:`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: regions\n    do: deploy.a\n    parallel:\n      - {{ name: eu, steps: [{{ do: deploy.a }}] }}\n"
    ));
    assert_error(
        &d,
        8,
        7,
        "this item has both `do` (line 6) and `parallel`, but an item has exactly one kind",
        "split it into two items",
    );
}

/// A `for-each` named `files` on line 5 with the keys `keys` (one per line, indented under
/// it) and one step.
fn for_each(keys: &str) -> String {
    format!("{HEAD}steps:\n  - name: files\n{keys}    steps:\n      - do: deploy.process\n")
}

#[test]
fn for_each_pointers_must_be_json_pointers() {
    let d = error(&for_each("    for-each: files\n    results: /processed\n"));
    assert_error(
        &d,
        6,
        15,
        "`for-each: files` is not a JSON pointer: it does not start with `/`",
        "a `/` before each key or index, e.g. `for-each: /files`",
    );

    let d = error(&for_each("    for-each: /files\n    results: processed\n"));
    assert_error(
        &d,
        7,
        14,
        "`results: processed` is not a JSON pointer: it does not start with `/`",
        "e.g. `results: /processed`",
    );

    let d = error(&for_each(
        "    for-each: $.files\n    results: /processed\n",
    ));
    assert_error(
        &d,
        6,
        15,
        "`for-each: $.files` is not a JSON pointer: it does not start with `/`",
        "e.g. `for-each: /files`",
    );

    let d = error(&for_each("    for-each: /a~2b\n    results: /processed\n"));
    assert_error(
        &d,
        6,
        15,
        "`for-each: /a~2b` is not a JSON pointer: `~` must be followed by `0` or `1`",
        "write `~0` for `~` and `~1` for `/`, e.g. `/a~1b` for the key `a/b`",
    );

    let d = error(&for_each("    for-each: /files\n    results: /out~\n"));
    assert_error(
        &d,
        7,
        14,
        "`results: /out~` is not a JSON pointer: `~` must be followed by `0` or `1`",
        "`~1` for `/`",
    );

    let d = error(&for_each("    for-each: /files\n    results: ''\n"));
    assert_error(
        &d,
        7,
        14,
        "`results` is `\"\"`, the whole data document, which cannot become the results array",
        "name a place in the data for the results array, e.g. `results: /processed`",
    );

    // `~0`, `~1`, keys with spaces, and `""` (the data document is the array) are fine.
    for keys in [
        "    for-each: /a~0b/~1c/0\n    results: /processed\n",
        "    for-each: /my files\n    results: /processed\n",
        "    for-each: ''\n    results: /processed\n",
    ] {
        let text = for_each(keys);
        if let Err(e) = parse(&text, Path::new(FILE)) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn results_may_not_overlap_what_the_for_each_runs_over() {
    let d = error(&for_each("    for-each: /files\n    results: /files\n"));
    assert_error(
        &d,
        7,
        14,
        "`results` is `/files`, the array the for-each runs over: the results would overwrite its elements",
        "collect the results outside `/files`, e.g. `results: /files-results`",
    );

    let d = error(&for_each(
        "    for-each: /files\n    results: /files/0/out\n",
    ));
    assert_error(
        &d,
        7,
        14,
        "`results` (`/files/0/out`) lies inside the array the for-each runs over (`/files`): the results would overwrite its elements",
        "e.g. `results: /files-results`",
    );

    let d = error(&for_each(
        "    for-each: /batch/files\n    results: /batch\n",
    ));
    assert_error(
        &d,
        7,
        14,
        "`results` (`/batch`) contains the array the for-each runs over (`/batch/files`): the results array would replace it",
        "collect the results outside `/batch/files`, e.g. `results: /batch/files-results`",
    );

    // Pointers are compared token by token, after decoding: `~1` is a `/` inside one key.
    let d = error(&for_each("    for-each: /a~1b\n    results: /a~1b/x\n"));
    assert_eq!((d.line, d.column), (7, 14), "{d}");
    assert!(d.message.contains("lies inside"), "{d}");

    // A common prefix that is not a whole key is no overlap, nor is a different key.
    for keys in [
        "    for-each: /files\n    results: /files-out\n",
        "    for-each: /files\n    results: /filesx\n",
        "    for-each: /a~1b\n    results: /a/b\n",
        "    for-each: /batch/files\n    results: /batch/out\n",
    ] {
        let text = for_each(keys);
        if let Err(e) = parse(&text, Path::new(FILE)) {
            panic!("{e}\n{text}");
        }
    }
}

#[test]
fn for_each_needs_results_steps_and_a_concurrency_of_at_least_1() {
    let d = error(&for_each("    for-each: /files\n"));
    assert_error(
        &d,
        5,
        5,
        "a `for-each` needs `results:`, the array that collects what its steps return for each element",
        "add e.g. `results: /processed`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: files\n    for-each: /files\n    results: /processed\n    steps: []\n"
    ));
    assert_error(
        &d,
        8,
        12,
        "a `for-each` needs at least one item in `steps`, to run for each element",
        "they see it as `/item` and its index as `/index`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: files\n    for-each: /files\n    results: /processed\n"
    ));
    assert_error(
        &d,
        5,
        5,
        "a `for-each` needs `steps:`, the items it runs",
        "add `steps:`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - for-each: /files\n    results: /processed\n    steps: [{{ do: deploy.a }}]\n"
    ));
    assert_error(&d, 5, 5, "a `for-each` needs a `name`", "add e.g. `name:");

    let d = error(&for_each(
        "    for-each: /files\n    results: /processed\n    concurrency: 0\n",
    ));
    assert_error(
        &d,
        8,
        18,
        "`concurrency` must be at least 1",
        "leave it out to process them one after the other",
    );

    let what = "`concurrency` is how many elements are processed at once";
    for (value, message, hint) in [
        (
            "eight",
            "expected a whole number like 8, found `eight`",
            what,
        ),
        ("1.5", "expected a whole number like 8, found `1.5`", what),
        ("-1", "expected a whole number like 8, found `-1`", what),
        ("true", "expected a whole number like 8, found `true`", what),
        ("[8]", "expected a whole number like 8, found a list", what),
        (
            "'8'",
            "expected a whole number like 8, found `8`",
            "write the number without quotes: `concurrency: 8`",
        ),
        (
            "~",
            "expected a whole number like 8, found nothing",
            "remove the key for the default of 1",
        ),
        (
            "99999999999",
            "a `concurrency` of 99999999999 is more than stepflow can count (at most 4294967295)",
            what,
        ),
    ] {
        let d = error(&for_each(&format!(
            "    for-each: /files\n    results: /processed\n    concurrency: {value}\n"
        )));
        assert_error(&d, 8, 18, message, hint);
    }
    let text =
        for_each("    for-each: /files\n    results: /processed\n    concurrency: 4294967295\n");
    assert!(parse(&text, Path::new(FILE)).is_ok());
}

#[test]
fn results_and_concurrency_apply_only_to_for_each() {
    let d = error(&format!(
        "{HEAD}steps:\n  - do: deploy.a\n    results: /out\n"
    ));
    assert_error(
        &d,
        6,
        14,
        "`results` applies only to `for-each`, and this is a `do` step",
        "make the item a `for-each: <pointer>` with `results:` and `steps:`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: g\n    concurrency: 2\n    steps: [{{ do: deploy.a }}]\n"
    ));
    assert_error(
        &d,
        6,
        18,
        "`concurrency` applies only to `for-each`, and this is a group",
        "remove it",
    );

    let d = error(&parallel(
        "      - { name: eu, steps: [{ do: deploy.a }] }\n    concurrency: 2\n",
    ));
    assert_error(
        &d,
        8,
        18,
        "`concurrency` applies only to `for-each`, and this is a `parallel`",
        "remove it",
    );
}

#[test]
fn a_sibling_named_like_a_for_each_instance_is_refused() {
    let d = error(&format!(
        "{HEAD}steps:\n  - name: files\n    for-each: /files\n    results: /processed\n    steps: [{{ do: deploy.a }}]\n  - name: files#3\n    do: deploy.b\n"
    ));
    assert_error(
        &d,
        9,
        11,
        "the name `files#3` is how step paths spell element 3 of the for-each `files` (line 5)",
        "rename one of them",
    );
    // Before the for-each too, and only beside it: in another group the name is free.
    let d = error(&format!(
        "{HEAD}steps:\n  - do: deploy.files#0\n  - name: files\n    for-each: /files\n    results: /processed\n    steps: [{{ do: deploy.a }}]\n"
    ));
    assert_eq!((d.line, d.column), (5, 9), "{d}");
    let text = format!(
        "{HEAD}steps:\n  - name: files\n    for-each: /files\n    results: /processed\n    steps: [{{ do: deploy.a }}]\n  - name: g\n    steps: [{{ name: files#3, do: deploy.b }}]\n  - name: files#x\n    do: deploy.c\n"
    );
    assert!(parse(&text, Path::new(FILE)).is_ok());
}

#[test]
fn mistakes_inside_branches_and_bodies_are_located_there() {
    let d = error(&parallel(
        "      - name: eu\n        steps:\n          - name: hosts\n            for-each: /hosts\n            results: /hosts\n            steps: [{ do: deploy.a }]\n",
    ));
    assert_error(
        &d,
        11,
        22,
        "`results` is `/hosts`, the array the for-each runs over: the results would overwrite its elements",
        "e.g. `results: /hosts-results`",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: files\n    for-each: /files\n    results: /processed\n    steps:\n      - name: sides\n        parallel:\n          - {{ name: a, steps: [{{ do: deploy.a }}] }}\n          - {{ name: a, steps: [{{ do: deploy.b }}] }}\n"
    ));
    assert_error(
        &d,
        12,
        21,
        "two branches of the parallel `sides` are named `a` (the first at line 11)",
        "(`f.v1/files/sides/a`)",
    );

    let d = error(&format!(
        "{HEAD}steps:\n  - name: files\n    for-each: /files\n    results: /processed\n    steps:\n      - do: other.process\n"
    ));
    assert_error(
        &d,
        9,
        13,
        "no plugin named `other`",
        "declared plugins here: `deploy`",
    );
}
