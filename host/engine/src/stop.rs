//! Asking a drive to stop: the first request lets the step in flight finish and be saved, the
//! second abandons it. Front ends turn their own events (Ctrl-C, SIGTERM, a shutdown) into
//! requests; the engine knows no signals.

use tokio::sync::watch;

/// The sending side: cheap to clone, usable from any thread or signal handler task.
#[derive(Clone, Debug)]
pub struct Stop(watch::Sender<u32>);

/// The receiving side, given to a [`Driver`](crate::Driver).
#[derive(Clone, Debug)]
pub struct StopRequests(watch::Receiver<u32>);

impl Stop {
    /// A new pair with no request made.
    pub fn new() -> (Stop, StopRequests) {
        let (tx, rx) = watch::channel(0);
        (Stop(tx), StopRequests(rx))
    }

    /// Makes one more request and returns how many have been made.
    pub fn request(&self) -> u32 {
        let mut n = 0;
        self.0.send_modify(|count| {
            *count += 1;
            n = *count;
        });
        n
    }
}

impl StopRequests {
    /// Requests that will never come, for drives nobody stops.
    pub fn never() -> Self {
        Stop::new().1
    }

    /// How many requests have been made.
    pub fn count(&self) -> u32 {
        *self.0.borrow()
    }

    /// Resolves once at least `n` requests have been made (never, if the sender is gone first).
    pub async fn reached(&self, n: u32) {
        let mut rx = self.0.clone();
        if rx.wait_for(|count| *count >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_counted_and_awaited() {
        let (stop, requests) = Stop::new();
        assert_eq!(requests.count(), 0);
        assert_eq!(stop.request(), 1);
        requests.reached(1).await;
        assert_eq!(stop.request(), 2);
        requests.reached(2).await;
        assert_eq!(requests.count(), 2);
    }
}
