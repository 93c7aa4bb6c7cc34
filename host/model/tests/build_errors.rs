//! Build validation: empty names, reserved characters, misleading names and duplicate siblings
//! are refused with the path of their parent; any tree of names builds or is refused without
//! panicking.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use serde_json::json;
use stepflow_model::*;

use common::{noop, yes};

fn build_error(steps: Steps) -> BuildError {
    match StepFlow::new(steps) {
        Ok(_) => panic!("the flow should be refused"),
        Err(error) => error,
    }
}

#[test]
fn an_empty_name_is_refused_with_its_parent_and_position() {
    let error = build_error(Steps::named("t.v1").step("a", noop).step("", noop));
    assert_eq!(
        error,
        BuildError::EmptyName {
            parent: "t.v1".into(),
            position: 2
        }
    );
    assert!(error.to_string().contains("`t.v1`"), "{error}");

    let error = build_error(Steps::named("t.v1").steps(Steps::new()));
    assert_eq!(
        error,
        BuildError::EmptyName {
            parent: "t.v1".into(),
            position: 1
        }
    );
    let error = build_error(Steps::named(""));
    assert!(matches!(error, BuildError::EmptyName { parent, .. } if parent == "(root)"));
}

#[test]
fn reserved_characters_are_refused_with_their_parent() {
    let error = build_error(Steps::named("t.v1").case("c", yes, Steps::new().step("a/b", noop)));
    assert_eq!(
        error,
        BuildError::BadName {
            parent: "t.v1/c".into(),
            name: "a/b".into(),
            what: "`/`"
        }
    );
    assert!(error.to_string().contains("`t.v1/c`"), "{error}");

    let error =
        build_error(Steps::named("t.v1").loop_until("l", yes, Steps::new().step("start:x", noop)));
    assert_eq!(
        error,
        BuildError::BadName {
            parent: "t.v1/l".into(),
            name: "start:x".into(),
            what: "`:`"
        }
    );

    let error = build_error(Steps::named("t.v1").step("line\nbreak", noop));
    assert!(matches!(
        error,
        BuildError::BadName {
            what: "a control character",
            ..
        }
    ));
    let error = build_error(Steps::named("a/b.v1"));
    assert!(matches!(error, BuildError::BadName { parent, .. } if parent == "(root)"));
}

/// Names that display unlike what they are: bidirectional overrides reorder text on screen,
/// zero-width characters hide, and a name of white space looks like none.
#[test]
fn misleading_names_are_refused_escaped_with_their_parent() {
    let error = build_error(Steps::named("t.v1").case(
        "c",
        yes,
        Steps::new().wait_for("re\u{202e}ady", yes),
    ));
    assert_eq!(
        error,
        BuildError::MisleadingName {
            parent: "t.v1/c".into(),
            name: "re\u{202e}ady".into(),
            problem: "contains the bidirectional-override character U+202E".into(),
        }
    );
    let text = error.to_string();
    assert_eq!(
        text,
        "in `t.v1/c`: the name \"re\\u{202e}ady\" contains the bidirectional-override character U+202E; rename it with visible characters only"
    );
    assert!(!text.contains('\u{202e}'), "the message shows it escaped");

    for c in [
        '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2066}', '\u{2069}',
    ] {
        let error = build_error(Steps::named("t.v1").step(format!("a{c}"), noop));
        let problem = format!(
            "contains the bidirectional-override character U+{:04X}",
            u32::from(c)
        );
        assert!(
            matches!(&error, BuildError::MisleadingName { problem: p, .. } if *p == problem),
            "{error}"
        );
    }
    for c in ['\u{200b}', '\u{200c}', '\u{200d}', '\u{2060}', '\u{feff}'] {
        let error = build_error(
            Steps::named("t.v1")
                .step("a", noop)
                .step(format!("a{c}"), noop),
        );
        assert_eq!(
            error,
            BuildError::MisleadingName {
                parent: "t.v1".into(),
                name: format!("a{c}"),
                problem: format!("contains the zero-width character U+{:04X}", u32::from(c)),
            },
            "a zero-width character would make two siblings look alike"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("\"a\\u{{{:x}}}\"", u32::from(c))),
            "{error}"
        );
    }
    for blank in [" ", "   ", "\u{3000}", "\u{a0}\u{2003}"] {
        let error = build_error(Steps::named("t.v1").retry(
            "r",
            RetryPolicy::attempts(2),
            Steps::new().step(blank, noop),
        ));
        assert_eq!(
            error,
            BuildError::MisleadingName {
                parent: "t.v1/r".into(),
                name: blank.into(),
                problem: "is only white space".into(),
            }
        );
    }
    let error = build_error(Steps::named(" "));
    assert!(
        matches!(&error, BuildError::MisleadingName { parent, .. } if parent == "(root)"),
        "{error}"
    );
    // Spaces inside a visible name are fine.
    StepFlow::new(Steps::named("t.v1").step("deploy the app", noop)).unwrap();
}

