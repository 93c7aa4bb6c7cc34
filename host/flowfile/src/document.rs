//! The flow file format as serde reads it and as the JSON Schema describes it: one set of types
//! for both, so the schema cannot drift from the parser. The doc comments here become the
//! schema's descriptions (what an editor shows on hover).
//!
//! These types only mirror the YAML; `check.rs` checks them and turns them into the
//! public [`crate::FlowFile`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::diagnostic::{Position, with_hint};
use crate::units::{Period, Size};

/// A value with the place in the file where it was written (where it was used, for an alias).
#[derive(Clone, Debug)]
pub(crate) struct Located<T> {
    pub(crate) value: T,
    pub(crate) at: Position,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        Ok(Located {
            value: spanned.value,
            at: Position::new(
                spanned.referenced.line() as usize,
                spanned.referenced.column() as usize,
            ),
        })
    }
}

/// The schema of a located value is the schema of the value: positions are not in the format.
impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

// Plugin names are map keys: ordered and compared by name alone.
impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Located<T> {}
impl<T: Ord> PartialOrd for Located<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> Ord for Located<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

/// For optional keys: a key that is present must hold a value (`do: ~` is an error, not an
/// absent `do`). Absent keys get `None` from `#[serde(default)]`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

fn yes() -> bool {
    true
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// A stepflow flow file: a named tree of steps whose functions come from sandboxed WebAssembly
/// plugins, and the initial data document of each run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "stepflow flow file")]
pub(crate) struct FlowDoc {
    /// The flow's name, the root of every step path (e.g. `deploy.v1`). Runs remember it.
    pub(crate) flow: Located<NameText>,
    /// The plugins the steps use, by the name that function references start with
    /// (`<plugin>.<function>`).
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": PLUGIN_NAME_PATTERN }))]
    pub(crate) plugins: BTreeMap<Located<String>, Located<PluginDoc>>,
    /// The data document a new run starts with: any JSON value (default `{}`). Steps read it and
    /// return merge patches to it.
    #[serde(default = "empty_object")]
    pub(crate) data: Value,
    /// The flow's items, run in order.
    pub(crate) steps: Vec<Located<ItemDoc>>,
}

/// What a plugin name must look like (a map key under `plugins`, and the part of a function
/// reference before the first `.`): no `.`, `/`, `:`, spaces or control characters.
pub(crate) const PLUGIN_NAME_PATTERN: &str = r"^[^./:\s\x00-\x1f\x7f-\x9f]+$";

/// The characters a flow or item name never has: `/`, `:`, control characters, and the
/// bidirectional-override and zero-width characters that make a name display unlike what it is.
macro_rules! name_excluded {
    () => {
        r"/:\x00-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff\u202a-\u202e\u2066-\u2069"
    };
}

/// What a flow or item name must look like: not empty, none of `name_excluded!`'s characters,
/// and at least one that is not white space. White space is spelt out (Unicode's White_Space
/// outside the control characters, as `char::is_whitespace` has it) rather than `\s`, whose
/// meaning differs between regex engines.
pub(crate) const NAME_PATTERN: &str = concat!(
    "^[^",
    name_excluded!(),
    "]*[^ \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000",
    name_excluded!(),
    "][^",
    name_excluded!(),
    "]*$"
);

/// What a function reference must look like: `<plugin>.<function>`, the function without
/// spaces or control characters and not starting or ending with `/`.
pub(crate) const REFERENCE_PATTERN: &str = r"^[^./:\s\x00-\x1f\x7f-\x9f]+\.[^/\s\x00-\x1f\x7f-\x9f]([^\s\x00-\x1f\x7f-\x9f]*[^/\s\x00-\x1f\x7f-\x9f])?$";

/// A flow or item name: the parser checks it (`parse.rs`), the schema's pattern says the same.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct NameText(pub(crate) String);

impl JsonSchema for NameText {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A name: not empty, without `/` or `:` (stepflow uses them in step paths and events), without bidirectional-override or zero-width characters, and not only white space.",
            "type": "string",
            "pattern": NAME_PATTERN
        })
    }
}

/// A function reference `<plugin>.<function>`, e.g. `deploy.checks/ready`.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct ReferenceText(pub(crate) String);

