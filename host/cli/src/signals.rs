//! Ctrl-C, SIGTERM and SIGHUP become stop requests for the engine: the first lets the step in
//! flight finish and saves the run, the second abandons the step (it runs again on resume).

use stepflow_engine::{Stop, StopRequests};
use tokio::signal::unix::{SignalKind, signal};

/// Starts listening; the handlers are installed before this returns, so a signal that comes
/// before the first `.await` is counted rather than killing the process.
pub fn stop_requests() -> StopRequests {
    let (stop, requests) = Stop::new();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        match signal(kind) {
            Ok(mut signals) => {
                let stop = stop.clone();
                tokio::spawn(async move {
                    while signals.recv().await.is_some() {
                        if stop.request() == 1 {
                            tracing::warn!(
                                "stopping after the step in flight; a second Ctrl-C (or SIGTERM) \
                                 abandons it, and it runs again on resume"
                            );
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!("cannot listen for signal {kind:?} ({e}); it will stop at once")
            }
        }
    }
    requests
}
