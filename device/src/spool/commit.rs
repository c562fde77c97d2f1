//! Group commit in front of the [`Spool`]: producers hand records to one writer task, which
//! writes each batch at once (so it survives `kill -9` from then on) and fsyncs at most once per
//! `window` (so an SD card sees one sync per window however fast readings come), or sooner once
//! thousands of readings wait (a backlog piped in at once). A producer's
//! [`Committer::append`] returns only after the fsync that covers its record: that is the moment
//! a reading counts as accepted, and the longest it waits is one window plus one fsync.
//!
//! After each write the writer offers the new records to the sender's fresh lane, so that a new
//! reading goes out at once even while an old backlog drains.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::{Entry, Spool, SpoolError};

/// Readings taken from producers in one write.
const BATCH: usize = 512;
/// Readings waiting for their fsync that start one at once, window or not: a fast producer
/// (a backlog piped into stdin) is then limited by the disk, not by the window.
const COMMIT_EARLY: usize = 512;

type Reply = oneshot::Sender<Result<u64, SpoolError>>;

/// The producers' handle: cheap to clone.
#[derive(Debug, Clone)]
pub struct Committer {
    tx: mpsc::Sender<(Vec<u8>, Reply)>,
}

/// What the writer tells the sender.
#[derive(Debug)]
pub struct Signals {
    /// Bumped after every write: there may be something new to send.
    pub written: watch::Receiver<u64>,
    /// New records, for the sender to try first; may miss some when the sender is busy (the
    /// spool's cursor finds those).
    pub fresh: mpsc::Receiver<Entry>,
}

impl Committer {
    /// Starts the writer task. It ends once every `Committer` is dropped, after a final fsync.
    pub fn start(
        spool: Arc<Spool>,
        window: Duration,
    ) -> (Self, Signals, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(BATCH * 4);
        let (written_tx, written) = watch::channel(0);
        let (fresh_tx, fresh) = mpsc::channel(64);
        let task = tokio::spawn(writer(spool, window, rx, written_tx, fresh_tx));
        (Self { tx }, Signals { written, fresh }, task)
    }

    /// Queues `record` and waits until it is on disk and fsynced; returns its seq.
    pub async fn append(&self, record: Vec<u8>) -> Result<u64, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((record, reply))
            .await
            .map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }
}

async fn writer(
    spool: Arc<Spool>,
    window: Duration,
    mut rx: mpsc::Receiver<(Vec<u8>, Reply)>,
    written: watch::Sender<u64>,
    fresh: mpsc::Sender<Entry>,
) {
    let mut waiting: Vec<(Reply, u64)> = Vec::new();
    let mut last_sync = Instant::now()
        .checked_sub(window)
        .unwrap_or_else(Instant::now);
    loop {
        let deadline = last_sync + window;
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { break };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                write_batch(&spool, batch, &mut waiting, &fresh);
                written.send_modify(|n| *n += 1);
                if waiting.len() >= COMMIT_EARLY {
                    sync_and_answer(&spool, &mut waiting).await;
                    last_sync = Instant::now();
                }
            }
            () = tokio::time::sleep_until(deadline), if !waiting.is_empty() => {
                sync_and_answer(&spool, &mut waiting).await;
                last_sync = Instant::now();
            }
        }
    }
    sync_and_answer(&spool, &mut waiting).await;
}

fn write_batch(
    spool: &Spool,
    batch: Vec<(Vec<u8>, Reply)>,
    waiting: &mut Vec<(Reply, u64)>,
    fresh: &mpsc::Sender<Entry>,
) {
    let (records, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match spool.write(&records) {
        Ok(seqs) => {
            for ((reply, seq), bytes) in replies.into_iter().zip(seqs).zip(records) {
                waiting.push((reply, seq));
                let _ = fresh.try_send(Entry { seq, bytes });
            }
        }
        Err(err) => {
            tracing::error!(error = %err, "cannot write readings to the spool");
            let text = err.to_string();
            for reply in replies {
                let _ = reply.send(Err(SpoolError::Io {
                    path: std::path::PathBuf::new(),
                    source: std::io::Error::other(text.clone()),
                }));
            }
        }
    }
}

async fn sync_and_answer(spool: &Arc<Spool>, waiting: &mut Vec<(Reply, u64)>) {
    if waiting.is_empty() {
        return;
    }
    let spool = spool.clone();
    let synced = tokio::task::spawn_blocking(move || spool.sync()).await;
    let outcome = match synced {
        Ok(result) => result.map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = &outcome {
        tracing::error!(error = %err, "cannot fsync the spool");
    }
    let count = waiting.len();
    for (reply, seq) in waiting.drain(..) {
        let answer = match &outcome {
            Ok(()) => Ok(seq),
            Err(text) => Err(SpoolError::Io {
                path: std::path::PathBuf::new(),
                source: std::io::Error::other(text.clone()),
            }),
        };
        let _ = reply.send(answer);
    }
    tracing::debug!(count, "spool commit");
}
