//! What both modes share around the connections: the connect phase (bounded concurrency, every
//! connection reporting in before the measured part starts) and the tallies of failures and
//! errors that go into the JSON line. Keys are flat so a shell script can pick them out.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::cli::Target;
use crate::conn::{ConnectError, Connection};

/// At most this many distinct error messages are kept as samples; the rest are only counted.
const ERROR_SAMPLES: usize = 5;

/// Connect failures by kind, e.g. `{"refused: BadUserNamePassword": 3}`.
#[derive(Debug, Default, Serialize)]
pub struct ConnectFailures {
    pub connect_failures: u64,
    pub connect_failure_kinds: BTreeMap<String, u64>,
}

impl ConnectFailures {
    pub fn add(&mut self, error: &ConnectError) {
        self.connect_failures += 1;
        *self.connect_failure_kinds.entry(error.kind()).or_default() += 1;
    }
}

/// Errors after CONNECT: counted, with the first few distinct messages kept.
#[derive(Debug, Default, Serialize)]
pub struct Errors {
    pub errors: u64,
    pub error_samples: Vec<String>,
}

impl Errors {
    pub fn add(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }
}

/// What a connection task gets once every connection has reported in: when the measured part
/// began, so each task can derive its own deadlines from the one instant.
#[derive(Debug, Clone, Copy)]
pub struct Go {
    pub start: Instant,
}

/// What a connection task ends with: its body's result, or why it never connected.
pub type Outcome<T> = Result<T, ConnectError>;

/// Spawns one task per connection: each connects (at most `connect_concurrency` at once), reports
/// in, waits for the start, then runs `body`. Returns the task handles, the start instant and how
/// many connected, once the last connection has reported in.
pub async fn connect_all<T, F, Fut>(
    target: &Arc<Target>,
    body: F,
) -> (Vec<tokio::task::JoinHandle<Outcome<T>>>, ConnectPhase)
where
    T: Send + 'static,
    F: Fn(Connection, u64, Go) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let began = Instant::now();
    let permits = Arc::new(Semaphore::new(target.connect_concurrency));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<bool>();
    let (go_tx, go_rx) = watch::channel(None::<Go>);
    let mut tasks = Vec::with_capacity(target.connections);
    for n in 0..target.connections as u64 {
        let index = target.first_index + n;
        let (target, permits, ready_tx, mut go_rx, body) = (
            target.clone(),
            permits.clone(),
            ready_tx.clone(),
            go_rx.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let opened = {
                let _permit = permits.acquire().await;
                Connection::open(&target, index).await
            };
            let _ = ready_tx.send(opened.is_ok());
            drop(ready_tx);
            let conn = opened?;
            // The sender outlives every task (`ConnectPhase::finish`), so this only waits.
            let go = match go_rx.wait_for(Option::is_some).await {
                Ok(go) => *go,
                Err(_) => None,
            };
            let go = go.unwrap_or(Go {
                start: Instant::now(),
            });
            Ok(body(conn, index, go).await)
        }));
    }
    drop(ready_tx);
    // Every task reports exactly once, connected or not; a panicked task just never does.
    let mut connected = 0;
    for _ in 0..target.connections {
        match ready_rx.recv().await {
            Some(ok) => connected += u64::from(ok),
            None => break,
        }
    }
    let phase = ConnectPhase {
        connected,
        connect_secs: began.elapsed().as_secs_f64(),
        start: Instant::now(),
        go: go_tx,
    };
    let _ = phase.go.send(Some(Go { start: phase.start }));
    (tasks, phase)
}

/// The end of the connect phase; holds the start signal's sender until the run is over.
#[derive(Debug)]
pub struct ConnectPhase {
    pub connected: u64,
    pub connect_secs: f64,
    pub start: Instant,
    go: watch::Sender<Option<Go>>,
}

impl ConnectPhase {
    /// Consumed after joining, so the start signal provably outlived every task.
    pub fn finish(self) -> Duration {
        drop(self.go);
        self.start.elapsed()
    }
}

pub fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
