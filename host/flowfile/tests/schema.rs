//! The JSON Schema: the shipped file is what `schema()` generates, the example flow files follow
//! it, and on a range of small documents the schema and the parser agree.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped_path() -> PathBuf {
    repo().join("schema/flow.schema.json")
}

fn generated_text() -> String {
    let mut text = serde_json::to_string_pretty(&stepflow_flowfile::schema())
        .expect("a JSON value always serializes");
    text.push('\n');
    text
}

/// Fails when `schema/flow.schema.json` is stale; `STEPFLOW_UPDATE_SCHEMA=1` rewrites it.
#[test]
fn the_shipped_schema_is_the_generated_one() {
    let path = shipped_path();
    let generated = generated_text();
    if std::env::var_os("STEPFLOW_UPDATE_SCHEMA").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write the schema");
        return;
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{} is out of date; regenerate it with\n  STEPFLOW_UPDATE_SCHEMA=1 cargo test -p stepflow-flowfile --test schema",
        path.display()
    );
}

/// The schema, compiled by an independent validator.
struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new() -> Self {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        let url = "https://stepflow.invalid/flow.schema.json";
        compiler
            .add_resource(url, stepflow_flowfile::schema())
            .expect("add the schema");
        let index = compiler
            .compile(url, &mut schemas)
            .unwrap_or_else(|e| panic!("the schema does not compile: {e:#}"));
        Validator { schemas, index }
    }

    fn check(&self, instance: &Value) -> Result<(), String> {
        self.schemas
            .validate(instance, self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

/// YAML as the JSON an editor's schema check sees.
fn yaml_to_json(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

#[test]
fn the_example_flow_files_follow_the_schema() {
    let validator = Validator::new();
    let mut seen = 0;
    for name in ["quickstart.yaml", "deploy.yaml", "data-processing.yaml"] {
        let path = repo().join("examples").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/flow.schema.json\n"),
            "{name} should point editors at the schema"
        );
        if let Err(e) = validator.check(&yaml_to_json(&text)) {
            panic!("{name} does not follow the schema:\n{e}");
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
}

const HEAD: &str = "flow: f.v1\nplugins:\n  deploy: { wasm: deploy.wasm }\n";

/// Documents both accept.
const VALID: &[&str] = &[
    "steps: []",
    "steps:\n  - do: deploy.prepare",
    "steps:\n  - { name: deploy it, do: deploy.prepare }",
    "steps:\n  - { name: r, wait-for: deploy.checks/ready, every: 1s, timeout: 1h30m }",
    "steps:\n  - { case: deploy.c, steps: [] }",
    "steps:\n  - { name: l, loop-until: deploy.c, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: r, retry: { handler: deploy.h }, steps: [] }",
    "steps:\n  - { name: r, retry: { max-attempts: 1, backoff: { initial: 0s, max: 1s, multiplier: 1.5, jitter: false } }, steps: [] }",
    "steps:\n  - { name: g, steps: [{ name: h, steps: [] }] }",
    "data: [1, 'two', { three: null }]\nsteps: []",
    "plugins:\n  other: { wasm: o.wasm, memory: 1024, max-output: 2 KB, fuel: 1, timeout: 500ms, env: [A], dirs: [{ host: ., guest: /, writable: true }], reuse-instances: true, build: make }\nsteps: []",
    "steps:\n  - { name: p, parallel: [{ name: a, steps: [{ do: deploy.a }] }, { name: b, steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { name: p, parallel: [{ name: a, steps: [{ name: e, for-each: /x, results: /y, steps: [{ do: deploy.a }] }] }] }",
    "steps:\n  - { name: e, for-each: /files, results: /processed, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: '', results: /processed, concurrency: 8, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /a~0b/~1c/0, results: /files-out, concurrency: 4294967295, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /filesx, steps: [{ name: p, parallel: [{ name: a, steps: [{ do: deploy.a }] }] }] }",
];

/// Documents both refuse: structure the schema can express.
const INVALID: &[&str] = &[
    "stepz: []",
    "steps: 3",
    "steps:\n  - name: x",
    "steps:\n  - { do: deploy.a, wait-for: deploy.b }",
    "steps:\n  - { name: x, retry: { max-attempts: 2 }, case: deploy.c, steps: [] }",
    "steps:\n  - { do: deploy.a, every: 1s }",
    "steps:\n  - { do: deploy.a, steps: [] }",
    "steps:\n  - { wait-for: deploy.a, steps: [] }",
    "steps:\n  - { case: deploy.c }",
    "steps:\n  - { retry: { max-attempts: 2 }, steps: [] }",
    "steps:\n  - { steps: [] }",
    "steps:\n  - { name: g, timeout: 1s, steps: [] }",
    "steps:\n  - { name: r, retry: {}, steps: [] }",
    "steps:\n  - { name: r, retry: { max-attempts: 0 }, steps: [] }",
    "steps:\n  - { name: r, retry: { max-attempts: 2, backoff: { initial: 1s } }, steps: [] }",
    "steps:\n  - { name: r, retry: { max-attempts: 2, backoff: { initial: 1s, max: 2s, multiplier: 0.5 } }, steps: [] }",
    "steps:\n  - { name: '', do: deploy.a }",
    "steps:\n  - { name: a/b, do: deploy.a }",
    "steps:\n  - { name: 'a:b', do: deploy.a }",
    "steps:\n  - { name: \"re\\u202Eady\", do: deploy.a }",
    "steps:\n  - { name: \"a\\u2066\", do: deploy.a }",
    "steps:\n  - { name: \"a\\u200Bb\", do: deploy.a }",
    "steps:\n  - { name: \"\\uFEFFa\", do: deploy.a }",
    "steps:\n  - { name: ' ', do: deploy.a }",
    "steps:\n  - { name: \"\\u3000 \", do: deploy.a }",
    "steps:\n  - do: prepare",
    "steps:\n  - do: deploy.",
    "steps:\n  - do: deploy./ready",
    "steps:\n  - do: 'deploy.a b'",
    "steps:\n  - { wait-for: deploy.a, every: 5 }",
    "steps:\n  - { wait-for: deploy.a, every: 5 sec }",
    "steps:\n  - { wait-for: deploy.a, every: 1.5s }",
    "steps:\n  - { do: deploy.a, colour: blue }",
    "plugins:\n  p: {}\nsteps: []",
    "plugins:\n  p: { wasm: x, memory: lots }\nsteps: []",
    "plugins:\n  p: { wasm: x, memory: 0 }\nsteps: []",
    "plugins:\n  p: { wasm: x, memory: 0MiB }\nsteps: []",
    "plugins:\n  p: { wasm: x, memory: 64 mb }\nsteps: []",
    "plugins:\n  p: { wasm: x, fuel: 0 }\nsteps: []",
    "plugins:\n  p: { wasm: x, reuse-instances: maybe }\nsteps: []",
    "plugins:\n  p: { wasm: x, dirs: [{ host: . }] }\nsteps: []",
    "plugins:\n  p.q: { wasm: x }\nsteps: []",
    "plugins:\n  'p q': { wasm: x }\nsteps: []",
    "plugins:\n  p: { wasm: x, timeout: 30 }\nsteps: []",
    "steps:\n  - { name: p, parallel: [] }",
    "steps:\n  - { parallel: [{ name: a, steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { name: p, parallel: [{ steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { name: p, parallel: [{ name: a }] }",
    "steps:\n  - { name: p, parallel: [{ name: a, steps: [] }] }",
    "steps:\n  - { name: p, parallel: [{ name: a/b, steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { name: p, parallel: [{ name: '', steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { name: p, parallel: [{ name: a, do: deploy.a }] }",
    "steps:\n  - { name: p, parallel: [{ name: a, steps: [{ do: deploy.a }] }], steps: [] }",
    "steps:\n  - { name: p, parallel: [{ name: a, steps: [{ do: deploy.a }] }], concurrency: 2 }",
    "steps:\n  - { name: p, do: deploy.a, parallel: [{ name: a, steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { for-each: /files, results: /processed, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /processed }",
    "steps:\n  - { name: e, for-each: /files, results: /processed, steps: [] }",
    "steps:\n  - { name: e, for-each: files, results: /processed, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /a~2, results: /processed, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: processed, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: '', steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /out~, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /processed, concurrency: 0, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /processed, concurrency: 1.5, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /processed, concurrency: '8', steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /processed, concurrency: 4294967296, steps: [{ do: deploy.a }] }",
    "steps:\n  - { do: deploy.a, results: /out }",
    "steps:\n  - { name: g, concurrency: 2, steps: [] }",
];

/// Mistakes only the parser sees: they need the whole document (declared plugins, siblings) or
/// compare two values.
const PARSER_ONLY: &[&str] = &[
    "steps:\n  - do: other.a",
    "steps:\n  - do: deploy.a\n  - do: deploy.a",
    "steps:\n  - { name: r, retry: { max-attempts: 2, backoff: { initial: 2s, max: 1s } }, steps: [] }",
    "plugins:\n  p: { wasm: x, dirs: [{ host: ., guest: work }] }\nsteps: []",
    "plugins:\n  p: { wasm: x, timeout: 0s }\nsteps: []",
    "steps:\n  - { name: p, parallel: [{ name: a, steps: [{ do: deploy.a }] }, { name: a, steps: [{ do: deploy.a }] }] }",
    "steps:\n  - { name: e, for-each: /files, results: /files, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /files/0, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /a/files, results: /a, steps: [{ do: deploy.a }] }",
    "steps:\n  - { name: e, for-each: /files, results: /out, steps: [{ do: deploy.a }] }\n  - { name: 'e#0', do: deploy.a }",
];

fn document(tail: &str) -> String {
    if tail.starts_with("plugins:") {
        // Replace the head's plugins with the test's own.
        let (plugins, steps) = tail.split_once("\nsteps:").unwrap_or((tail, " []"));
        let plugins = plugins.replacen("plugins:", "plugins:\n  deploy: { wasm: deploy.wasm }", 1);
        format!("flow: f.v1\n{plugins}\nsteps:{steps}\n")
    } else if tail.starts_with("stepz") || tail.starts_with("steps: 3") {
        format!("{HEAD}{tail}\n")
    } else {
        let (data, steps) = match tail.split_once("\nsteps:") {
            Some((data, steps)) => (format!("{data}\n"), format!("steps:{steps}")),
            None => (String::new(), tail.to_string()),
        };
        format!("{HEAD}{data}{steps}\n")
    }
}

#[test]
fn the_schema_and_the_parser_agree() {
    let validator = Validator::new();
    let parse = |text: &str| stepflow_flowfile::parse(text, Path::new("f.yaml"));
    for tail in VALID {
        let text = document(tail);
        if let Err(e) = parse(&text) {
            panic!("the parser refuses\n{text}\n{e}");
        }
        if let Err(e) = validator.check(&yaml_to_json(&text)) {
            panic!("the schema refuses\n{text}\n{e}");
        }
    }
    for tail in INVALID {
        let text = document(tail);
        assert!(parse(&text).is_err(), "the parser accepts\n{text}");
        let json = serde_saphyr::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("not a JSON value for the schema ({e})\n{text}"));
        assert!(
            validator.check(&json).is_err(),
            "the schema accepts\n{text}"
        );
    }
    for tail in PARSER_ONLY {
        let text = document(tail);
        assert!(parse(&text).is_err(), "the parser accepts\n{text}");
        assert!(
            validator.check(&yaml_to_json(&text)).is_ok(),
            "the schema refuses (move it to INVALID)\n{text}"
        );
    }
}

/// For every character that is white space (and not a control character, refused anyway), or
/// bidirectional-override or zero-width: a name of it alone, and a name with it inside, are
/// judged alike by the parser and the schema.
#[test]
fn the_schema_and_the_parser_agree_on_misleading_names() {
    let validator = Validator::new();
    let misleading = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}');
    let chars: Vec<char> = (char::MIN..=char::MAX)
        .filter(|&c| (c.is_whitespace() && !c.is_control()) || misleading(c))
        .collect();
    assert!(chars.len() > 20, "{chars:?}");
    for c in chars {
        let code = u32::from(c);
        for (name, refused) in [
            (format!("\\U{code:08X}"), true),
            (format!("a\\U{code:08X}b"), misleading(c)),
        ] {
            let text = format!("{HEAD}steps:\n  - name: \"{name}\"\n    do: deploy.a\n");
            let parsed = stepflow_flowfile::parse(&text, Path::new("f.yaml"));
            let checked = validator.check(&yaml_to_json(&text));
            assert_eq!(
                parsed.is_err(),
                refused,
                "the parser on U+{code:04X}:\n{text}"
            );
            assert_eq!(
                checked.is_err(),
                refused,
                "the schema on U+{code:04X}:\n{text}"
            );
        }
    }
}

#[test]
fn the_schema_describes_the_format() {
    let schema = stepflow_flowfile::schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["required"], serde_json::json!(["flow", "steps"]));
    assert_eq!(schema["additionalProperties"], false);
    let item = &schema["definitions"]["ItemDoc"];
    // The kind rules come from one table: one branch per kind.
    assert_eq!(item["oneOf"].as_array().map(Vec::len), Some(8));
    for key in [
        "do",
        "wait-for",
        "case",
        "loop-until",
        "retry",
        "parallel",
        "for-each",
        "steps",
        "every",
        "timeout",
        "results",
        "concurrency",
    ] {
        assert!(
            item["properties"].get(key).is_some(),
            "no `{key}` in {item}"
        );
        assert!(
            !item["properties"][key].to_string().contains("null"),
            "`{key}` should not be nullable: {}",
            item["properties"][key]
        );
    }
    let description = item["properties"]["do"]["description"]
        .as_str()
        .unwrap_or("");
    assert!(description.contains("action"), "{description}");
    let branch = &schema["definitions"]["BranchDoc"];
    assert_eq!(branch["required"], serde_json::json!(["name", "steps"]));
    assert_eq!(branch["additionalProperties"], false);
}

/// The flow file of the fan-out tests (both new kinds, each nested in the other) follows the
/// schema too.
#[test]
fn the_fan_out_test_file_follows_the_schema() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/files/fan-out.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# yaml-language-server: $schema=../../../../schema/flow.schema.json\n")
    );
    assert!(
        path.parent()
            .is_some_and(|dir| dir.join("../../../../schema/flow.schema.json").exists()),
        "the comment's schema path is right"
    );
    if let Err(e) = Validator::new().check(&yaml_to_json(&text)) {
        panic!("fan-out.yaml does not follow the schema:\n{e}");
    }
}
