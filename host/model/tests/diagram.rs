//! Introspection: every transition with its destinations and reasons, and the Mermaid and DOT
//! diagrams drawn from them.

mod common;

use stepflow_model::*;

use common::diagram_flow;

#[test]
fn transitions_list_every_destination_with_its_reason() {
    let flow = diagram_flow("w");
    let transitions = flow.transitions();
    let find = |source: &str| {
        transitions
            .iter()
            .find(|t| t.source == source)
            .unwrap_or_else(|| panic!("no transition from {source}"))
    };
    let dests = |source: &str| -> Vec<(String, String)> {
        find(source)
            .destinations
            .iter()
            .map(|d| (d.event.clone(), d.reason.clone()))
            .collect()
    };
    let pair = |e: &str, r: &str| (e.to_string(), r.to_string());

    assert_eq!(
        find("start:t.v1/a").call,
        Some((CallKind::Step, "noop".into()))
    );
    assert_eq!(dests("start:t.v1/a"), [pair("completed:t.v1/a", "done")]);
    assert_eq!(find("completed:t.v1/a").call, None);
    assert_eq!(dests("completed:t.v1/a"), [pair("start:t.v1/r", "next")]);
    assert_eq!(
        dests("start:t.v1/r/w"),
        [
            pair("completed:t.v1/r/w", "ready"),
            pair("start:t.v1/r/w", "not yet"),
            pair("start:t.v1/r", "error: retry t.v1/r"),
        ]
    );
    assert_eq!(
        dests("start:t.v1/r/c"),
        [
            pair("start:t.v1/r/c/x", "true"),
            pair("completed:t.v1/r/c", "false"),
            pair("start:t.v1/r", "error: retry t.v1/r"),
        ]
    );
    assert_eq!(
        find("completed:t.v1/l/y").call,
        Some((CallKind::LoopUntil, "yes".into()))
    );
    assert_eq!(
        dests("completed:t.v1/l/y"),
        [
            pair("completed:t.v1/l", "done"),
            pair("start:t.v1/l/y", "again")
        ]
    );
    assert!(
        transitions.iter().all(|t| t.source != "completed:t.v1"),
        "nothing leaves the end"
    );
}

#[test]
fn diagrams_draw_every_destination() {
    let flow = diagram_flow("w");
    let destinations: usize = flow
        .transitions()
        .iter()
        .map(|t| t.destinations.len())
        .sum();

    let mermaid = flow.to_mermaid();
    assert!(mermaid.starts_with("stateDiagram-v2\n"), "{mermaid}");
    let edges = mermaid
        .lines()
        .filter(|l| l.contains(" --> ") && !l.contains("[*]"))
        .count();
    assert_eq!(edges, destinations, "{mermaid}");
    assert!(
        mermaid.contains("state \"start:t.v1/r/w\" as e"),
        "{mermaid}"
    );
    assert!(mermaid.contains("[*] --> e0"));

    let dot = flow.to_dot();
    assert!(dot.starts_with("digraph \"t.v1\" {\n"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    assert_eq!(dot.matches(" -> ").count(), destinations, "{dot}");
    assert!(dot.contains("\"start:t.v1/r/w\" -> \"completed:t.v1/r/w\" [label=\"wait ready\""));
}