impl JsonSchema for ReferenceText {
    fn schema_name() -> Cow<'static, str> {
        "FunctionReference".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A function of a plugin: `<plugin>.<function>`, e.g. `deploy.prepare`, or `deploy.checks/ready` for `ready` in the exported interface `checks`.",
            "type": "string",
            "pattern": REFERENCE_PATTERN
        })
    }
}

/// What a JSON pointer (RFC 6901) must look like: `""` (the whole document) or `/`-separated
/// keys and indexes, where `~` is written `~0` and a `/` inside a key `~1`.
pub(crate) const POINTER_PATTERN: &str = r"^(/([^~/]|~[01])*)*$";

/// A JSON pointer into the data document, e.g. `/files`: the parser checks it (`check.rs`),
/// the schema's pattern says the same.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct PointerText(pub(crate) String);

impl JsonSchema for PointerText {
    fn schema_name() -> Cow<'static, str> {
        "JsonPointer".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A JSON pointer into the data document: `\"\"` for the whole document, or `/`-separated keys and array indexes such as `/files` or `/batch/0/parts`; write `~0` for `~` and `~1` for `/` inside a key.",
            "type": "string",
            "pattern": POINTER_PATTERN
        })
    }
}

/// What a `for-each`'s `concurrency` is, for the hints of its errors.
const CONCURRENCY_HINT: &str = "`concurrency` is how many elements are processed at once: a whole number of at least 1, e.g. `concurrency: 8`";

/// A `for-each`'s `concurrency`: a whole number, read with messages that say what it is (the
/// parser refuses 0 at its place, `check.rs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Concurrency(pub(crate) u32);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> serde::de::Visitor<'de> for Count {
            type Value = Concurrency;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number like 8")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Concurrency, E> {
                u32::try_from(v).map(Concurrency).map_err(|_| {
                    E::custom(with_hint(
                        &format!(
                            "a `concurrency` of {v} is more than stepflow can count (at most {})",
                            u32::MAX
                        ),
                        CONCURRENCY_HINT,
                    ))
                })
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Concurrency, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(with_hint(
                        &format!("expected a whole number like 8, found `{v}`"),
                        CONCURRENCY_HINT,
                    ))),
                }
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Concurrency, E> {
                Err(E::custom(with_hint(
                    &format!("expected a whole number like 8, found `{v}`"),
                    CONCURRENCY_HINT,
                )))
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Concurrency, E> {
                Err(E::custom(with_hint(
                    &format!("expected a whole number like 8, found `{v}`"),
                    CONCURRENCY_HINT,
                )))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Concurrency, E> {
                let hint = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    format!("write the number without quotes: `concurrency: {v}`")
                } else {
                    CONCURRENCY_HINT.to_string()
                };
                Err(E::custom(with_hint(
                    &format!(
                        "expected a whole number like 8, found `{}`",
                        v.escape_debug()
                    ),
                    &hint,
                )))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Concurrency, E> {
                Err(E::custom(with_hint(
                    "expected a whole number like 8, found nothing",
                    "write a value after the `:`, or remove the key for the default of 1",
                )))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                _: A,
            ) -> Result<Concurrency, A::Error> {
                Err(serde::de::Error::custom(with_hint(
                    "expected a whole number like 8, found a list",
                    CONCURRENCY_HINT,
                )))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                _: A,
            ) -> Result<Concurrency, A::Error> {
                Err(serde::de::Error::custom(with_hint(
                    "expected a whole number like 8, found a mapping",
                    CONCURRENCY_HINT,
                )))
            }
        }
        deserializer.deserialize_any(Count)
    }
}

impl JsonSchema for Concurrency {
    fn schema_name() -> Cow<'static, str> {
        "Concurrency".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "integer",
            "minimum": 1,
            "maximum": u32::MAX
        })
    }
}

/// What a `wait-for` waits for: a condition function (`deploy.ready`) or a signal
/// (`{signal: approve}`).
#[derive(Clone, Debug)]
pub(crate) enum WaitTarget {
    /// A condition `<plugin>.<function>`, asked until it is true.
    Condition(ReferenceText),
    /// A signal, sent with `stepflow signal RUN NAME` or the HTTP API.
    Signal(SignalWaitDoc),
}

impl<'de> Deserialize<'de> for WaitTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Target;
        impl<'de> serde::de::Visitor<'de> for Target {
            type Value = WaitTarget;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a condition `<plugin>.<function>` or `{signal: <name>}`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WaitTarget, E> {
                Ok(WaitTarget::Condition(ReferenceText(v.to_string())))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<WaitTarget, A::Error> {
                SignalWaitDoc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(WaitTarget::Signal)
            }
        }
        deserializer.deserialize_any(Target)
    }
}

