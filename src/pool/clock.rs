//! The clock of the pools' bookkeeping: when a connection was returned (so
//! "idle for" is exact), when it expires, when a lease was taken (its hold
//! time, the leak watch).
//!
//! By default that is the monotonic system clock, the one tokio reads when
//! its time is not paused, and a lease reads it only once, when it is
//! returned: at checkout, deadpool has just read the same clock for its own
//! metrics, and that reading is used instead of a second one.
//!
//! With the `test-util` feature the bookkeeping follows tokio's clock, so a
//! test that pauses and advances time (`tokio::time::pause`,
//! `#[tokio::test(start_paused = true)]`) sees connections age, expire and
//! leak; this costs one more clock read per lease. Timeouts, waits, breaker
//! windows and the background intervals follow tokio's clock either way.
//! (tokio's clock outside a runtime is the system's: a lease dropped on a
//! thread without one is stamped with real time even in a paused test.)

use deadpool::managed::{Manager, Object};
use tokio::time::Instant;

/// Now, on the bookkeeping clock.
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(feature = "test-util")]
    {
        Instant::now()
    }
    #[cfg(not(feature = "test-util"))]
    {
        Instant::from_std(std::time::Instant::now())
    }
}

/// When deadpool handed out `obj`, on the bookkeeping clock.
#[inline]
pub(crate) fn checked_out<M: Manager>(obj: &Object<M>) -> Instant {
    #[cfg(feature = "test-util")]
    {
        let _ = obj;
        Instant::now()
    }
    #[cfg(not(feature = "test-util"))]
    {
        // deadpool stamps every object it recycles for a checkout; only a
        // connection opened for this checkout has no stamp.
        Object::metrics(obj)
            .recycled
            .map_or_else(now, Instant::from_std)
    }
}
