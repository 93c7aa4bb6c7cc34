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
                Next::Fork(p) => out.push(TransitionInfo {
                    source,
                    call: None,
                    destinations: g.scopes[p as usize]
                        .branches
                        .iter()
                        .map(|&b| to(b * 2, "fork"))
                        .collect(),
                }),
                Next::Join(p) => out.push(TransitionInfo {
                    source,
                    call: None,
                    destinations: vec![to(p * 2 + 1, "join")],
                }),
                Next::Each(f) | Next::EachDone(f) => {
                    let entry = g.scopes[f as usize]
                        .each
                        .as_ref()
                        .map_or(f * 2 + 1, |e| e.entry);
                    let (again, done) = match next {
                        Next::Each(_) => ("for each", "no elements"),
                        _ => ("next element", "all done"),
                    };
                    out.push(TransitionInfo {
                        source,
                        call: None,
                        destinations: vec![to(entry, again), to(f * 2 + 1, done)],
                    });
                }
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

    /// The flow as a Mermaid `stateDiagram-v2` (renders on GitHub). A `parallel` shows as a
    /// `<<fork>>` bar into its branches and a `<<join>>` bar out of them.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        let id = |event: &str| self.event_index(event);
        for (i, name) in self.graph().names.iter().enumerate() {
            let _ = writeln!(out, "    state \"{}\" as e{i}", name.replace('"', "'"));
        }
        for (bar, kind) in self.bars() {
            let _ = writeln!(out, "    state {bar} <<{kind}>>");
        }
        let _ = writeln!(out, "    [*] --> e0");
        for t in self.transitions() {
            let from = format!("e{}", id(&t.source));
            for (from, to, label) in self.edges(&t, from, |e| format!("e{}", id(e))) {
                let _ = writeln!(out, "    {from} --> {to} : {label}");
            }
        }
        let _ = writeln!(out, "    e1 --> [*]");
        out
    }

    /// The flow as a Graphviz DOT digraph; a `parallel`'s fork and join are black bars.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", escape(self.name()));
        let _ = writeln!(out, "    rankdir=TB;\n    node [shape=box, style=rounded];");
        for (bar, kind) in self.bars() {
            let _ = writeln!(
                out,
                "    \"{bar}\" [label=\"{kind}\", shape=box, style=filled, fillcolor=black, fontcolor=white, height=0.1, fontsize=8];"
            );
        }
        for t in self.transitions() {
            let style = if t.call.is_some() { "solid" } else { "dashed" };
            let from = t.source.clone();
            for (from, to, label) in self.edges(&t, from, |e| e.to_string()) {
                let _ = writeln!(
                    out,
                    "    \"{}\" -> \"{}\" [label=\"{}\", style={style}];",
                    escape(&from),
                    escape(&to),
                    escape(&label)
                );
            }
        }
        out.push_str("}\n");
        out
    }

    /// The fork and join bar of every `parallel`: (node name, `fork` or `join`).
    fn bars(&self) -> Vec<(String, &'static str)> {
        let g = self.graph();
        (0..g.scopes.len())
            .filter(|&s| !g.scopes[s].branches.is_empty())
            .flat_map(|s| [(format!("fork{s}"), "fork"), (format!("join{s}"), "join")])
            .collect()
    }

    /// The edges that draw transition `t` (leaving node `from`): one per destination, except
    /// that a fork goes through its bar, and so does a join.
    fn edges(
        &self,
        t: &TransitionInfo,
        from: String,
        node: impl Fn(&str) -> String,
    ) -> Vec<(String, String, String)> {
        let g = self.graph();
        let source = g.by_name.get(t.source.as_str()).copied();
        match source.map(|e| g.next[e as usize]) {
            Some(Next::Fork(p)) => {
                let bar = format!("fork{p}");
                let mut edges = vec![(from, bar.clone(), "fork".to_string())];
                for d in &t.destinations {
                    edges.push((bar.clone(), node(&d.event), "branch".to_string()));
                }
                edges
            }
            Some(Next::Join(p)) => {
                let bar = format!("join{p}");
                let mut edges = vec![(from, bar.clone(), "branch done".to_string())];
                // The bar's way out is drawn once, from the first branch's transition.
                if g.scopes[p as usize].branches.first().map(|&b| b * 2 + 1) == source {
                    for d in &t.destinations {
                        edges.push((bar.clone(), node(&d.event), "all done".to_string()));
                    }
                }
                edges
            }
            _ => t
                .destinations
                .iter()
                .map(|d| {
                    let label = match &t.call {
                        Some((kind, _)) => format!("{} {}", kind_word(*kind), d.reason),
                        None => d.reason.clone(),
                    };
                    (from.clone(), node(&d.event), label)
                })
                .collect(),
        }
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
