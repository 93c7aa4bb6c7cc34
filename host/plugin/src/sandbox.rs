//! What a plugin may touch: the grants a flow gives it, and the store data that enforces them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::secrets::Secrets;

mod http;

pub(crate) use http::HttpPolicy;
pub use http::{HttpGrant, HttpLimits};

/// What a plugin is allowed; everything not granted is denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables the plugin sees, name to value; it sees none of the host's own.
    pub env: BTreeMap<String, String>,
    /// Host directories the plugin may see.
    pub dirs: Vec<DirGrant>,
    /// Most linear memory one instance may use.
    pub memory_bytes: usize,
    /// Longest a single call may run before it is interrupted.
    pub timeout: Duration,
    /// Wasm instructions (roughly) a call may execute; needs a runtime with fuel enabled.
    pub fuel: Option<u64>,
    /// Largest patch or answer a step may return.
    pub max_output_bytes: usize,
    /// Most bytes of stdout/stderr kept per call (the rest is counted and dropped).
    pub max_log_bytes: usize,
    /// Values the plugin reads as environment variables and that nothing leaving the sandbox
    /// shows (`Secrets`).
    pub secrets: Secrets,
    /// What the plugin may call over HTTP (`wasi:http/outgoing-handler`); empty, every request
    /// is refused.
    pub http: Vec<HttpGrant>,
    /// How far each call's HTTP may go.
    pub http_limits: HttpLimits,
}

/// A host directory mapped into the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/data`.
    pub guest: String,
    /// Whether the plugin may create, change and delete files there.
    pub writable: bool,
}

impl Default for Grants {
    fn default() -> Self {
        Grants {
            env: BTreeMap::new(),
            dirs: Vec::new(),
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            fuel: None,
            max_output_bytes: 1 << 20,
            max_log_bytes: 64 << 10,
            secrets: Secrets::default(),
            http: Vec::new(),
            http_limits: HttpLimits::default(),
        }
    }
}

impl Grants {
    /// Builds the WASI context: nothing but what is granted, stdio captured.
    pub(crate) fn wasi(&self, output: &CapturedOutput) -> std::io::Result<WasiCtx> {
        let mut b = WasiCtx::builder();
        for (k, v) in &self.env {
            b.env(k, v);
        }
        for (k, v) in self.secrets.iter() {
            b.env(k, v);
        }
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.host.display())))?;
        }
        b.stdout(output.clone());
        b.stderr(output.clone());
        Ok(b.build())
    }
}

/// The data of one store: the WASI context, the resource table, the limiter, and who is calling
/// (for log lines).
pub(crate) struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: MemoryCap,
    pub tag: LogTag,
    /// When the guest code now running started, and how long it may run (its time limit);
    /// until then it yields to the executor at every epoch tick, so other runs driven by the
    /// same thread go on.
    pub started: Instant,
    pub time_limit: Duration,
    /// wasi:http's own state, and the policy every outgoing request passes.
    pub http_ctx: WasiHttpCtx,
    pub http: HttpPolicy,
}

/// Who a log line is about, and the secret values it must not show.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogTag {
    pub plugin: Arc<str>,
    pub run: Arc<str>,
    pub step: Arc<str>,
    pub secrets: Secrets,
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses memory growth past the cap and remembers that it did, so the error can say so.
pub(crate) struct MemoryCap {
    pub max_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A plugin's stdout and stderr, turned into log lines as they arrive (tagged with the step),
/// up to a cap per call; the rest is counted and dropped, never a trap.
#[derive(Clone, Debug)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Debug, Default)]
struct Captured {
    line: Vec<u8>,
    logged: usize,
    dropped: usize,
    cap: usize,
    tag: LogTag,
    /// The call's first non-empty line, for explaining a trap (a guest runtime's last words).
    first: Option<String>,
}

impl Captured {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = self.tag.secrets.redact(&text).into_owned();
        if self.first.is_none() && !text.trim().is_empty() {
            self.first = Some(text.trim().chars().take(300).collect());
        }
        let t = &self.tag;
        tracing::info!(
            plugin = &*t.plugin,
            run = &*t.run,
            step = &*t.step,
            "{}",
            text.trim_end()
        );
        self.line.clear();
    }
}

impl CapturedOutput {
    pub fn new(cap: usize) -> Self {
        CapturedOutput {
            inner: Arc::new(Mutex::new(Captured {
                cap,
                ..Captured::default()
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tags what follows with the call it belongs to.
    pub fn start_call(&self, tag: LogTag) {
        let mut c = self.lock();
        c.tag = tag;
        c.logged = 0;
        c.dropped = 0;
        c.first = None;
    }

    fn push(&self, bytes: &[u8]) {
        let mut c = self.lock();
        let room = c.cap.saturating_sub(c.logged).min(bytes.len());
        c.dropped += bytes.len() - room;
        c.logged += room;
        for chunk in bytes[..room].split_inclusive(|b| *b == b'\n') {
            c.line.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") {
                c.emit();
            }
        }
    }

    /// Logs a last unfinished line; returns how many bytes this call's output lost to the cap.
    pub fn end_call(&self) -> usize {
        let mut c = self.lock();
        c.emit();
        c.dropped
    }

    /// The first non-empty line this call printed (at most 300 characters).
    pub fn first_line(&self) -> Option<String> {
        self.lock().first.clone()
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
