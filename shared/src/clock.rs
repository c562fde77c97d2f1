//! Where the service reads the time: wall-clock time for token checks (`iat`, `exp`, how long a
//! verified token is trusted) and a monotonic instant for cache ages and rate buckets. Production
//! uses [`SystemClock`]; a test that would otherwise wait on real time hands in a clock it
//! moves by hand (`testkit::ManualClock`), so a measurement over 12 s of traffic takes a
//! fraction of a second and nothing depends on how loaded the machine is.

use std::fmt::Debug;
use std::time::Instant;

use jiff::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// Wall-clock time.
    fn now(&self) -> Timestamp;
    /// A monotonic instant, for ages and rates.
    fn instant(&self) -> Instant;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}
