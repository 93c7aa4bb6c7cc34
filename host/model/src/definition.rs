//! The definition hash: a fingerprint of what a flow is, computed from the definition's own
//! data so that it is the same on every build and platform.
//!
//! The flow tree is written out in a small canonical text (below, [`encode`]) and hashed with
//! 64-bit FNV-1a. The text holds, in definition order and with the nesting spelled out: every
//! item's kind and name, the `every` and `timeout` of each `wait_for` (the signal name and
//! `timeout` of each wait for a signal), each `retry`'s policy
//! (whether it has an error handler, `max_attempts`, and the back-off's initial and longest
//! wait, multiplier and jitter), and each function's [`identity`](crate::Action::identity)
//! (`plugin.function` for plugin functions). Rust type names, labels and `Debug` output are not
//! in it: a native function counts by its kind and place alone, so renaming one keeps the hash.
//!
//! Changing the text changes the hash of every flow, which makes every saved run look like it
//! started on another definition: the tests pin both the text and a hash.

use std::fmt::Write;
use std::time::Duration;

use crate::builder::{Item, RetryPolicy, Steps, Wait};
use crate::graph::CallKind;

/// The first line of the encoding; bump it when the encoding changes.
const VERSION: &str = "stepflow-definition 1";

/// The hash [`crate::StepFlow::definition_hash`] returns: 16 lowercase hex digits.
pub(crate) fn definition_hash(root: &Steps) -> String {
    fnv1a_hex(encode(root).as_bytes())
}

/// The canonical text of a definition: the version line, then one line per item in pre-order.
/// Names and identities are written `<byte length>:<text>`, absent settings `-`, durations in
/// whole nanoseconds, the back-off multiplier as the hex of its IEEE 754 bits, and every item
/// with a body ends its line with `items=<n>`, the number of body items that follow.
///
/// ```text
/// stepflow-definition 1
/// steps 7:shop.v1 items=2
/// step 3:pay fn=native
/// wait-for 7:shipped fn=12:post.arrived every=1000000000ns timeout=-
/// ```
pub(crate) fn encode(root: &Steps) -> String {
    let mut out = String::from(VERSION);
    out.push('\n');
    group(&mut out, "steps", &root.name, &[], &root.items);
    out
}

/// Writes a line for an item with a body, then the body.
fn group(out: &mut String, kind: &str, name: &str, fields: &[String], items: &[Item]) {
    line(out, kind, name, fields);
    let _ = writeln!(out, " items={}", items.len());
    for item in items {
        write_item(out, item);
    }
}

/// Writes `<kind> <name> <fields>` without the line's end.
fn line(out: &mut String, kind: &str, name: &str, fields: &[String]) {
    let _ = write!(out, "{kind} {}", text(name));
    for field in fields {
        let _ = write!(out, " {field}");
    }
}

fn write_item(out: &mut String, item: &Item) {
    match item {
        Item::Step { name, action } => {
            line(
                out,
                CallKind::Step.as_str(),
                name,
                &[calls(action.identity())],
            );
            out.push('\n');
        }
        Item::WaitFor {
            name,
            condition,
            wait,
        } => {
            let mut fields = vec![calls(condition.identity())];
            fields.extend(wait_fields(wait));
            line(out, CallKind::WaitFor.as_str(), name, &fields);
            out.push('\n');
        }
        Item::WaitForSignal {
            name,
            signal,
            timeout,
        } => {
            let fields = [
                format!("signal={}", text(signal)),
                format!("timeout={}", duration(*timeout)),
            ];
            line(out, CallKind::WaitFor.as_str(), name, &fields);
            out.push('\n');
        }
        Item::Steps(steps) => group(out, "steps", &steps.name, &[], &steps.items),
        Item::Case {
            name,
            condition,
            body,
        } => {
            let fields = [calls(condition.identity())];
            group(out, CallKind::Case.as_str(), name, &fields, &body.items);
        }
        Item::LoopUntil {
            name,
            condition,
            body,
        } => {
            let fields = [calls(condition.identity())];
            group(
                out,
                CallKind::LoopUntil.as_str(),
                name,
                &fields,
                &body.items,
            );
        }
        Item::Retry { name, policy, body } => {
            group(out, "retry", name, &policy_fields(policy), &body.items);
        }
        Item::Parallel { name, branches } => {
            line(out, "parallel", name, &[]);
            let _ = writeln!(out, " branches={}", branches.len());
            for branch in branches {
                group(out, "branch", &branch.name, &[], &branch.items);
            }
        }
        Item::ForEach { name, each, body } => {
            let fields = [
                format!("over={}", text(&each.over)),
                format!("results={}", text(&each.results)),
                format!("concurrency={}", each.concurrency),
            ];
            group(out, "for-each", name, &fields, &body.items);
        }
    }
}