impl JsonSchema for WaitTarget {
    fn schema_name() -> Cow<'static, str> {
        "WaitTarget".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let condition = generator.subschema_for::<ReferenceText>();
        let signal = generator.subschema_for::<SignalWaitDoc>();
        schemars::json_schema!({
            "description": "A condition `<plugin>.<function>` to ask until it is true, or `{signal: <name>}` to wait for a signal.",
            "oneOf": [condition, signal]
        })
    }
}

/// A wait for a signal: `wait-for: {signal: approve}`. Its payload is merged under
/// `signals.<name>` in the data document when it arrives; `timeout` bounds the wait.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalWaitDoc {
    /// The signal's name: ASCII letters, digits, `-`, `_` and `.`, e.g. `approve`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$"))]
    pub(crate) signal: String,
}

/// A WebAssembly component whose exported functions steps call, and what its sandbox may use.
/// A plugin gets nothing that is not listed here.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct PluginDoc {
    /// The component's `.wasm` file, relative to this flow file's directory.
    pub(crate) wasm: Located<String>,
    /// A command that builds the `.wasm` file; `stepflow run --build` runs it in this flow
    /// file's directory.
    #[serde(default, deserialize_with = "present")]
    pub(crate) build: Option<Located<String>>,
    /// Host environment variables passed through to the plugin, by name (default: none).
    #[serde(default)]
    pub(crate) env: Vec<Located<String>>,
    /// Host directories the plugin may see (default: none).
    #[serde(default)]
    pub(crate) dirs: Vec<Located<DirDoc>>,
    /// Secrets the plugin reads as environment variables of these names, each from a host
    /// environment variable (`{env: VAR}`) or a file (`{file: PATH}`, relative to this flow
    /// file's directory). Their values never show in logs, errors, the data document, the
    /// history or the store: the host replaces them by `[secret NAME]` (default: none).
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }))]
    pub(crate) secrets: BTreeMap<Located<String>, Located<SecretDoc>>,
    /// The most linear memory one instance may use, e.g. `64MiB` (the default).
    #[serde(default, deserialize_with = "present")]
    pub(crate) memory: Option<Located<Size>>,
    /// The longest one call may run, e.g. `30s` (the default).
    #[serde(default, deserialize_with = "present")]
    pub(crate) timeout: Option<Located<Period>>,
    /// Roughly how many wasm instructions one call may execute (default: no limit).
    #[serde(default, deserialize_with = "present")]
    #[schemars(range(min = 1))]
    pub(crate) fuel: Option<Located<u64>>,
    /// The largest patch or answer a step may return, e.g. `1MiB` (the default).
    #[serde(default, deserialize_with = "present")]
    pub(crate) max_output: Option<Located<Size>>,
    /// Whether calls may reuse an instance instead of getting a fresh one each (default false:
    /// nothing leaks from one call to the next).
    #[serde(default)]
    pub(crate) reuse_instances: bool,
    /// What the plugin may call over HTTP (`wasi:http`); every other request is refused before
    /// a connection is opened (default: nothing).
    #[serde(default)]
    pub(crate) http: Vec<Located<HttpDoc>>,
    /// How far each call's HTTP requests may go; every limit has a default.
    #[serde(default, deserialize_with = "present")]
    pub(crate) http_limits: Option<Located<HttpLimitsDoc>>,
}

/// One place a plugin may call over HTTP, and with which methods.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpDoc {
    /// `https://host[:port]/path`, where `*` in the path stands for any run of characters
    /// (`https://api.example.com/v1/*`) and a host may start with `*.` for its subdomains;
    /// plain `http://` only when written so.
    #[schemars(regex(pattern = r"^https?://"))]
    pub(crate) url: Located<String>,
    /// The HTTP methods allowed there, e.g. `[GET, POST]`.
    #[schemars(length(min = 1))]
    pub(crate) methods: Vec<Located<String>>,
}

