//! Introspection: the transitions of a flow with their possible destinations, and diagrams
//! drawn from them (Mermaid `stateDiagram-v2`, Graphviz DOT).

use std::fmt::Write;

use serde::Serialize;

use crate::flow::StepFlow;
use crate::graph::{Call, CallKind, Next};

/// One transition of a flow, as diagrams and tools see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TransitionInfo {
    /// The event it leaves from.
    pub source: String,
    /// The function it calls, if any: its kind and label.
    pub call: Option<(CallKind, String)>,
    /// Where it can go, and why.
    pub destinations: Vec<Destination>,
}

/// A possible destination of a transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// The event.
    pub event: String,
    /// When this destination is taken.
    pub reason: String,
}

impl StepFlow {
    /// Every transition of the flow, in definition order.
    pub fn transitions(&self) -> Vec<TransitionInfo> {
        let g = self.graph();
        let name = |id: u32| g.names[id as usize].to_string();
        let to = |id: u32, reason: &str| Destination {
            event: name(id),
            reason: reason.to_string(),
        };
        let mut out = Vec::new();
        for (at, next) in g.next.iter().enumerate() {
            let source = name(at as u32);
            match *next {
                Next::End => {}
                Next::Static(dest) => out.push(TransitionInfo {
                    source,
                    call: None,
                    destinations: vec![to(dest, "next")],
                }),
                Next::Dynamic(d) => {
                    let dynamic = &g.dynamics[d as usize];
                    let (call, mut destinations) = match &dynamic.call {
                        Call::Action(action) => (
                            (CallKind::Step, action.label()),
                            vec![to(dynamic.yes, "done")],
                        ),
                        Call::Signal(signal) => (
                            (CallKind::WaitFor, format!("signal {signal}")),
                            vec![to(dynamic.yes, "signalled"), to(dynamic.no, "not yet")],
                        ),
                        Call::Condition(condition, kind) => {
                            let (yes, no) = match kind {
                                CallKind::WaitFor => ("ready", "not yet"),
                                CallKind::LoopUntil => ("done", "again"),
                                _ => ("true", "false"),
                            };
                            (
                                (*kind, condition.label()),
                                vec![to(dynamic.yes, yes), to(dynamic.no, no)],
                            )
                        }
                    };
                    let mut retry = dynamic.retry;
                    while let Some(r) = retry {
                        let scope = &g.scopes[r as usize];
                        destinations.push(to(r * 2, &format!("error: retry {}", scope.path)));
                        retry = scope.outer_retry;
                    }
                    out.push(TransitionInfo {
                        source,
                        call: Some(call),
                        destinations,
                    });
                }
            }
        }
        out
    }

    /// The flow as a Mermaid `stateDiagram-v2` (renders on GitHub).
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        let id = |event: &str| self.event_index(event);
        for (i, name) in self.graph().names.iter().enumerate() {
            let _ = writeln!(out, "    state \"{}\" as e{i}", name.replace('"', "'"));
        }
        let _ = writeln!(out, "    [*] --> e0");
        for t in self.transitions() {
            for d in &t.destinations {
                let label = match &t.call {
                    Some((kind, _)) => format!("{} {}", kind_word(*kind), d.reason),
                    None => d.reason.clone(),
                };
                let _ = writeln!(
                    out,
                    "    e{} --> e{} : {label}",
                    id(&t.source),
                    id(&d.event)
                );
            }
        }
        let _ = writeln!(out, "    e1 --> [*]");
        out
    }

    /// The flow as a Graphviz DOT digraph.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", escape(self.name()));
        let _ = writeln!(out, "    rankdir=TB;\n    node [shape=box, style=rounded];");
        for t in self.transitions() {
            for d in &t.destinations {
                let label = match &t.call {
                    Some((kind, _)) => format!("{} {}", kind_word(*kind), d.reason),
                    None => d.reason.clone(),
                };
                let style = if t.call.is_some() { "solid" } else { "dashed" };
                let _ = writeln!(
                    out,
                    "    \"{}\" -> \"{}\" [label=\"{}\", style={style}];",
                    escape(&t.source),
                    escape(&d.event),
                    escape(&label)
                );
            }
        }
        out.push_str("}\n");
        out
    }

    fn event_index(&self, event: &str) -> usize {
        self.graph().by_name.get(event).map_or(0, |&i| i as usize)
    }
}

fn kind_word(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Step => "step",
        CallKind::WaitFor => "wait",
        CallKind::Case => "case",
        CallKind::LoopUntil => "loop",
        CallKind::ErrorHandler => "handler",
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}
