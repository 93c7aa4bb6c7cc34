//! Strands: the positions of a run that is in several places at once.
//!
//! A run has one strand until it reaches a `parallel` (one strand per branch) or a `for_each`
//! (one per instance in flight). Each strand is a cursor event; inside a `for_each` body it also
//! carries the instance numbers, spelled in its path after the for-each's name
//! (`start:flow/files#3/process`). This module knows how such events are written and read, what
//! the steps of an instance see and where their patches land, and how the fan-out transitions
//! (`Fork`, `Join`, `Each`, `EachDone`) move strands; `flow.rs` applies the rest.

use std::sync::Arc;

use serde_json::Value;

use crate::flow::StepFlow;
use crate::graph::{self, ItemKind, Next, completed, scope_of, split_instance, start};
use crate::state::{EachProgress, Event, State};

/// One position of a run: an event of the compiled flow and, inside `for_each` bodies, the
/// instance numbers (outermost first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Strand {
    pub id: u32,
    pub instance: Vec<u32>,
}

impl Strand {
    pub(crate) fn at(id: u32) -> Self {
        Strand {
            id,
            instance: Vec::new(),
        }
    }
}

/// What an apply works on: the strands (a slot is `None` once its strand has ended) and when
/// each may go on.
pub(crate) struct Work {
    pub strands: Vec<Option<Strand>>,
    pub due: Vec<Option<u64>>,
    /// For a strand that a retry group's restart ended: the group's path and attempt, which
    /// its own call's error (if it had one in the same apply) is reported as.
    pub ended_by: Vec<Option<(Arc<str>, u32)>>,
    /// Whether an error of this apply already stopped the run: the first one is the run's.
    pub failed: bool,
}

impl Work {
    pub(crate) fn new(strands: Vec<Strand>, due: Vec<Option<u64>>) -> Self {
        let n = strands.len();
        Work {
            strands: strands.into_iter().map(Some).collect(),
            due,
            ended_by: vec![None; n],
            failed: false,
        }
    }

    /// Puts `extra` right after slot `k`, in order.
    fn insert_after(&mut self, k: usize, extra: Vec<Strand>) {
        let n = extra.len();
        let at = k + 1;
        self.strands.splice(at..at, extra.into_iter().map(Some));
        self.due.splice(at..at, std::iter::repeat_n(None, n));
        self.ended_by.splice(at..at, std::iter::repeat_n(None, n));
    }

    /// Ends the strand in slot `k`.
    pub(crate) fn end(&mut self, k: usize) {
        self.strands[k] = None;
        self.due[k] = None;
    }
}

/// Why a `for_each` could not start.
pub(crate) struct EachError {
    pub step: Arc<str>,
    pub message: String,
}

impl StepFlow {
    /// The path of `scope` in `instance` (`flow/files#3/process`); the plain path when the
    /// scope is in no `for_each` body.
    pub(crate) fn path(&self, scope: u32, instance: &[u32]) -> Arc<str> {
        let s = &self.graph().scopes[scope as usize];
        if s.instanced.is_empty() {
            return s.path.clone();
        }
        render(&s.path, &s.instanced, instance).into()
    }

    /// The cursor event of a strand.
    pub(crate) fn strand_event(&self, strand: &Strand) -> Event {
        if strand.instance.is_empty() {
            return self.event(strand.id);
        }
        let scope = &self.graph().scopes[scope_of(strand.id) as usize];
        let kind = if strand.id == start(scope_of(strand.id)) {
            "start:"
        } else {
            "completed:"
        };
        let path = render(&scope.path, &scope.instanced, &strand.instance);
        Event {
            name: format!("{kind}{path}").into(),
            slot: Some((self.graph().tag, strand.id)),
            instance: strand.instance.clone(),
        }
    }

    /// The strand a cursor event stands for, if this flow has its event.
    pub(crate) fn resolve(&self, event: &Event) -> Option<Strand> {
        let g = self.graph();
        match event.slot {
            Some((tag, id)) if tag == g.tag => Some(Strand {
                id,
                instance: event.instance.clone(),
            }),
            _ => match g.by_name.get(&event.name) {
                Some(&id) => Some(Strand::at(id)),
                None if g.fans_out => self.parse_instance_event(&event.name),
                None => None,
            },
        }
    }