/// Limits on one call's HTTP requests.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct HttpLimitsDoc {
    /// The longest wait for a connection, e.g. `5s` (the default).
    #[serde(default, deserialize_with = "present")]
    pub(crate) connect_timeout: Option<Located<Period>>,
    /// The longest one request may take, to the last byte of its response, e.g. `30s` (the
    /// default).
    #[serde(default, deserialize_with = "present")]
    pub(crate) timeout: Option<Located<Period>>,
    /// The largest response body, e.g. `16MiB` (the default).
    #[serde(default, deserialize_with = "present")]
    pub(crate) max_response: Option<Located<Size>>,
    /// The most requests one call may make, e.g. `100` (the default).
    #[serde(default, deserialize_with = "present")]
    #[schemars(range(min = 1))]
    pub(crate) max_requests: Option<Located<u32>>,
}

/// Where a secret's value comes from: exactly one of `env` and `file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{ "required": ["env"] }, { "required": ["file"] }]))]
pub(crate) struct SecretDoc {
    /// A host environment variable that holds the value.
    #[serde(default, deserialize_with = "present")]
    pub(crate) env: Option<Located<String>>,
    /// A file that holds the value (a trailing newline is dropped), relative to this flow
    /// file's directory.
    #[serde(default, deserialize_with = "present")]
    pub(crate) file: Option<Located<String>>,
}

/// A host directory preopened for a plugin.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct DirDoc {
    /// The directory on the host, relative to this flow file's directory.
    pub(crate) host: Located<String>,
    /// Where the plugin sees it: an absolute path such as `/work`.
    pub(crate) guest: Located<String>,
    /// Whether the plugin may create, change and delete files there (default false).
    #[serde(default)]
    pub(crate) writable: bool,
}

/// One item of a flow: exactly one of `do` (a step), `wait-for`, `case`, `loop-until`, `retry`,
/// `parallel`, `for-each`, or a group that has only `name` and `steps`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(transform = one_kind_per_item)]
pub(crate) struct ItemDoc {
    /// The item's name, unique among its siblings, without `/` or `:`. For `do`, `wait-for`,
    /// `case` and `loop-until` it defaults to the function's name (the part after the last `.`
    /// or `/`); `retry`, `parallel`, `for-each` and groups must have one.
    #[serde(default, deserialize_with = "present")]
    pub(crate) name: Option<Located<NameText>>,
    /// A step: the action `<plugin>.<function>` to call.
    #[serde(default, rename = "do", deserialize_with = "present")]
    pub(crate) do_: Option<Located<ReferenceText>>,
    /// Waits until the condition `<plugin>.<function>` is true, or, written
    /// `{signal: <name>}`, until a signal of that name arrives for the run.
    #[serde(default, deserialize_with = "present")]
    pub(crate) wait_for: Option<Located<WaitTarget>>,
    /// For `wait-for`: the least time between two checks, e.g. `1s`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) every: Option<Located<Period>>,
    /// For `wait-for`: how long the condition may stay false before the wait fails, e.g. `5m`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) timeout: Option<Located<Period>>,
    /// Runs `steps` only when the condition `<plugin>.<function>` is true.
    #[serde(default, deserialize_with = "present")]
    pub(crate) case: Option<Located<ReferenceText>>,
    /// Runs `steps`, then asks the condition `<plugin>.<function>`; repeats until it is true.
    #[serde(default, deserialize_with = "present")]
    pub(crate) loop_until: Option<Located<ReferenceText>>,
    /// Runs `steps` again, from the start, when something inside fails and this policy allows.
    #[serde(default, deserialize_with = "present")]
    pub(crate) retry: Option<Located<RetryDoc>>,
    /// Runs these branches side by side, each a `name` and its `steps`; the item completes
    /// when every branch has. A `parallel` has no `steps` of its own.
    #[serde(default, deserialize_with = "present")]
    #[schemars(length(min = 1))]
    pub(crate) parallel: Option<Located<Vec<Located<BranchDoc>>>>,
    /// Runs `steps` once for every element of the array at this JSON pointer into the data the
    /// steps see, e.g. `/files` (`""` when the data document itself is the array). The steps
    /// of element `i` see it as `item` and `i` as `index`.
    #[serde(default, deserialize_with = "present")]
    pub(crate) for_each: Option<Located<PointerText>>,
    /// For `for-each` (required): the JSON pointer of the array that collects the results,
    /// e.g. `/processed`. The engine creates it when the for-each starts, one entry per element;
    /// what the steps of element `i` return goes into entry `i`. It must not overlap the array
    /// iterated over.
    #[serde(default, deserialize_with = "present")]
    #[schemars(extend("minLength" = 1))]
    pub(crate) results: Option<Located<PointerText>>,
    /// For `for-each`: how many elements are processed at once, at least 1 (default 1: one
    /// after the other).
    #[serde(default, deserialize_with = "present")]
    pub(crate) concurrency: Option<Located<Concurrency>>,
    /// The nested items of a `case`, `loop-until`, `retry`, `for-each` or group, run in order.
    #[serde(default, deserialize_with = "present")]
    pub(crate) steps: Option<Located<Vec<Located<ItemDoc>>>>,
}

