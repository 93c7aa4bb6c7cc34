//! Reads stepflow flow files (YAML) with precise, located error messages.
//!
//! A flow file declares the plugins a flow uses and the flow's tree of items; [`load`] reads and
//! checks one into a [`FlowFile`], and [`FlowFile::to_steps`] turns it into the model's
//! [`stepflow_model::Steps`] once a [`Functions`] implementation (the CLI's, backed by real
//! plugins) can resolve its function references. [`load`] reads at most
//! [`MAX_FLOW_FILE_BYTES`] (4 MiB); [`load_with_limit`] takes another limit. Every mistake comes
//! back as a [`Diagnostic`]: `file:line:column: message`, and a hint that says what to do.
//!
//! This crate knows nothing of WebAssembly or storage: it reads text, and checks that plugin
//! files exist and start like a component (the first 8 bytes, so that a core module or a file
//! that is not WebAssembly is reported at its `wasm:` line); loading plugins and running flows
//! are other crates' business.
//!
//! # The format
//!
//! ```yaml
//! # yaml-language-server: $schema=../schema/flow.schema.json
//! flow: deploy.v1                      # the flow's name, the root of every step path; required
//! plugins:                             # name -> plugin; steps refer to functions as <plugin>.<function>
//!   deploy:
//!     wasm: ../plugins/rust/target/wasm32-wasip2/release/deploy.wasm   # required; relative to this file
//!     build: ../plugins/rust/build     # optional; `stepflow run --build` runs it in this file's directory
//!     env: [DEPLOY_TOKEN]              # host environment variables passed through, by name (default none)
//!     dirs:                            # preopened host directories (default none)
//!       - { host: ./work, guest: /work, writable: true }   # host is relative to this file; writable defaults to false
//!     memory: 64MiB                    # memory cap: B, KiB, MiB, GiB (1024s), KB, MB, GB (1000s); default 64MiB
//!     timeout: 30s                     # time limit per call: ms, s, m, h, d, or sums like 1h30m; default 30s
//!     fuel: 1000000                    # optional instruction budget per call
//!     max-output: 1MiB                 # cap on what one step returns; default 1MiB
//!     reuse-instances: false           # default false: a fresh instance per call
//!     secrets: { API_TOKEN: { env: DEPLOY_TOKEN } }   # read as env vars; never shown (or {file: PATH})
//!     http:                            # what it may call over HTTP (default nothing)
//!       - { url: "https://api.example.com/v1/*", methods: [GET, POST] }   # http:// only if written
//!     http-limits: { connect-timeout: 5s, timeout: 30s, max-response: 16MiB, max-requests: 100 }   # the defaults
//! data: { version: "2.0", files: [a.csv, b.csv] }   # the data a run starts with (any JSON value; default {})
//! steps:                               # the root's items, in order
//!   - do: deploy.prepare               # a step; `name` defaults to the function's name: `prepare`
//!   - name: ready
//!     wait-for: deploy.checks/ready    # a condition; `every` and `timeout` are optional
//!     every: 1s
//!     timeout: 5m
//!   - name: shouldDeploy
//!     case: deploy.checks/should-deploy   # runs `steps` when the condition is true
//!     steps:
//!       - do: deploy.deploy
//!   - name: pages
//!     loop-until: deploy.checks/deployed  # runs `steps`, then asks; again until true
//!     steps:
//!       - do: deploy.validate
//!   - name: validation
//!     retry:                           # at least one of handler and max-attempts
//!       handler: deploy.should-retry   # an error handler: true retries
//!       max-attempts: 3                # runs of the group in all
//!       backoff: { initial: 1s, max: 30s, multiplier: 2, jitter: true }   # multiplier 2 and jitter true by default
//!     steps:
//!       - do: deploy.validate
//!   - name: regions                    # runs its branches side by side; done when all are
//!     parallel:                        # at least one branch, each a `name` and its `steps`
//!       - name: eu
//!         steps:
//!           - do: deploy.region
//!       - name: us
//!         steps:
//!           - do: deploy.region
//!   - name: files
//!     for-each: /files                 # a JSON pointer to an array in the data the steps see
//!     results: /processed              # required: element i's results go to element i of this array
//!     concurrency: 8                   # how many elements at once; default 1
//!     steps:                           # run once per element, which they see as /item (and /index)
//!       - do: deploy.process-file
//!   - name: finish                     # a plain group: `name` and `steps` only
//!     steps:
//!       - do: deploy.cleanup
//! ```
//!
//! The rules, all checked by [`parse()`]:
//! - A function reference is `<plugin>.<function>`, split at the first `.`; the function may
//!   contain `/` (`deploy.checks/ready` is `ready` in the plugin's exported interface `checks`).
//!   The plugin must be declared under `plugins`. Plugin names have no `.`, `/`, `:` or spaces.
//! - Each item has exactly one kind key (`do`, `wait-for`, `case`, `loop-until`, `retry`,
//!   `parallel`, `for-each`) or is a group (`name` and `steps` only). `every` and `timeout`
//!   belong to `wait-for` alone, `results` and `concurrency` to `for-each` alone; `steps` is
//!   required on `case`, `loop-until`, `retry`, `for-each` and groups and refused on `do`,
//!   `wait-for` and `parallel`. A `retry` has `handler`, `max-attempts` (at least 1), or both.
//! - A `parallel` has at least one branch; each branch has a `name` (checked like an item's,
//!   unique among the branches) and at least one item in `steps`.
//! - A `for-each` has `results` and at least one item in `steps`; `concurrency` is at least 1.
//!   `for-each` and `results` are JSON pointers (`""` or starting with `/`, `~` only as `~0`
//!   or `~1`); `results` is not `""`, and it is neither the same as `for-each` nor inside it
//!   nor around it, key by key (unless `for-each` is `""`): the results would overwrite what
//!   is iterated over. No sibling of a `for-each` named `files` is named like one of its
//!   instances, `files#3`.
//! - `name` defaults to the function's name (the part after the last `.` or `/`) on `do`,
//!   `wait-for`, `case` and `loop-until`; `retry`, `parallel`, `for-each` and groups need one.
//!   Names are not empty, have no `/` or `:`, no bidirectional-override (U+202A–U+202E,
//!   U+2066–U+2069) or zero-width (U+200B–U+200D, U+2060, U+FEFF) characters, are not only
//!   white space, and are unique among siblings.
//! - A key that is present has a value: `timeout: ~` is an error, not a missing timeout.
//! - Sizes are more than 0; a plugin's `timeout` is more than 0; a back-off's `max` is at least
//!   its `initial`, its `multiplier` at least 1; `guest` paths are absolute and distinct.
//!
//! The schema says all of these except those that need the whole document or compare two values:
//! that a referenced plugin is declared, that sibling (and branch) names are unique, `max`
//! against `initial`, `results` against `for-each`, names like a for-each's instances, a zero
//! `timeout`, and the `guest` and `env` checks.
//!
//! The JSON Schema ([`schema()`], shipped as `schema/flow.schema.json`) is derived from the same
//! types serde fills, so editors that know it (the `yaml-language-server` comment above) check
//! and complete flow files as they are typed.
//!
//! ```
//! use std::path::Path;
//! let text = "flow: hello.v1\nplugins:\n  hello: { wasm: hello.wasm }\nsteps:\n  - do: hello.greet\n";
//! let file = stepflow_flowfile::parse(text, Path::new("flows/hello.yaml")).unwrap();
//! assert_eq!(file.steps[0].name, "greet");
//! assert_eq!(file.plugins["hello"].wasm, Path::new("flows/hello.wasm"));
//!
//! let err = stepflow_flowfile::parse("flow: x\nstesp: []\n", Path::new("x.yaml")).unwrap_err();
//! assert_eq!(err.to_string(), "x.yaml:2:1: unknown key `stesp`\n  hint: did you mean `steps`?");
//! ```

mod build;
mod check;
mod diagnostic;
mod document;
mod parse;
mod schema;
mod types;
mod units;
mod yaml;

pub use build::{Function, FunctionKind, Functions, Reference};
pub use diagnostic::{Diagnostic, Position};
pub use parse::{MAX_FLOW_FILE_BYTES, load, load_with_limit, parse};
pub use schema::schema;
pub use types::{
    Branch, DirDecl, FlowFile, ForEachDecl, FunctionRef, HttpDecl, HttpLimitsDecl, Item, ItemKind,
    PluginDecl, RetryDecl, SecretDecl, SecretSource,
};
pub use units::{parse_duration, parse_size};
