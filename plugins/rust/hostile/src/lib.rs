//! Misbehaving steps, one per way a plugin can go wrong, for the sandbox tests.

// The generated bindings pass each record field as an argument.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    world: "stepflow-examples:hostile/hostile",
    path: ["../../../wit", "wit"],
    generate_all,
});

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

struct Hostile;

fn data(ctx: &StepContext) -> Result<Value, StepError> {
    serde_json::from_str(&ctx.data)
        .map_err(|e| StepError::Fatal(format!("the data document is not JSON: {e}")))
}

fn patch(value: Value) -> Result<Option<String>, StepError> {
    Ok(Some(value.to_string()))
}

fn field(ctx: &StepContext, name: &str) -> String {
    serde_json::from_str::<Value>(&ctx.data)
        .ok()
        .and_then(|d| d[name].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[0] = pad[0].wrapping_add(1);
    let mut local = [0u8; 256];
    local[(depth % 256) as usize] = pad[0];
    std::hint::black_box(&mut local);
    recurse(depth + 1, &mut local) + u64::from(local[0])
}

/// Recursion whose frames live on wasm's own call stack (no locals in linear memory), so it
/// ends when the engine's stack limit does: a `StackOverflow` trap, not a bad memory access.
#[inline(never)]
fn deep(n: u64, limit: u64) -> u64 {
    if n >= limit {
        return n;
    }
    deep(n + 1, limit).wrapping_mul(3).wrapping_add(n)
}

impl Guest for Hostile {
    fn spin(_ctx: StepContext) -> Result<Option<String>, StepError> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn memory_bomb(_ctx: StepContext) -> Result<Option<String>, StepError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }

    fn stack_overflow(_ctx: StepContext) -> Result<Option<String>, StepError> {
        let mut pad = [0u8; 256];
        let n = recurse(0, &mut pad);
        Ok(Some(json!({ "depth": n }).to_string()))
    }

    fn deep_recursion(ctx: StepContext) -> Result<Option<String>, StepError> {
        // The limit comes from outside, so the recursion cannot be computed away.
        let limit = data(&ctx)?["limit"].as_u64().unwrap_or(u64::MAX);
        Ok(Some(json!({ "depth": deep(0, limit) }).to_string()))
    }

    fn count(_ctx: StepContext) -> Result<Option<String>, StepError> {
        // State kept in the instance: what a fresh instance per call must not leak.
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Some(json!({ "count": n }).to_string()))
    }

    fn panic(_ctx: StepContext) -> Result<Option<String>, StepError> {
        panic!("this step always panics");
    }

    fn big_output(_ctx: StepContext) -> Result<Option<String>, StepError> {
        let blob = "x".repeat(8 << 20);
        Ok(Some(json!({ "blob": blob }).to_string()))
    }

    fn bad_json(_ctx: StepContext) -> Result<Option<String>, StepError> {
        Ok(Some("{this is not json".to_string()))
    }

    fn read_file(ctx: StepContext) -> Result<Option<String>, StepError> {
        let path = field(&ctx, "path");
        match std::fs::read_to_string(&path) {
            Ok(content) => Ok(Some(json!({ "content": content }).to_string())),
            Err(e) => Err(StepError::Retryable(format!("cannot read {path}: {e}"))),
        }
    }

    fn write_file(ctx: StepContext) -> Result<Option<String>, StepError> {
        let path = field(&ctx, "path");
        match std::fs::write(&path, field(&ctx, "content")) {
            Ok(()) => Ok(Some(json!({ "written": path }).to_string())),
            Err(e) => Err(StepError::Retryable(format!("cannot write {path}: {e}"))),
        }
    }

    fn connect(ctx: StepContext) -> Result<Option<String>, StepError> {
        let addr = field(&ctx, "addr");
        match std::net::TcpStream::connect(&addr) {
            Ok(_) => Ok(Some(json!({ "connected": addr }).to_string())),
            Err(e) => Err(StepError::Retryable(format!(
                "cannot connect to {addr}: {e}"
            ))),
        }
    }

    fn read_env(ctx: StepContext) -> Result<Option<String>, StepError> {
        let var = field(&ctx, "var");
        match std::env::var(&var) {
            Ok(value) => Ok(Some(json!({ "value": value }).to_string())),
            Err(e) => Err(StepError::Retryable(format!("cannot read ${var}: {e}"))),
        }
    }

    fn leak_env(ctx: StepContext) -> Result<Option<String>, StepError> {
        let var = field(&ctx, "var");
        let value = std::env::var(&var).unwrap_or_default();
        println!("stdout says {value}");
        eprintln!("stderr says {value}");
        stepflow::plugin::host::log(
            stepflow::plugin::host::Level::Info,
            &format!("the log says {value}"),
            &[("token".into(), value.clone())],
        );
        let data: serde_json::Value = serde_json::from_str(&ctx.data).unwrap_or_default();
        if data["fail"] == true {
            return Err(StepError::Fatal(format!("the server refused {value}")));
        }
        Ok(Some(
            json!({ "value": value, "nested": { "header": format!("Bearer {value}") } })
                .to_string(),
        ))
    }

    fn print_lots(_ctx: StepContext) -> Result<Option<String>, StepError> {
        let line = "y".repeat(1023);
        for _ in 0..(10 << 10) {
            println!("{line}");
        }
        eprintln!("done printing");
        Ok(Some(json!({ "printed": true }).to_string()))
    }

    fn burn(_ctx: StepContext) -> Result<bool, StepError> {
        let mut n: u64 = 0;
        for i in 0..u64::MAX {
            n = std::hint::black_box(n ^ i);
        }
        Ok(n == 0)
    }

    /// Records each call's idempotency key in a granted directory (`/work`), and with
    /// `block_in` set, waits for `/work/release` the first time (not when redelivered), so a
    /// test can kill the host while the step runs.
    fn checkpoint(ctx: StepContext) -> Result<Option<String>, StepError> {
        let d = data(&ctx)?;
        let key = ctx.idempotency_key.replace('/', "_");
        let marker = format!("/work/{key}");
        let seen_before = std::fs::metadata(&marker).is_ok();
        std::fs::write(&marker, format!("redelivered={}\n", ctx.redelivered))
            .map_err(|e| StepError::Fatal(format!("cannot write {marker}: {e}")))?;
        if d["block_in"].as_str() == Some(&*ctx.step) && !ctx.redelivered {
            println!("checkpoint {key} waiting for release");
            while std::fs::metadata("/work/release").is_err() {
                std::hint::spin_loop();
            }
        }
        patch(json!({
            "checkpoints": { ctx.step.rsplit('/').next().unwrap_or("?"): {
                "key": ctx.idempotency_key,
                "redelivered": ctx.redelivered,
                "seen_before": seen_before,
            } }
        }))
    }

    fn log_tags(ctx: StepContext) -> Result<Option<String>, StepError> {
        stepflow::plugin::host::log(
            stepflow::plugin::host::Level::Info,
            "tagged line",
            &[
                ("step".into(), ctx.step.clone()),
                ("run".into(), ctx.run_id.clone()),
                ("extra".into(), "1".into()),
            ],
        );
        Ok(None)
    }

    fn fails(_ctx: StepContext) -> Result<Option<String>, StepError> {
        Err(StepError::Retryable("boom".into()))
    }

    fn handler_fails(_ctx: StepContext, _error: String) -> Result<bool, StepError> {
        Err(StepError::Fatal("the handler broke".into()))
    }

    fn declines(_ctx: StepContext, _error: String) -> Result<bool, StepError> {
        Ok(false)
    }

    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

export!(Hostile);
