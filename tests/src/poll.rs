//! Bounded polling for what the saga and the view settle asynchronously: [`eventually`]
//! retries a check until it passes or time runs out, and [`ensure_that!`](crate::ensure_that)
//! turns a failed condition into the check's error.

use std::future::Future;
use std::time::{Duration, Instant};

/// Returns `Err(format!(...))` from the enclosing function when the condition is false; for
/// the closures given to [`eventually`].
#[macro_export]
macro_rules! ensure_that {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Polls `check` every 50 ms until it returns `Ok`, for at most `timeout`; panics with the
/// last error otherwise. Each attempt is bounded by the time left (at least 5 s).
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        let last = match tokio::time::timeout(left, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(err)) => err,
            Err(_) => "an attempt did not finish in time".to_owned(),
        };
        if Instant::now() >= deadline {
            panic!(
                "not reached within {timeout:?} ({attempts} attempts, {:?}); last: {last}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
