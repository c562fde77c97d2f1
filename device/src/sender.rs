//! Drains the spool to the service. `concurrency` workers each take the oldest unsent reading,
//! send it, and ack it in the spool only after the server answered `200`; one of them serves the
//! fresh lane first, so a new reading goes out at once even behind a long backlog. The requests
//! share one HTTP client, i.e. one HTTP/2 connection over TLS (or a keep-alive pool over plain
//! HTTP).
//!
//! On a failure a worker keeps its reading and retries it: after an exponential backoff with
//! jitter on network errors, 5xx and 429 (never sooner than the server's `Retry-After`); at once
//! with a new token when the server says the token expired; after the longest backoff when the
//! device itself is refused (retrying cannot fix a bad key or an unknown device, but an operator
//! can, and the reading must not be lost meanwhile). A reading the server refuses for good
//! (malformed, too large) is logged and dropped, since it would block nothing but retry forever.
//!
//! For a gateway, one refused device behind it must not take every worker: when a reading of
//! such a device fails while another worker already retries one of that device, the reading is
//! [`Held`] in memory (still claimed, still in the spool) and the worker moves on; when the
//! retrying worker gets through, the held readings go back to the workers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};

use crate::readings::Queued;
use crate::spool::commit::Signals;
use crate::spool::{Entry, Spool};
use crate::token::TokenSource;
use crate::transport::{Failure, Transport};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Everything the workers share.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The queue.
    pub spool: Arc<Spool>,
    /// The way out.
    pub transport: Arc<Transport>,
    /// The device's token.
    pub tokens: TokenSource,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// How it is going, for logs without repetition.
    pub health: Arc<Health>,
    /// Readings of devices behind the gateway that wait for another worker's retry.
    pub held: Arc<Held>,
}

/// Readings of devices behind this gateway set aside while one worker per device retries.
#[derive(Debug, Default)]
pub struct Held {
    /// By device: the readings waiting; a device is here while a worker retries one of its.
    waiting: Mutex<HashMap<String, Vec<Entry>>>,
    /// Readings whose device got through again, for any worker.
    released: Mutex<VecDeque<Entry>>,
    /// Told when readings are released.
    wake: Notify,
}

impl Held {
    /// A reading of `device` failed: true when another worker is retrying that device, and
    /// `entry` is now held; false when the caller is to retry it (and is that device's
    /// retrier until [`Held::release`]).
    fn hold(&self, device: &str, entry: &Entry) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get_mut(device) {
            Some(entries) => {
                entries.push(entry.clone());
                true
            }
            None => {
                waiting.insert(device.to_owned(), Vec::new());
                false
            }
        }
    }

    /// The retrier of `device` is done: its held readings go back to the workers.
    fn release(&self, device: &str) {
        let entries = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(device)
            .unwrap_or_default();
        if !entries.is_empty() {
            self.released
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(entries);
            self.wake.notify_waiters();
        }
    }

    fn next_released(&self) -> Option<Entry> {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

/// Counts and the current trouble, so that an outage is logged once when it starts and once
/// when it ends, not by every worker on every retry.
#[derive(Debug, Default)]
pub struct Health {
    failing: AtomicBool,
    /// Readings the server accepted, since start.
    pub sent: AtomicU64,
    /// Readings the server refused for good, since start.
    pub rejected: AtomicU64,
}

impl Health {
    fn failed(&self, failure: &Failure) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            let hint = match failure {
                Failure::ClockWrong { .. } => {
                    " (the device clock seems wrong; check it with `iotcore-device doctor`)"
                }
                Failure::Refused { .. } => {
                    " (retrying cannot fix this; run `iotcore-device doctor`)"
                }
                _ => "",
            };
            tracing::warn!(
                error = %failure,
                "cannot send readings{hint}; they stay in the spool and are retried"
            );
        }
    }

    fn succeeded(&self, spool: &Spool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if self.failing.swap(false, Ordering::Relaxed) {
            let backlog = spool.stats().pending;
            tracing::info!(backlog, "sending again; draining the backlog");
        }
    }
}

impl Sender {
    /// Runs `concurrency` workers until `shutdown` turns true. Readings in flight then stay in
    /// the spool and go out after the next start.
    pub async fn run(self, signals: Signals, concurrency: usize, shutdown: watch::Receiver<bool>) {
        let fresh = Arc::new(AsyncMutex::new(signals.fresh));
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..concurrency.max(1) {
            let lane = (worker == 0).then(|| fresh.clone());
            let sender = self.clone();
            let written = signals.written.clone();
            let shutdown = shutdown.clone();
            workers.spawn(async move { sender.worker(lane, written, shutdown).await });
        }
        while workers.join_next().await.is_some() {}
    }