    /// Reads `start:flow/files#3/process`: each path segment is a child of the scope before it,
    /// or `<for-each>#<n>` for instance `n` of a for-each child (the flow refuses names that
    /// could be read both ways).
    fn parse_instance_event(&self, name: &str) -> Option<Strand> {
        let g = self.graph();
        let (kind, path) = name.split_once(':')?;
        let mut segments = path.split('/');
        let mut template = segments.next()?.to_string();
        if template != *g.scopes[0].path {
            return None;
        }
        let mut instance = Vec::new();
        for segment in segments {
            let plain = format!("{template}/{segment}");
            if g.by_path.contains_key(plain.as_str()) {
                template = plain;
                continue;
            }
            let (base, n) = split_instance(segment)?;
            let each = format!("{template}/{base}");
            let &scope = g.by_path.get(each.as_str())?;
            if g.scopes[scope as usize].kind != ItemKind::ForEach {
                return None;
            }
            instance.push(n);
            template = each;
        }
        let &scope = g.by_path.get(template.as_str())?;
        if g.scopes[scope as usize].instanced.len() != instance.len() {
            return None;
        }
        let id = match kind {
            "start" => start(scope),
            "completed" => completed(scope),
            _ => return None,
        };
        Some(Strand { id, instance })
    }

    /// The data a call of `scope` in `instance` sees: the run's data document, with `item` and
    /// `index` set to the instance's element and number (the innermost `for_each`'s). A data
    /// document that is not an object is seen as an object of those two fields.
    pub(crate) fn view(&self, data: &Arc<Value>, scope: u32, instance: &[u32]) -> Arc<Value> {
        let s = &self.graph().scopes[scope as usize];
        if s.instanced.is_empty() || instance.is_empty() {
            return data.clone();
        }
        let mut view = (**data).clone();
        for (&(each, _), &i) in s.instanced.iter().zip(instance) {
            let spec = self.spec(each);
            let item = lookup(&view, &spec.over)
                .and_then(|array| array.get(i as usize))
                .cloned()
                .unwrap_or(Value::Null);
            if !view.is_object() {
                view = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(map) = &mut view {
                map.insert("item".into(), item);
                map.insert("index".into(), Value::from(i));
            }
        }
        Arc::new(view)
    }

    /// Where the patches of a call of `scope` in `instance` land: the document itself, or for
    /// an instance element `i` of its `for_each`'s results (inside the outer instance's place
    /// when nested).
    pub(crate) fn place(&self, scope: u32, instance: &[u32]) -> Vec<String> {
        let s = &self.graph().scopes[scope as usize];
        let mut tokens = Vec::new();
        for (&(each, _), &i) in s.instanced.iter().zip(instance) {
            tokens.extend(self.spec(each).results.iter().cloned());
            tokens.push(i.to_string());
        }
        tokens
    }

    /// Merges a call's patch where its strand's patches land.
    pub(crate) fn merge_patch(
        &self,
        state: &mut State,
        scope: u32,
        instance: &[u32],
        patch: &Value,
    ) {
        let data = Arc::make_mut(&mut state.data);
        if instance.is_empty() {
            json_patch::merge(data, patch);
        } else {
            json_patch::merge(place_mut(data, &self.place(scope, instance)), patch);
        }
    }

    fn spec(&self, each: u32) -> &graph::EachSpec {
        match &self.graph().scopes[each as usize].each {
            Some(spec) => spec,
            None => unreachable!("scope {each} is a for-each and has its spec"),
        }
    }

    /// The fan-out transition from the strand in slot `k`, if its event has one: moves strands
    /// and returns true, or returns false when the strand must wait (a branch waiting for its
    /// siblings) or this is no fan-out transition. An error means a `for_each` could not start.
    pub(crate) fn fan_out(
        &self,
        state: &mut State,
        work: &mut Work,
        k: usize,
    ) -> Result<bool, EachError> {
        let Some(strand) = work.strands[k].clone() else {
            return Ok(false);
        };
        let g = self.graph();
        match g.next[strand.id as usize] {
            Next::Fork(p) => {
                let mut branches = g.scopes[p as usize].branches.iter().map(|&b| Strand {
                    id: start(b),
                    instance: strand.instance.clone(),
                });
                let first = branches.next();
                let rest: Vec<Strand> = branches.collect();
                work.strands[k] = first;
                work.insert_after(k, rest);
                Ok(true)
            }
            Next::Join(p) => {
                let branches = &g.scopes[p as usize].branches;
                let waiting: Vec<usize> = branches
                    .iter()
                    .filter_map(|&b| {
                        work.strands.iter().position(|s| {
                            s.as_ref().is_some_and(|s| {
                                s.id == completed(b) && s.instance == strand.instance
                            })
                        })
                    })
                    .collect();
                if waiting.len() < branches.len() {
                    return Ok(false);
                }
                for j in waiting {
                    work.end(j);
                }
                work.strands[k] = Some(Strand {
                    id: completed(p),
                    instance: strand.instance,
                });
                Ok(true)
            }
            Next::Each(f) => {
                let instances = self.start_each(state, f, &strand.instance)?;
                if instances.is_empty() {
                    work.strands[k] = Some(Strand {
                        id: completed(f),
                        instance: strand.instance,
                    });
                } else {
                    let mut instances = instances.into_iter();
                    work.strands[k] = instances.next();
                    work.insert_after(k, instances.collect());
                }
                Ok(true)
            }
            Next::EachDone(f) => {
                let outer = &strand.instance[..strand.instance.len().saturating_sub(1)];
                let key = self.path(f, outer);
                let progress = state.each.entry(key.clone()).or_default();
                progress.done += 1;
                if progress.started < progress.count {
                    let mut instance = outer.to_vec();
                    instance.push(u32::try_from(progress.started).unwrap_or(u32::MAX));
                    progress.started += 1;
                    work.strands[k] = Some(Strand {
                        id: self.spec(f).entry,
                        instance,
                    });
                } else if progress.done >= progress.count {
                    state.each.remove(&key);
                    work.strands[k] = Some(Strand {
                        id: completed(f),
                        instance: outer.to_vec(),
                    });
                } else {
                    work.end(k);
                }
                Ok(true)
            }
            Next::End | Next::Static(_) | Next::Dynamic(_) => Ok(false),
        }
    }

    /// Starts the `for_each` scope `f` in `instance`: reads its array, fixes the count, creates
    /// the results array (one `null` per element) and returns the first instances.
    fn start_each(
        &self,
        state: &mut State,
        f: u32,
        instance: &[u32],
    ) -> Result<Vec<Strand>, EachError> {
        let spec = self.spec(f);
        let path = self.path(f, instance);
        let view = self.view(&state.data, f, instance);
        let count = match lookup(&view, &spec.over) {
            Some(Value::Array(items)) => items.len(),
            Some(other) => {
                return Err(EachError {
                    step: path,
                    message: format!(
                        "it runs over `{}`, which holds {} instead of an array; make the step before it write an array there",
                        pointer_text(&spec.over),
                        describe(other)
                    ),
                });
            }
            None => {
                return Err(EachError {
                    step: path,
                    message: format!(
                        "it runs over `{}`, which is not in the data document; make the step before it (or the run's data) put an array there",
                        pointer_text(&spec.over)
                    ),
                });
            }
        };
        let mut results = self.place(f, instance);
        results.extend(spec.results.iter().cloned());
        *place_mut(Arc::make_mut(&mut state.data), &results) =
            Value::Array(vec![Value::Null; count]);
        let first = count.min(spec.concurrency as usize);
        let progress = EachProgress {
            count: count as u64,
            started: first as u64,
            done: 0,
        };
        if count > 0 {
            state.each.insert(path, progress);
        }
        Ok((0..first)
            .map(|i| {
                let mut inner = instance.to_vec();
                inner.push(u32::try_from(i).unwrap_or(u32::MAX));
                Strand {
                    id: spec.entry,
                    instance: inner,
                }
            })
            .collect())
    }
}

/// `path` with `#<n>` after each `for_each` it is in.
fn render(path: &str, instanced: &[(u32, usize)], instance: &[u32]) -> String {
    let mut out = String::with_capacity(path.len() + 4 * instance.len());
    let mut from = 0;
    for (&(_, at), n) in instanced.iter().zip(instance) {
        out.push_str(&path[from..at]);
        out.push('#');
        out.push_str(&n.to_string());
        from = at;
    }
    out.push_str(&path[from..]);
    out
}

/// The value at the pointer `tokens`, if there is one.
fn lookup<'a>(value: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(value, |at, token| match at {
        Value::Object(map) => map.get(token),
        Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The value at the pointer `tokens`, made where missing: an array index past the end pads
/// with `null`s, anything that is not a container becomes an object.
fn place_mut<'a>(value: &'a mut Value, tokens: &[String]) -> &'a mut Value {
    let mut at = value;
    for token in tokens {
        let index = match &*at {
            Value::Array(_) => token.parse::<usize>().ok(),
            _ => None,
        };
        if index.is_none() && !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        at = match (at, index) {
            (Value::Array(items), Some(i)) => {
                if items.len() <= i {
                    items.resize(i + 1, Value::Null);
                }
                &mut items[i]
            }
            (Value::Object(map), _) => map.entry(token.clone()).or_insert(Value::Null),
            (other, _) => other,
        };
    }
    at
}

/// The pointer as written (`/files`).
fn pointer_text(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// "an object", "the number 3": for messages about the wrong kind of value.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_place_is_made_where_missing() {
        let mut data = json!({ "r": [null, 1], "x": 3 });
        *place_mut(&mut data, &["r".into(), "3".into(), "a".into()]) = json!(true);
        *place_mut(&mut data, &["x".into(), "y".into()]) = json!(2);
        assert_eq!(
            data,
            json!({ "r": [null, 1, null, { "a": true }], "x": { "y": 2 } })
        );
    }

    #[test]
    fn paths_put_instance_numbers_after_each_for_each() {
        let path = "f/files/parts/x";
        assert_eq!(
            render(path, &[(1, 7), (2, 13)], &[3, 14]),
            "f/files#3/parts#14/x"
        );
    }
}
