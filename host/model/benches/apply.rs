//! The engine's own cost per [`StepFlow::apply`], measured with no-op steps.
//!
//! Each iteration drives a whole run to completion, and the throughput is the run's number of
//! applies, so criterion's `thrpt` line reads as applies per second (1e9 / thrpt = ns per apply).
//!
//! Flows: `sequential` (1,000 steps in a row), `nested` (10 levels of groups, three steps and the
//! next level in each, a step at the bottom) and `loop` (a `loop_until` of 10,000 iterations whose
//! body is one step).
//!
//! Drivers: `poll` polls each apply once with a no-op waker — no-op steps never wait, so this is
//! the engine alone; `tokio` awaits the applies inside one current-thread `block_on`, as a runner
//! would.
//!
//! Run with `cargo bench -p stepflow-model --bench apply`.

use std::future::{Future, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use stepflow_model::{Action, RunContext, StepContext, StepFlow, StepResult, Steps};

async fn noop(_: StepContext) -> StepResult<()> {
    Ok(())
}

fn sequential(steps: usize) -> StepFlow {
    let root = (0..steps).fold(Steps::named("sequential.v1"), |flow, i| {
        flow.step(format!("step{i}"), noop)
    });
    StepFlow::new(root).expect("a valid flow")
}

/// `levels` groups inside each other, each with steps before and after the next level.
fn nested(levels: usize) -> StepFlow {
    let level = |name: String, inner: Steps| {
        Steps::named(name)
            .step("a", noop)
            .step("b", noop)
            .steps(inner)
            .step("c", noop)
    };
    let bottom = Steps::named(format!("level{levels}")).step("leaf", noop);
    let root = (1..levels)
        .rev()
        .fold(bottom, |inner, i| level(format!("level{i}"), inner));
    StepFlow::new(level("nested.v1".into(), root)).expect("a valid flow")
}

/// A loop whose condition turns true on its `iterations`-th check; reset `checks` before a run.
fn looping(iterations: u64) -> (StepFlow, Arc<AtomicU64>) {
    let checks = Arc::new(AtomicU64::new(0));
    let counter = checks.clone();
    let done = move |_: StepContext| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        ready(Ok(n >= iterations))
    };
    let flow = Steps::named("loop.v1").loop_until("again", done, Steps::new().step("body", noop));
    (StepFlow::new(flow).expect("a valid flow"), checks)
}

/// Polls a future once; the benchmarked flows never wait.
fn poll_once<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a no-op step pended"),
    }
}

/// Drives one run to completion, polling each apply once; returns the number of applies.
fn run_polled(flow: &StepFlow, ctx: &RunContext) -> u64 {
    let mut state = flow.new_state(Value::Null);
    let mut applies = 0;
    while !flow.is_completed(&state) {
        state = poll_once(flow.apply(ctx, state));
        applies += 1;
    }
    black_box(state);
    applies
}

/// Drives one run to completion as async code; returns the number of applies.
async fn run_async(flow: &StepFlow, ctx: &RunContext) -> u64 {
    let mut state = flow.new_state(Value::Null);
    let mut applies = 0;
    while !flow.is_completed(&state) {
        state = flow.apply(ctx, state).await;
        applies += 1;
    }
    black_box(state);
    applies
}

fn apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");
    let ctx = RunContext::new("bench");
    let (loop_flow, checks) = looping(10_000);
    let none = Arc::new(AtomicU64::new(0));
    let cases = [
        ("sequential-1000", sequential(1_000), none.clone()),
        ("nested-10", nested(10), none),
        ("loop-10000", loop_flow, checks),
    ];
    for (name, flow, checks) in &cases {
        checks.store(0, Ordering::Relaxed);
        let applies = run_polled(flow, &ctx);
        let mut group = c.benchmark_group(*name);
        group.throughput(Throughput::Elements(applies));
        group.bench_function("poll", |b| {
            b.iter(|| {
                checks.store(0, Ordering::Relaxed);
                run_polled(flow, &ctx)
            })
        });
        group.bench_function("tokio", |b| {
            b.iter(|| {
                checks.store(0, Ordering::Relaxed);
                runtime.block_on(run_async(flow, &ctx))
            })
        });
        group.finish();
    }

    // The no-op step alone, called as `apply` calls it (a context with the run's shared strings
    // and data document, a boxed future, one poll), 1,000 times: the part of an apply that is the
    // step, not the engine. Engine overhead = apply time - this.
    let action: Arc<dyn Action> = Arc::new(noop);
    let step_ctx = StepContext {
        run_id: "bench".into(),
        flow: "seq.v1".into(),
        step: "seq.v1/step1".into(),
        attempt: 1,
        sequence: 0,
        redelivered: false,
        data: Arc::new(serde_json::json!({})),
    };
    let mut group = c.benchmark_group("step-call-only-1000");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("poll", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                black_box(poll_once(action.run(black_box(step_ctx.clone()))).ok());
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = apply
}
criterion_main!(benches);
