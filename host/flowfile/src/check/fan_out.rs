//! The items that fan out: a `parallel`'s branches and a `for-each`'s pointers and
//! concurrency, checked here so that what the parser accepts the model builds, and every
//! mistake is reported at its place in the file.

use std::collections::HashMap;

use stepflow_model::{PointerError, pointer_tokens, split_instance};

use super::Checker;
use crate::diagnostic::{Diagnostic, Position};
use crate::document::{BranchDoc, ItemDoc, Located, PointerText};
use crate::types::{Branch, ForEachDecl, Item, ItemKind};

impl Checker<'_> {
    /// The branches of the `parallel` called `name`, whose path is `path`: at least one, each
    /// with a valid name unique among them and at least one item.
    pub(super) fn branches(
        &self,
        doc: &Located<Vec<Located<BranchDoc>>>,
        name: &str,
        path: &str,
    ) -> Result<Vec<Branch>, Diagnostic> {
        let plugin = self.plugins.first().map_or("deploy", String::as_str);
        if doc.value.is_empty() {
            return Err(self.error(
                doc.at,
                format!("the parallel `{name}` has no branches"),
                format!(
                    "list the branches under `parallel:`, each with a `name:` and its `steps:`, e.g. `- {{ name: eu, steps: [{{ do: {plugin}.deploy }}] }}`"
                ),
            ));
        }
        let mut branches: Vec<Branch> = Vec::with_capacity(doc.value.len());
        let mut seen: HashMap<String, Position> = HashMap::new();
        for (i, branch) in doc.value.iter().enumerate() {
            let Some(branch_name) = &branch.value.name else {
                return Err(self.error(
                    branch.at,
                    format!("branch {} of the parallel `{name}` needs a `name`", i + 1),
                    format!(
                        "add e.g. `name: eu`; it is part of the path of every step inside the branch (`{path}/eu/...`)"
                    ),
                ));
            };
            let branch_name_at = branch_name.at;
            let branch_name = &branch_name.value.0;
            self.name(branch_name, branch_name_at, "the branch name")?;
            if let Some(first) = seen.get(branch_name) {
                return Err(self.error(
                    branch_name_at,
                    format!(
                        "two branches of the parallel `{name}` are named `{branch_name}` (the first at line {})",
                        first.line
                    ),
                    format!(
                        "rename one of them: each branch's path (`{path}/{branch_name}`) must be unique"
                    ),
                ));
            }
            seen.insert(branch_name.clone(), branch_name_at);
            let steps = match &branch.value.steps {
                None => {
                    return Err(self.error(
                        branch.at,
                        format!("the branch `{branch_name}` needs `steps:`, the items it runs"),
                        "add `steps:` with a list of items below it",
                    ));
                }
                Some(steps) if steps.value.is_empty() => {
                    return Err(self.error(
                        steps.at,
                        format!("the branch `{branch_name}` has no steps"),
                        format!(
                            "give it at least one item, e.g. `- do: {plugin}.deploy`, or leave the branch out"
                        ),
                    ));
                }
                Some(steps) => steps,
            };
            let steps = self.items(&steps.value, &format!("{path}/{branch_name}"))?;
            branches.push(Branch {
                name: branch_name.clone(),
                at: branch.at,
                name_at: branch_name_at,
                steps,
            });
        }
        Ok(branches)
    }

    /// A `for-each` over `over`: both pointers valid, `results` neither the whole document
    /// nor overlapping `over`, `concurrency` at least 1.
    pub(super) fn for_each(
        &self,
        doc: &Located<ItemDoc>,
        over: &Located<PointerText>,
    ) -> Result<ForEachDecl, Diagnostic> {
        let item = &doc.value;
        let over_tokens = self.pointer(over, "for-each")?;
        let Some(results) = &item.results else {
            return Err(self.error(
                doc.at,
                "a `for-each` needs `results:`, the array that collects what its steps return for each element",
                "add e.g. `results: /processed`: element i of that array gets what the steps for element i return",
            ));
        };
        let result_tokens = self.pointer(results, "results")?;
        if result_tokens.is_empty() {
            return Err(self.error(
                results.at,
                "`results` is `\"\"`, the whole data document, which cannot become the results array",
                "name a place in the data for the results array, e.g. `results: /processed`",
            ));
        }
        let (o, r) = (&over.value.0, &results.value.0);
        // An empty `over` is the whole document: the instances read it once, at the start, and
        // the results go inside it, as the model allows.
        if !over_tokens.is_empty() {
            let problem = if result_tokens == over_tokens {
                Some(format!(
                    "`results` is `{}`, the array the for-each runs over: the results would overwrite its elements",
                    r.escape_debug()
                ))
            } else if result_tokens.starts_with(&over_tokens) {
                Some(format!(
                    "`results` (`{}`) lies inside the array the for-each runs over (`{}`): the results would overwrite its elements",
                    r.escape_debug(),
                    o.escape_debug()
                ))
            } else if over_tokens.starts_with(&result_tokens) {
                Some(format!(
                    "`results` (`{}`) contains the array the for-each runs over (`{}`): the results array would replace it",
                    r.escape_debug(),
                    o.escape_debug()
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.error(
                    results.at,
                    problem,
                    format!(
                        "collect the results outside `{0}`, e.g. `results: {0}-results`",
                        o.escape_debug()
                    ),
                ));
            }
        }
        let concurrency = match &item.concurrency {
            Some(c) if c.value.0 == 0 => {
                return Err(self.error(
                    c.at,
                    "`concurrency` must be at least 1",
                    "it is how many elements are processed at once; leave it out to process them one after the other",
                ));
            }
            Some(c) => c.value.0,
            None => 1,
        };
        Ok(ForEachDecl {
            over: o.clone(),
            over_at: over.at,
            results: r.clone(),
            results_at: results.at,
            concurrency,
        })
    }

    /// The tokens of the JSON pointer written under `key`, or where and why it is not one.
    fn pointer(&self, text: &Located<PointerText>, key: &str) -> Result<Vec<String>, Diagnostic> {
        let value = text.value.0.as_str();
        pointer_tokens(value).map_err(|problem| match problem {
            PointerError::NoSlash => {
                let plain = value
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_');
                let example = if plain { value } else { "files" };
                self.error(
                    text.at,
                    format!(
                        "`{key}: {}` is not a JSON pointer: it does not start with `/`",
                        value.escape_debug()
                    ),
                    format!(
                        "a JSON pointer goes down from the top of the data document, a `/` before each key or index, e.g. `{key}: /{example}`"
                    ),
                )
            }
            PointerError::Tilde => self.error(
                text.at,
                format!(
                    "`{key}: {}` is not a JSON pointer: `~` must be followed by `0` or `1`",
                    value.escape_debug()
                ),
                "inside a key write `~0` for `~` and `~1` for `/`, e.g. `/a~1b` for the key `a/b`",
            ),
        })
    }
}

impl Checker<'_> {
    /// Refuses an item named like an instance of a sibling `for-each` (`files#3` beside
    /// `files`): both would have the same step path.
    pub(super) fn instance_names(&self, items: &[Item]) -> Result<(), Diagnostic> {
        for item in items {
            let Some((base, index)) = split_instance(&item.name) else {
                continue;
            };
            let each = items
                .iter()
                .find(|other| matches!(other.kind, ItemKind::ForEach { .. }) && other.name == base);
            if let Some(each) = each {
                return Err(self.error(
                    item.name_at,
                    format!(
                        "the name `{}` is how step paths spell element {index} of the for-each `{base}` (line {})",
                        item.name, each.name_at.line
                    ),
                    format!(
                        "rename one of them; the steps that `{base}` runs for element {index} have paths under `{base}#{index}`"
                    ),
                ));
            }
        }
        Ok(())
    }
}
