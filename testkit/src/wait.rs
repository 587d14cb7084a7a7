//! Polling until a condition holds.

use std::future::Future;
use std::time::{Duration, Instant};

/// A condition that did not hold within its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    /// What was awaited.
    pub what: String,
    /// How long, whole seconds.
    pub seconds: u64,
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {} s waiting for {}",
            self.seconds, self.what
        )
    }
}

impl std::error::Error for Timeout {}

/// Polls `check` every 20 ms until it returns `Some`; panics with `what`
/// and `timeout` at the deadline (a test's assertion).
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 200 ms until it returns `Some`, failing with
/// [`Timeout`] after `timeout`.
pub async fn wait_for_async<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(Timeout {
                what: what.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