#[test]
fn duplicate_sibling_names_are_refused_in_every_kind_of_body() {
    let dup = || Steps::new().step("x", noop).wait_for("x", yes);
    let cases: Vec<(Steps, &str)> = vec![
        (Steps::named("t.v1").step("a", noop).step("a", noop), "t.v1"),
        (Steps::named("t.v1").steps(dup().renamed("g")), "t.v1/g"),
        (Steps::named("t.v1").case("c", yes, dup()), "t.v1/c"),
        (Steps::named("t.v1").loop_until("l", yes, dup()), "t.v1/l"),
        (
            Steps::named("t.v1").retry("r", RetryPolicy::attempts(2), dup()),
            "t.v1/r",
        ),
        (
            Steps::named("t.v1").retry(
                "r",
                RetryPolicy::attempts(2),
                Steps::new().case("c", yes, dup()),
            ),
            "t.v1/r/c",
        ),
    ];
    for (steps, parent) in cases {
        let error = build_error(steps);
        let name = if parent == "t.v1" { "a" } else { "x" };
        assert_eq!(
            error,
            BuildError::DuplicateName {
                parent: parent.into(),
                name: name.into()
            }
        );
        assert!(
            error.to_string().contains(&format!("`{parent}`")),
            "{error}"
        );
    }
    // The same name under different parents is fine.
    StepFlow::new(Steps::named("t.v1").step("x", noop).case(
        "c",
        yes,
        Steps::new().step("x", noop),
    ))
    .unwrap();
}

/// A random flow tree for the build property test.
#[derive(Clone, Debug)]
enum Node {
    Step(String),
    Wait(String),
    Group(String, Vec<Node>),
    Case(String, Vec<Node>),
    Loop(String, Vec<Node>),
    Retry(String, Vec<Node>),
}

impl Node {
    fn name(&self) -> &str {
        match self {
            Node::Step(n)
            | Node::Wait(n)
            | Node::Group(n, _)
            | Node::Case(n, _)
            | Node::Loop(n, _)
            | Node::Retry(n, _) => n,
        }
    }

    fn kids(&self) -> &[Node] {
        match self {
            Node::Step(_) | Node::Wait(_) => &[],
            Node::Group(_, k) | Node::Case(_, k) | Node::Loop(_, k) | Node::Retry(_, k) => k,
        }
    }
}

fn names() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        40 => prop::char::range('a', 'd'),
        1 => Just('/'),
        1 => Just(':'),
        1 => prop::char::range('\0', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{9f}'),
        1 => Just('"'),
        1 => Just('\\'),
        1 => Just(' '),
        1 => prop::sample::select(vec!['\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{3000}']),
        4 => any::<char>(),
    ];
    prop_oneof![
        1 => Just(String::new()),
        6 => prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
        24 => prop::collection::vec(ch, 1..4).prop_map(|c| c.into_iter().collect()),
    ]
}