/// One branch of a `parallel`: a named list of items, run side by side with the other
/// branches.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("required" = ["name", "steps"]))]
pub(crate) struct BranchDoc {
    /// The branch's name, unique among the `parallel`'s branches, without `/` or `:`; it is
    /// part of the path of every step inside (`<flow>/<parallel>/<branch>/<step>`).
    #[serde(default, deserialize_with = "present")]
    pub(crate) name: Option<Located<NameText>>,
    /// The branch's items, run in order (at least one).
    #[serde(default, deserialize_with = "present")]
    #[schemars(length(min = 1))]
    pub(crate) steps: Option<Located<Vec<Located<ItemDoc>>>>,
}

impl ItemDoc {
    /// Where each kind key of [`KIND_KEYS`] is written, if it is.
    pub(crate) fn kind_keys(&self) -> [(&'static str, Option<Position>); 7] {
        let [do_, wait_for, case, loop_until, retry, parallel, for_each] = KIND_KEYS;
        [
            (do_, self.do_.as_ref().map(|v| v.at)),
            (wait_for, self.wait_for.as_ref().map(|v| v.at)),
            (case, self.case.as_ref().map(|v| v.at)),
            (loop_until, self.loop_until.as_ref().map(|v| v.at)),
            (retry, self.retry.as_ref().map(|v| v.at)),
            (parallel, self.parallel.as_ref().map(|v| v.at)),
            (for_each, self.for_each.as_ref().map(|v| v.at)),
        ]
    }

    /// Where each key of [`EACH_OPTIONS`] is written, if it is.
    pub(crate) fn each_options(&self) -> [(&'static str, Option<Position>); 2] {
        let [results, concurrency] = EACH_OPTIONS;
        [
            (results, self.results.as_ref().map(|v| v.at)),
            (concurrency, self.concurrency.as_ref().map(|v| v.at)),
        ]
    }

    /// Where each key of [`WAIT_OPTIONS`] is written, if it is.
    pub(crate) fn wait_options(&self) -> [(&'static str, Option<Position>); 2] {
        let [every, timeout] = WAIT_OPTIONS;
        [
            (every, self.every.as_ref().map(|v| v.at)),
            (timeout, self.timeout.as_ref().map(|v| v.at)),
        ]
    }
}

/// When a failing `retry` group runs again. At least one of `handler` and `max-attempts`.
/// With both, the limits are checked first and the handler has the last word. Only retryable
/// errors are retried: a fatal one is never retried and no handler is asked about it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(extend("anyOf" = [{ "required": ["handler"] }, { "required": ["max-attempts"] }]))]
pub(crate) struct RetryDoc {
    /// The error handler `<plugin>.<function>` asked after each retryable failure; true
    /// retries.
    #[serde(default, deserialize_with = "present")]
    pub(crate) handler: Option<Located<ReferenceText>>,
    /// How many times the group may run in all (at least 1). Only retryable errors are retried.
    #[serde(default, deserialize_with = "present")]
    #[schemars(range(min = 1))]
    pub(crate) max_attempts: Option<Located<u32>>,
    /// How long to wait before each retry (default: no wait).
    #[serde(default, deserialize_with = "present")]
    pub(crate) backoff: Option<Located<BackoffDoc>>,
}

/// Exponential back-off: the n-th retry waits `initial * multiplier^(n-1)`, at most `max`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct BackoffDoc {
    /// The wait before the first retry, e.g. `1s`.
    pub(crate) initial: Located<Period>,
    /// The longest wait, e.g. `30s`.
    pub(crate) max: Located<Period>,
    /// The growth factor per retry, at least 1 (default 2).
    #[serde(default, deserialize_with = "present")]
    #[schemars(range(min = 1))]
    pub(crate) multiplier: Option<Located<f64>>,
    /// Whether to randomise the upper half of each wait, so that many runs do not retry in
    /// lock-step (default true).
    #[serde(default = "yes")]
    pub(crate) jitter: bool,
}

/// What each kind of item requires and allows. The parser's checks and the schema's `oneOf`
/// both come from this table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KindRule {
    /// The key that makes an item this kind (`steps` for a plain group).
    pub(crate) key: &'static str,
    /// Whether the item has nested `steps` (required) or not (forbidden).
    pub(crate) body: bool,
    /// Whether `every` and `timeout` are allowed.
    pub(crate) wait_options: bool,
    /// Whether `results` (then required) and `concurrency` (optional) are allowed.
    pub(crate) each_options: bool,
    /// Whether nested `steps` must hold at least one item (a `for-each` with nothing to run for
    /// each element is a mistake, as the model says).
    pub(crate) body_not_empty: bool,
    /// Whether `name` must be written (there is no function to take it from).
    pub(crate) name_required: bool,
    /// The kind in words, for messages and the schema's titles.
    pub(crate) what: &'static str,
}

/// The keys that give an item its kind, apart from a plain group's `steps`.
pub(crate) const KIND_KEYS: [&str; 7] = [
    "do",
    "wait-for",
    "case",
    "loop-until",
    "retry",
    "parallel",
    "for-each",
];

/// Every kind of item, the plain group last.
pub(crate) const KINDS: [KindRule; 8] = [
    KindRule {
        key: "do",
        body: false,
        wait_options: false,
        each_options: false,
        body_not_empty: false,
        name_required: false,
        what: "a `do` step",
    },
    KindRule {
        key: "wait-for",
        body: false,
        wait_options: true,
        each_options: false,
        body_not_empty: false,
        name_required: false,
        what: "a `wait-for`",
    },
    KindRule {
        key: "case",
        body: true,
        wait_options: false,
        each_options: false,
        body_not_empty: false,
        name_required: false,
        what: "a `case`",
    },
    KindRule {
        key: "loop-until",
        body: true,
        wait_options: false,
        each_options: false,
        body_not_empty: false,
        name_required: false,
        what: "a `loop-until`",
    },
    KindRule {
        key: "retry",
        body: true,
        wait_options: false,
        each_options: false,
        body_not_empty: false,
        name_required: true,
        what: "a `retry`",
    },
    KindRule {
        key: "parallel",
        body: false,
        wait_options: false,
        each_options: false,
        body_not_empty: false,
        name_required: true,
        what: "a `parallel`",
    },
    KindRule {
        key: "for-each",
        body: true,
        wait_options: false,
        each_options: true,
        body_not_empty: true,
        name_required: true,
        what: "a `for-each`",
    },
    KindRule {
        key: "steps",
        body: true,
        wait_options: false,
        each_options: false,
        body_not_empty: false,
        name_required: true,
        what: "a group",
    },
];

/// The keys only `wait-for` takes.
pub(crate) const WAIT_OPTIONS: [&str; 2] = ["every", "timeout"];

/// The keys only `for-each` takes.
pub(crate) const EACH_OPTIONS: [&str; 2] = ["results", "concurrency"];

/// Adds to the item schema a `oneOf` with one branch per kind, from [`KINDS`].
fn one_kind_per_item(schema: &mut Schema) {
    let branches: Vec<Value> = KINDS
        .iter()
        .map(|rule| {
            let mut required = vec![rule.key];
            if rule.body && rule.key != "steps" {
                required.push("steps");
            }
            if rule.name_required {
                required.push("name");
            }
            if rule.each_options {
                required.push("results");
            }
            let mut forbidden: Vec<&str> = KIND_KEYS
                .iter()
                .copied()
                .filter(|k| *k != rule.key)
                .collect();
            if !rule.body {
                forbidden.push("steps");
            }
            if !rule.wait_options {
                forbidden.extend(WAIT_OPTIONS);
            }
            if !rule.each_options {
                forbidden.extend(EACH_OPTIONS);
            }
            let mut properties: Map<String, Value> = forbidden
                .into_iter()
                .map(|k| (k.to_string(), Value::Bool(false)))
                .collect();
            if rule.body_not_empty {
                properties.insert("steps".to_string(), json!({ "minItems": 1 }));
            }
            json!({
                "title": rule.what,
                "required": required,
                "properties": properties,
            })
        })
        .collect();
    schema.insert("oneOf".to_string(), Value::Array(branches));
}
