//! Where a plugin call runs: on a worker thread of a multi-threaded runtime while other calls
//! are in flight, so the calls that one apply makes for several strands (a `parallel`'s
//! branches, a `for_each`'s instances) use every core instead of taking turns on one; alone, or
//! on a current-thread runtime, in place (a hand-over to a worker costs a lone call time).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use stepflow_model::{BoxFuture, StepError, StepResult};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;

/// Plugin calls of this process made and not yet finished.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts a call in flight until dropped.
struct InFlight;

impl InFlight {
    /// Counts one more; returns it with how many were in flight before.
    fn enter() -> (InFlight, usize) {
        (InFlight, IN_FLIGHT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `call`, spawned onto the runtime's workers when it has them and another call is in flight.
/// Dropping the returned future (a driver abandoning the apply) aborts the call, as dropping it
/// in place would.
pub(crate) fn on_worker<T: Send + 'static>(
    call: impl Future<Output = StepResult<T>> + Send + 'static,
) -> BoxFuture<'static, StepResult<T>> {
    let (counted, before) = InFlight::enter();
    let call = async move {
        let _counted = counted;
        call.await
    };
    match Handle::try_current() {
        Ok(runtime) if before > 0 && runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
            let mut task = AbortOnDrop(runtime.spawn(call));
            Box::pin(async move {
                match (&mut task.0).await {
                    Ok(result) => result,
                    Err(e) => Err(StepError::fatal(format!(
                        "the host's task for the call ended abnormally ({e}); this is a bug in stepflow"
                    ))),
                }
            })
        }
        _ => Box::pin(call),
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_beside_others_run_on_workers_of_a_multi_threaded_runtime_and_in_place_otherwise() {
        let thread = || std::thread::current().id();
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        // From outside the workers (block_on runs on this thread): a second call made while the
        // first is in flight runs on a worker. (Whether the first runs here depends on calls
        // of other tests in this process, so it is not asserted.)
        let here = thread();
        let (first, second) = multi.block_on(async {
            let first = on_worker(async move { Ok(thread()) });
            let second = on_worker(async move { Ok(thread()) });
            (first.await.unwrap(), second.await.unwrap())
        });
        let _ = first;
        assert_ne!(here, second);
        let single = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let there = single
            .block_on(async { on_worker(async move { Ok(thread()) }).await })
            .unwrap();
        assert_eq!(here, there);
    }

    #[test]
    fn dropping_the_call_aborts_its_task() {
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        multi.block_on(async {
            // Made inside the runtime beside another call, so it is spawned onto the worker.
            let _other = on_worker(async { Ok(()) });
            let call = on_worker(async move {
                let _keep = tx;
                std::future::pending::<()>().await;
                Ok(())
            });
            drop(call);
        });
        // The task owned the sender; once aborted it is dropped, and the channel closes. (The
        // limit only keeps a broken abort from hanging the test: it waits for the close.)
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(60)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