fn nodes() -> impl Strategy<Value = Vec<Node>> {
    let leaf = prop_oneof![names().prop_map(Node::Step), names().prop_map(Node::Wait)];
    let node = leaf.prop_recursive(3, 16, 3, |inner| {
        let kids = prop::collection::vec(inner, 0..3);
        prop_oneof![
            (names(), kids.clone()).prop_map(|(n, k)| Node::Group(n, k)),
            (names(), kids.clone()).prop_map(|(n, k)| Node::Case(n, k)),
            (names(), kids.clone()).prop_map(|(n, k)| Node::Loop(n, k)),
            (names(), kids).prop_map(|(n, k)| Node::Retry(n, k)),
        ]
    });
    prop::collection::vec(node, 0..4)
}

fn to_steps(name: &str, nodes: &[Node]) -> Steps {
    nodes
        .iter()
        .fold(Steps::named(name), |steps, node| match node {
            Node::Step(n) => steps.step(n.as_str(), noop),
            Node::Wait(n) => steps.wait_for(n.as_str(), yes),
            Node::Group(n, k) => steps.steps(to_steps(n, k)),
            Node::Case(n, k) => steps.case(n.as_str(), yes, to_steps("", k)),
            Node::Loop(n, k) => steps.loop_until(n.as_str(), yes, to_steps("", k)),
            Node::Retry(n, k) => steps.retry(n.as_str(), RetryPolicy::attempts(2), to_steps("", k)),
        })
}

fn name_error(parent: &str, position: usize, name: &str) -> Option<BuildError> {
    let what = if name.is_empty() {
        return Some(BuildError::EmptyName {
            parent: parent.into(),
            position,
        });
    } else if name.contains('/') {
        "`/`"
    } else if name.contains(':') {
        "`:`"
    } else if name.chars().any(char::is_control) {
        "a control character"
    } else {
        return misleading(name).map(|problem| BuildError::MisleadingName {
            parent: parent.into(),
            name: name.into(),
            problem,
        });
    };
    Some(BuildError::BadName {
        parent: parent.into(),
        name: name.into(),
        what,
    })
}

/// The documented rule for misleading names, written out again for the property test.
fn misleading(name: &str) -> Option<String> {
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let zero_width = |c: char| matches!(c, '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}');
    if let Some(c) = name.chars().find(|&c| bidi(c) || zero_width(c)) {
        let what = if bidi(c) {
            "bidirectional-override"
        } else {
            "zero-width"
        };
        return Some(format!(
            "contains the {what} character U+{:04X}",
            u32::from(c)
        ));
    }
    name.chars()
        .all(char::is_whitespace)
        .then(|| "is only white space".into())
}

/// The error the builder documents for this tree: siblings are checked first, then each child's
/// body, depth first.
fn expected_error(parent: &str, nodes: &[Node]) -> Option<BuildError> {
    let mut seen = HashSet::new();
    for (i, node) in nodes.iter().enumerate() {
        if let Some(error) = name_error(parent, i + 1, node.name()) {
            return Some(error);
        }
        if !seen.insert(node.name()) {
            return Some(BuildError::DuplicateName {
                parent: parent.into(),
                name: node.name().into(),
            });
        }
    }
    nodes
        .iter()
        .find_map(|node| expected_error(&format!("{parent}/{}", node.name()), node.kids()))
}

/// Polls a future that never waits, once (the model's own futures never pend).
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a step function pended"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_names_build_or_are_refused_without_panicking(root in names(), tree in nodes()) {
        let expected = name_error("(root)", 1, &root).or_else(|| expected_error(&root, &tree));
        let built = StepFlow::new(to_steps(&root, &tree));
        match (built, expected) {
            (Ok(flow), None) => {
                prop_assert!(flow.to_mermaid().starts_with("stateDiagram-v2\n"));
                prop_assert!(flow.to_dot().starts_with("digraph "));
                let ctx = RunContext::new("prop");
                let mut state = flow.new_state(json!({}));
                for _ in 0..200 {
                    if flow.is_completed(&state) {
                        break;
                    }
                    state = now(flow.apply(&ctx, state));
                }
                prop_assert!(flow.is_completed(&state), "{:?}", state);
            }
            (Err(error), Some(expected)) => prop_assert_eq!(error, expected),
            (Ok(_), Some(expected)) => prop_assert!(false, "built, but expected {}", expected),
            (Err(error), None) => prop_assert!(false, "refused a valid flow: {}", error),
        }
    }
}