    async fn worker(
        self,
        fresh: Option<Arc<AsyncMutex<mpsc::Receiver<Entry>>>>,
        mut written: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            written.borrow_and_update();
            let entry = match &fresh {
                Some(lane) => self.fresh_entry(lane).await,
                None => None,
            };
            let entry = match entry.or_else(|| self.held.next_released()) {
                Some(entry) => Some(entry),
                None => match self.spool.next() {
                    Ok(entry) => entry,
                    Err(err) => {
                        tracing::error!(error = %err, "cannot read the spool");
                        None
                    }
                },
            };
            match entry {
                Some(entry) => self.deliver(entry, &mut shutdown).await,
                None => {
                    tokio::select! {
                        changed = written.changed() => {
                            if changed.is_err() {
                                // The writer is gone: nothing new will come; wait to be stopped.
                                let _ = shutdown.changed().await;
                            }
                        }
                        () = self.held.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// A fresh reading nobody else has claimed, if one is waiting.
    async fn fresh_entry(&self, lane: &AsyncMutex<mpsc::Receiver<Entry>>) -> Option<Entry> {
        let mut lane = lane.lock().await;
        while let Ok(entry) = lane.try_recv() {
            if self.spool.claim(entry.seq) {
                return Some(entry);
            }
        }
        None
    }

    /// Sends one reading until the server takes it (or refuses it for good), or shutdown; or
    /// holds it, when it is of a device behind this gateway that another worker retries.
    async fn deliver(&self, entry: Entry, shutdown: &mut watch::Receiver<bool>) {
        let Some(event) = Queued::decode(&entry.bytes) else {
            tracing::error!(
                seq = entry.seq,
                "an unreadable record in the spool; dropping it"
            );
            self.ack(entry.seq);
            return;
        };
        let Some(device) = event.device.clone() else {
            return self.retry(&entry, &event, shutdown).await;
        };
        match self.attempt(&event).await {
            Ok(()) => {
                self.ack(entry.seq);
                self.health.succeeded(&self.spool);
            }
            Err(_) if self.held.hold(&device, &entry) => {}
            Err(_) => {
                self.retry(&entry, &event, shutdown).await;
                self.held.release(&device);
            }
        }
    }

    /// Sends `event` until the server takes it (or refuses it for good), or shutdown.
    async fn retry(&self, entry: &Entry, event: &Queued, shutdown: &mut watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.max_backoff);
        let mut renewed = false;
        loop {
            let pause = match self.attempt(event).await {
                Ok(()) => {
                    self.ack(entry.seq);
                    self.health.succeeded(&self.spool);
                    return;
                }
                Err((Failure::TokenExpired { reason }, token)) if !renewed => {
                    tracing::info!(%reason, "the server says the token expired; signing a new one");
                    self.tokens.expired(&token);
                    renewed = true;
                    continue;
                }
                Err((Failure::TokenExpired { reason }, token)) => {
                    self.tokens.expired(&token);
                    let failure = Failure::ClockWrong {
                        reason: format!(
                            "{reason} (even a token signed just now: is the device clock right?)"
                        ),
                    };
                    self.health.failed(&failure);
                    backoff.next(None)
                }
                Err((Failure::Rejected { reason }, _)) => {
                    tracing::error!(%reason, seq = entry.seq, "the server refused this reading for good; dropping it");
                    self.health.rejected.fetch_add(1, Ordering::Relaxed);
                    self.ack(entry.seq);
                    return;
                }
                Err((
                    failure @ (Failure::Refused { .. }
                    | Failure::ClockWrong { .. }
                    | Failure::ConfigVersionAhead { .. }),
                    _,
                )) => {
                    self.health.failed(&failure);
                    self.max_backoff
                }
                Err((failure @ Failure::Transient { .. }, _)) => {
                    let after = match &failure {
                        Failure::Transient { after, .. } => *after,
                        _ => None,
                    };
                    self.health.failed(&failure);
                    backoff.next(after)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn attempt(&self, event: &Queued) -> Result<(), (Failure, String)> {
        let token = self.tokens.token().map_err(|err| {
            let reason = format!("cannot sign a token: {err}");
            let failure = Failure::Refused {
                reason,
                info_reason: None,
            };
            (failure, String::new())
        })?;
        let device = event.device.as_deref();
        self.transport
            .publish_event(&token, device, &event.payload, event.sub_folder.as_deref())
            .await
            .map_err(|failure| (failure, token))
    }

    fn ack(&self, seq: u64) {
        if let Err(err) = self.spool.ack(seq) {
            tracing::error!(error = %err, "cannot record a sent reading in the spool (it may be sent again)");
        }
    }
}

/// Exponential backoff with full jitter between half and all of the step, capped.
#[derive(Debug)]
pub struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    /// Starting at half a second, at most `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            step: FIRST_BACKOFF.min(max),
            max,
        }
    }

    /// The next pause: never shorter than the server's hint.
    pub fn next(&mut self, hint: Option<Duration>) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let jittered = step.mul_f64(0.5 + fastrand::f64() / 2.0);
        jittered.max(hint.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_retries_a_failing_device_and_the_others_hold_its_readings() {
        let held = Held::default();
        let entry = |seq| Entry { seq, bytes: vec![] };
        assert!(
            !held.hold("sensor-1", &entry(1)),
            "the first becomes the retrier"
        );
        assert!(held.hold("sensor-1", &entry(2)));
        assert!(held.hold("sensor-1", &entry(3)));
        assert!(!held.hold("sensor-2", &entry(4)), "each device has its own");
        assert_eq!(held.next_released(), None);
        held.release("sensor-1");
        let back: Vec<u64> = std::iter::from_fn(|| held.next_released())
            .map(|e| e.seq)
            .collect();
        assert_eq!(back, [2, 3]);
        assert!(
            !held.hold("sensor-1", &entry(5)),
            "a new retrier after the release"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap_and_honours_the_hint() {
        let mut backoff = Backoff::new(Duration::from_secs(8));
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.next(None)).collect();
        for (n, pause) in pauses.iter().enumerate() {
            let step = (FIRST_BACKOFF * 2u32.pow(n as u32)).min(Duration::from_secs(8));
            assert!(
                *pause >= step / 2 && *pause <= step,
                "{n}: {pause:?} vs {step:?}"
            );
        }
        assert!(pauses[7] >= Duration::from_secs(4));
        let hinted = Backoff::new(Duration::from_secs(8)).next(Some(Duration::from_secs(30)));
        assert_eq!(hinted, Duration::from_secs(30));
    }
}