fn wait_fields(wait: &Wait) -> [String; 2] {
    [
        format!("every={}", duration(wait.every)),
        format!("timeout={}", duration(wait.timeout)),
    ]
}

fn policy_fields(policy: &RetryPolicy) -> [String; 3] {
    let handler = match &policy.handler {
        Some(handler) => function(handler.identity()),
        None => "-".to_string(),
    };
    let max_attempts = match policy.max_attempts {
        Some(max) => max.to_string(),
        None => "-".to_string(),
    };
    let backoff = match &policy.backoff {
        Some(b) => format!(
            "{},{},{:016x},{}",
            duration(Some(b.initial)),
            duration(Some(b.max)),
            b.multiplier.to_bits(),
            b.jitter
        ),
        None => "-".to_string(),
    };
    [
        format!("handler={handler}"),
        format!("max-attempts={max_attempts}"),
        format!("backoff={backoff}"),
    ]
}

/// `native` for a function without identity, `<len>:<identity>` otherwise.
fn function(identity: Option<String>) -> String {
    match identity {
        Some(identity) => text(&identity),
        None => "native".to_string(),
    }
}

/// The `fn=` field of an item that calls a function.
fn calls(identity: Option<String>) -> String {
    format!("fn={}", function(identity))
}

/// Length-prefixed, so that no name or identity can be mistaken for the fields around it.
fn text(value: &str) -> String {
    format!("{}:{value}", value.len())
}

fn duration(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{}ns", d.as_nanos()),
        None => "-".to_string(),
    }
}

/// A stable 64-bit FNV-1a hash: the definition hash must not change between builds or platforms.
fn fnv1a_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::Backoff;
    use crate::function::{
        Action, BoxFuture, Condition, ErrorHandler, StepContext, StepError, StepResult,
    };
    use serde_json::Value;

    /// Stands in for a plugin function: it has an identity.
    struct Named(&'static str);

    impl Action for Named {
        fn run(&self, _: StepContext) -> BoxFuture<'static, StepResult<Option<Value>>> {
            Box::pin(async { Ok(None) })
        }
        fn identity(&self) -> Option<String> {
            Some(self.0.to_string())
        }
    }

    impl Condition for Named {
        fn check(&self, _: StepContext) -> BoxFuture<'static, StepResult<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn identity(&self) -> Option<String> {
            Some(self.0.to_string())
        }
    }

    impl ErrorHandler for Named {
        fn handle(&self, _: StepContext, _: StepError) -> BoxFuture<'static, StepResult<bool>> {
            Box::pin(async { Ok(true) })
        }
        fn identity(&self) -> Option<String> {
            Some(self.0.to_string())
        }
    }

    async fn native(_: StepContext) -> StepResult<()> {
        Ok(())
    }

    async fn yes(_: StepContext) -> StepResult<bool> {
        Ok(true)
    }

    #[test]
    fn fnv1a_matches_its_reference_values() {
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
    }

    /// The encoding itself, pinned: a change here changes every flow's hash.
    #[test]
    fn the_encoding_of_every_kind_is_pinned() {
        let root = Steps::named("shop.v1")
            .step("pay", native)
            .step_shared("ship", std::sync::Arc::new(Named("post.send")))
            .wait_for_with(
                "shipped",
                Named("post.arrived"),
                Wait::every(Duration::from_secs(1)).timeout(Duration::from_millis(1500)),
            )
            .steps(Steps::named("group").step("a", native))
            .case("c", yes, Steps::new())
            .loop_until("l", yes, Steps::new().step("x", native))
            .retry(
                "r",
                RetryPolicy::handler(Named("post.should-retry"))
                    .max_attempts(3)
                    .backoff(Backoff::exponential(
                        Duration::from_millis(200),
                        Duration::from_secs(2),
                    )),
                Steps::new().step("y", native),
            )
            .retry("plain", RetryPolicy::default(), Steps::new());
        let expected = "\
stepflow-definition 1
steps 7:shop.v1 items=8
step 3:pay fn=native
step 4:ship fn=9:post.send
wait-for 7:shipped fn=12:post.arrived every=1000000000ns timeout=1500000000ns
steps 5:group items=1
step 1:a fn=native
case 1:c fn=native items=0
loop-until 1:l fn=native items=1
step 1:x fn=native
retry 1:r handler=17:post.should-retry max-attempts=3 backoff=200000000ns,2000000000ns,4000000000000000,true items=1
step 1:y fn=native
retry 5:plain handler=- max-attempts=- backoff=- items=0
";
        assert_eq!(encode(&root), expected);
    }

    #[test]
    fn the_nesting_is_part_of_the_encoding() {
        let flat = Steps::named("t.v1")
            .case("c", yes, Steps::new().step("x", native))
            .step("y", native);
        let nested =
            Steps::named("t.v1").case("c", yes, Steps::new().step("x", native).step("y", native));
        assert_ne!(encode(&flat), encode(&nested));
    }
}
