//! Export lookup: what a plugin exports, and finding one function for one use, with an error
//! that names the nearest fit when the name or the shape is wrong.

mod classify;

use stepflow_model::FunctionKind;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, ComponentExportIndex};

use crate::PluginError;
use crate::call::PluginFunction;
use crate::load::Plugin;

/// One exported function and what it is, so a tool can list what a plugin offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// How a flow names it: `fn` at the top level, `interface/fn` inside an exported interface.
    pub name: String,
    /// Its shape, or why it is not a step function.
    pub kind: Result<FunctionKind, String>,
}

impl Plugin {
    /// Every exported function, step function or not (with why not), for listing what a plugin
    /// offers.
    pub fn exports(&self) -> Vec<Export> {
        self.inner.exports.iter().map(|(e, _)| e.clone()).collect()
    }

    /// The function `name` as an action, if it is one: checked when a flow is built, not run.
    pub fn action(&self, name: &str) -> Result<PluginFunction, PluginError> {
        self.function(name, FunctionKind::Action)
    }

    /// The function `name` as a condition, if it is one: checked when a flow is built, not run.
    pub fn condition(&self, name: &str) -> Result<PluginFunction, PluginError> {
        self.function(name, FunctionKind::Condition)
    }

    /// The function `name` as an error handler, if it is one: checked when a flow is built.
    pub fn error_handler(&self, name: &str) -> Result<PluginFunction, PluginError> {
        self.function(name, FunctionKind::ErrorHandler)
    }

    /// Looks `name` up (`fn`, or `interface/fn`; a bare `fn` finds an interface function when it
    /// is the only one by that name) and checks it has the shape `wanted`.
    pub fn function(
        &self,
        name: &str,
        wanted: FunctionKind,
    ) -> Result<PluginFunction, PluginError> {
        let found: Vec<_> = self
            .inner
            .exports
            .iter()
            .filter(|(e, _)| e.name == name || e.name.rsplit('/').next() == Some(name))
            .collect();
        let exact = found.iter().find(|(e, _)| e.name == name);
        let (export, index) = match (exact, found.as_slice()) {
            (Some(hit), _) | (None, [hit]) => *hit,
            (None, []) => {
                return Err(PluginError::NoSuchFunction {
                    plugin: self.name().to_string(),
                    function: name.to_string(),
                    hint: self.hint(name),
                });
            }
            (None, many) => {
                let names: Vec<_> = many.iter().map(|(e, _)| e.name.as_str()).collect();
                return Err(PluginError::NoSuchFunction {
                    plugin: self.name().to_string(),
                    function: name.to_string(),
                    hint: format!(
                        "; several interfaces export it, say which: {}",
                        names.join(", ")
                    ),
                });
            }
        };
        match (&export.kind, index) {
            (Ok(kind), Some(index)) if *kind == wanted => Ok(PluginFunction::new(
                self.inner.clone(),
                &export.name,
                *index,
                wanted,
            )),
            (Ok(kind), _) => Err(PluginError::WrongKind {
                plugin: self.name().to_string(),
                function: export.name.clone(),
                wanted,
                actual: kind.with_article().to_string(),
                signature: wanted.signature(),
            }),
            (Err(why), _) => Err(PluginError::WrongKind {
                plugin: self.name().to_string(),
                function: export.name.clone(),
                wanted,
                actual: format!("not a step function ({why})"),
                signature: wanted.signature(),
            }),
        }
    }

    /// The end of a "no such function" message: the nearest step function, or all of them.
    fn hint(&self, name: &str) -> String {
        let steps: Vec<String> = self
            .inner
            .exports
            .iter()
            .filter_map(|(e, _)| {
                e.kind
                    .as_ref()
                    .ok()
                    .map(|k| format!("{} ({})", e.name, k.with_article()))
            })
            .collect();
        if steps.is_empty() {
            return "; it exports no step functions".into();
        }
        let close = steps
            .iter()
            .find(|s| s.starts_with(name) || name.starts_with(s.split(' ').next().unwrap_or("")));
        match close {
            Some(c) => format!("; did you mean {c}?"),
            None => format!("; it has: {}", steps.join(", ")),
        }
    }
}

/// Every function the component exports, top level and one interface deep, classified, with
/// the index a call looks it up by (`None` when wasmtime cannot index it).
pub(crate) fn read_exports(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Vec<(Export, Option<ComponentExportIndex>)> {
    let mut out = Vec::new();
    for (name, ext) in component.component_type().exports(engine) {
        match ext.ty {
            ComponentItem::ComponentFunc(func) => {
                let index = component.get_export_index(None, name);
                out.push((
                    Export {
                        name: name.to_string(),
                        kind: classify::classify(&func),
                    },
                    index,
                ));
            }
            ComponentItem::ComponentInstance(instance) => {
                let iface = component.get_export_index(None, name);
                // `pkg:name/iface@1.0.0` is named `iface` in flows.
                let short = name
                    .rsplit('/')
                    .next()
                    .unwrap_or(name)
                    .split('@')
                    .next()
                    .unwrap_or(name);
                for (fname, fext) in instance.exports(engine) {
                    if let ComponentItem::ComponentFunc(func) = fext.ty {
                        let index = iface
                            .as_ref()
                            .and_then(|i| component.get_export_index(Some(i), fname));
                        out.push((
                            Export {
                                name: format!("{short}/{fname}"),
                                kind: classify::classify(&func),
                            },
                            index,
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}
