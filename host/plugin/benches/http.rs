//! What one outbound HTTP request from a step costs, against a real server on 127.0.0.1: the
//! `httpcall` plugin's `fetch` step with a fresh instance and with a reused one, next to the same
//! GET made by native Rust (hyper, a new connection per request, as wasi:http makes), in one
//! run.
//!
//! Run: `cargo bench -p stepflow-plugin --bench http`

use std::hint::black_box;
use std::sync::Arc;

use axum::Router;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty};
use serde_json::json;
use stepflow_model::{Action, StepContext};
use stepflow_plugin::{Grants, HttpGrant, Plugin, PluginOptions, Runtime, RuntimeConfig};
use stepflow_testkit::rust_plugin;

/// The step context of a `fetch` of `url`.
fn context(url: &str) -> StepContext {
    StepContext {
        run_id: "bench-run".into(),
        flow: "bench.v1".into(),
        step: "bench.v1/fetch".into(),
        attempt: 1,
        sequence: 0,
        redelivered: false,
        data: Arc::new(json!({ "request": { "url": url } })),
    }
}

/// The same GET from native Rust: a new connection, one request, the whole body read.
async fn native_get(port: u16) -> usize {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let request = http::Request::get("/v1/echo")
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    let body = response.into_body().collect().await.expect("a body");
    body.to_bytes().len()
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("an address").port();
    let app = Router::new().fallback(|| async { "{\"ok\":true}" });
    rt.spawn(async move { axum::serve(listener, app).await });

    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(stepflow_testkit::target_dir().join("bench-component-cache")),
        ..RuntimeConfig::default()
    })
    .expect("the plugin runtime");
    let grants = Grants {
        http: vec![HttpGrant {
            plain: true,
            host: "127.0.0.1".into(),
            port: Some(port),
            path: "/v1/*".into(),
            methods: vec!["GET".into()],
        }],
        ..Grants::default()
    };
    let path = rust_plugin("httpcall");
    let load = |reuse_instances| {
        let options = PluginOptions {
            grants: grants.clone(),
            reuse_instances,
        };
        Plugin::load(&runtime, "httpcall", &path, options)
            .and_then(|p| p.action("fetch"))
            .expect("httpcall.fetch")
    };
    let (fresh, reused) = (load(false), load(true));
    let ctx = context(&format!("http://127.0.0.1:{port}/v1/echo"));
    let checked = rt.block_on(fresh.run(ctx.clone())).expect("the step runs");
    assert_eq!(checked.expect("a patch")["response"]["status"], 200);

    let mut g = c.benchmark_group("http_request");
    g.bench_function("native", |b| {
        b.iter(|| rt.block_on(native_get(black_box(port))))
    });
    g.bench_function("plugin_fresh_instance", |b| {
        b.iter(|| {
            rt.block_on(fresh.run(black_box(ctx.clone())))
                .expect("fetch")
        })
    });
    g.bench_function("plugin_reused_instance", |b| {
        b.iter(|| {
            rt.block_on(reused.run(black_box(ctx.clone())))
                .expect("fetch")
        })
    });
    g.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
