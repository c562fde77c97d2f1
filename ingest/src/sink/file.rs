//! The sink used when no Pub/Sub is configured: every accepted message is appended to a local
//! file as one JSON line shaped like a message in a Pub/Sub pull (`topic`, `messageId`,
//! `publishTime`, base64 `data`, `attributes`), so whatever reads Pub/Sub output can read this
//! file the same way.
//!
//! Durability: `publish` returns once its line has been written and flushed to the operating
//! system, so a crash of this process loses nothing acknowledged; a crash of the machine can lose
//! the lines written since the last fsync, which happens only in `flush()` at shutdown (an fsync
//! per line would cap throughput at the disk's sync rate).
//!
//! Group commit: publishers add their lines to one pending batch on the async side, and a
//! committer task takes the whole batch, writes it, then answers everyone in it. The committer
//! lets the other ready tasks run before it takes the batch, so under load a batch holds what
//! every connection had to say in that turn of the runtime: one `write` per batch, not per
//! message.
//!
//! Where the write runs: an append to the page cache takes microseconds, so the committer makes
//! it itself; handing every batch to a thread cost two context switches per batch, 13 % of the
//! CPU of a publish on one core (BENCHMARKS.md). But a write can block, for as long as the kernel
//! throttles a process with too many dirty pages on a slow disk (an SD card): while it blocks,
//! nothing else on that runtime thread runs, MQTT keep-alives included. So a write that took
//! longer than [`SLOW_WRITE`] sends the writes of the next [`SLOW_BACK_OFF`] to the writer thread,
//! where only the publishers wait; so does every fsync (shutdown's flush).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use shared::TopicName;
use tokio::sync::{Notify, oneshot};

use super::{Attributes, Message, Sink, SinkError};

type Done = oneshot::Sender<std::io::Result<()>>;

/// A write slower than this means the disk is pushing back: the committer stops writing itself.
pub const SLOW_WRITE: Duration = Duration::from_millis(5);

/// For how long after a slow write the writes go to the writer thread.
pub const SLOW_BACK_OFF: Duration = Duration::from_secs(30);

/// The open file, which the committer and the writer thread take turns to write.
type Shared = Arc<Mutex<File>>;

/// Appends messages as JSON lines to one file; one writer, so lines never interleave.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    batch: Arc<Batch>,
    // Ends the committer (and with it the writer thread) when the sink is dropped.
    committer: tokio::task::JoinHandle<()>,
    /// Batches the writer thread has written (the rest the committer wrote itself).
    thread_writes: Arc<AtomicU64>,
    // Message ids are `{open time in µs}-{sequence}`, unique across restarts of the process.
    id_prefix: i64,
    sequence: AtomicU64,
}

/// The lines waiting for the next write, and who waits on them.
#[derive(Debug, Default)]
struct Batch {
    pending: Mutex<Pending>,
    /// Told when a batch gets its first waiter.
    started: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The `publishTime` of every line in the batch: when its first line came. Pub/Sub too gives
    /// the messages of one publish call one time; reading the clock and formatting a time for
    /// each line cost more than the rest of the line.
    publish_time: String,
    waiting: Vec<Done>,
    /// Someone asked for an fsync once these lines are written.
    sync: bool,
}

/// One batch for the writer thread; `done` gets the buffer back (for reuse) and the outcome.
struct BatchWrite {
    bytes: Vec<u8>,
    sync: bool,
    done: oneshot::Sender<(Vec<u8>, std::io::Result<()>)>,
}

/// One line of the file, in the field order and spelling of a Pub/Sub pull: `{"topic",
/// "messageId", "publishTime", "data", "attributes"}`. Written by [`Line::encode`] straight into
/// the pending batch: the fields that never need escaping (the id, the time, base64) are written
/// as they are, not through serde's `collect_str`, which ran every formatted piece through the
/// JSON escaper (a tenth of a publish's instructions under callgrind; BENCHMARKS.md); strings
/// go through serde's escaper only when they hold something to escape.
struct Line<'a> {
    topic: &'a TopicName,
    message_id: MessageId,
    data: &'a [u8],
    attributes: &'a Attributes,
}

impl Line<'_> {
    /// Appends the line (without its newline) to `out`, stamped `publish_time` (RFC 3339).
    fn encode(&self, publish_time: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
        // A topic name's characters never need escaping (`TopicName` checks them).
        let (project, topic) = (self.topic.project().as_str(), self.topic.topic());
        let MessageId { prefix, sequence } = self.message_id;
        write!(
            out,
            "{{\"topic\":\"projects/{project}/topics/{topic}\",\"messageId\":\"{prefix}-{sequence}\",\"publishTime\":\"{publish_time}\",\"data\":\""
        )?;
        let start = out.len();
        let len = base64::encoded_len(self.data.len(), true)
            .ok_or_else(|| std::io::Error::other("the payload is too large to encode"))?;
        out.resize(start + len, 0);
        STANDARD
            .encode_slice(self.data, &mut out[start..])
            .map_err(std::io::Error::other)?;
        out.extend_from_slice(b"\",\"attributes\":{");
        for (i, (key, value)) in self.attributes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_string(out, key)?;
            out.push(b':');
            json_string(out, value)?;
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// Appends `text` as a JSON string: as it is when nothing in it needs escaping (ids and names
/// never do), else through serde's escaper.
fn json_string(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    let plain = |b: &u8| *b >= 0x20 && *b != b'"' && *b != b'\\';
    if text.as_bytes().iter().all(plain) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    Ok(serde_json::to_writer(out, text)?)
}

/// `{open time in µs}-{sequence}`.
#[derive(Clone, Copy)]
struct MessageId {
    prefix: i64,
    sequence: u64,
}

impl FileSink {
    /// Opens `path` for appending, creating it if needed. Must be called within a tokio runtime.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        Self::open_with(path.as_ref(), SLOW_WRITE).await
    }

    /// [`FileSink::open`] with the threshold above which a write counts as slow.
    async fn open_with(path: &Path, slow_write: Duration) -> std::io::Result<Self> {
        let path = path.to_owned();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?
            .into_std()
            .await;
        let file: Shared = Arc::new(Mutex::new(file));
        let (writes, queue) = mpsc::channel();
        let (followed, held) = (path.clone(), Arc::clone(&file));
        let thread_writes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&thread_writes);
        std::thread::Builder::new()
            .name("file-sink".into())
            .spawn(move || write_batches(&followed, &held, &queue, &counted))?;
        let batch = Arc::new(Batch::default());
        let writer = Writer {
            path: path.clone(),
            file,
            thread: writes,
            slow_write,
            inline_from: Instant::now(),
        };
        let committer = tokio::spawn(commit_batches(Arc::clone(&batch), writer));
        Ok(Self {
            path,
            batch,
            committer,
            thread_writes,
            id_prefix: jiff::Timestamp::now().as_microsecond(),
            sequence: AtomicU64::new(0),
        })
    }

    /// The file the messages go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many batches the writer thread wrote: fsyncs, and writes after a slow one.
    pub fn thread_writes(&self) -> u64 {
        self.thread_writes.load(Ordering::Relaxed)
    }

    fn line<'a>(&self, topic: &'a TopicName, message: &'a Message) -> Line<'a> {
        Line {
            topic,
            message_id: MessageId {
                prefix: self.id_prefix,
                sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            },
            data: &message.data,
            attributes: &message.attributes,
        }
    }

    /// Adds `line` (if any, serialized straight into the pending batch) and an fsync (if asked)
    /// to the batch, and waits until it is written.
    async fn commit(&self, line: Option<Line<'_>>, sync: bool) -> std::io::Result<()> {
        let (done, answer) = oneshot::channel();
        let first = {
            let mut pending = self.batch.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(line) = line {
                let start = pending.bytes.len();
                if pending.publish_time.is_empty() {
                    pending.publish_time = jiff::Timestamp::now().to_string();
                }
                let Pending {
                    bytes,
                    publish_time,
                    ..
                } = &mut *pending;
                if let Err(err) = line.encode(publish_time, bytes) {
                    pending.bytes.truncate(start);
                    return Err(std::io::Error::other(format!(
                        "could not encode the message: {err}"
                    )));
                }
                pending.bytes.push(b'\n');
            }
            pending.sync |= sync;
            pending.waiting.push(done);
            pending.waiting.len() == 1
        };
        if first {
            self.batch.started.notify_one();
        }
        answer
            .await
            .map_err(|_| std::io::Error::other("the file writer has stopped"))?
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        self.committer.abort();
    }
}

/// Where the committer's writes go: see the module documentation.
struct Writer {
    path: PathBuf,
    file: Shared,
    /// The writer thread.
    thread: mpsc::Sender<BatchWrite>,
    /// [`SLOW_WRITE`], or another threshold in tests.
    slow_write: Duration,
    /// Writes before this instant go to the thread (a recent write was slow).
    inline_from: Instant,
}

impl Writer {
    /// Writes `bytes` (and fsyncs if asked); gives the buffer back with the outcome, or `None`
    /// when the writer thread has stopped.
    async fn write(
        &mut self,
        bytes: Vec<u8>,
        sync: bool,
    ) -> Option<(Vec<u8>, std::io::Result<()>)> {
        if sync || Instant::now() < self.inline_from {
            let (done, written) = oneshot::channel();
            self.thread.send(BatchWrite { bytes, sync, done }).ok()?;
            return written.await.ok();
        }
        let started = Instant::now();
        let result = write_batch(&self.path, &self.file, &bytes, false);
        let took = started.elapsed();
        if took > self.slow_write {
            self.inline_from = Instant::now() + SLOW_BACK_OFF;
            tracing::warn!(
                file = %self.path.display(),
                ?took,
                "writing to the message file was slow (is the disk busy?): writes go through a \
                 separate thread for {SLOW_BACK_OFF:?}"
            );
        }
        Some((bytes, result))
    }
}

/// The committer task: takes each batch, writes it, answers its waiters. One write is in
/// flight at a time; lines arriving meanwhile form the next batch.
async fn commit_batches(batch: Arc<Batch>, mut writer: Writer) {
    let mut spare = Vec::new();
    loop {
        batch.started.notified().await;
        // The publishers woken with this one add their lines before the batch is taken.
        tokio::task::yield_now().await;
        let (bytes, waiting, sync) = {
            let mut pending = batch.pending.lock().unwrap_or_else(|e| e.into_inner());
            // The next batch gets its own publish time.
            pending.publish_time.clear();
            (
                std::mem::replace(&mut pending.bytes, std::mem::take(&mut spare)),
                std::mem::take(&mut pending.waiting),
                std::mem::take(&mut pending.sync),
            )
        };
        if waiting.is_empty() {
            spare = bytes;
            continue;
        }
        // Without the writer thread the waiters are dropped, which tells them it has stopped.
        let Some((mut bytes, result)) = writer.write(bytes, sync).await else {
            return;
        };
        bytes.clear();
        spare = bytes;
        for done in waiting {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(std::io::Error::new(err.kind(), err.to_string())),
            };
            // A publisher that gave up waiting has nobody to tell.
            let _ = done.send(answer);
        }
    }
}

/// The writer thread: writes each batch it is given (and fsyncs when asked), hands back the
/// buffer with the outcome.
fn write_batches(
    path: &Path,
    file: &Shared,
    queue: &mpsc::Receiver<BatchWrite>,
    written: &AtomicU64,
) {
    while let Ok(BatchWrite { bytes, sync, done }) = queue.recv() {
        let result = write_batch(path, file, &bytes, sync);
        written.fetch_add(1, Ordering::Relaxed);
        let _ = done.send((bytes, result));
    }
}

/// Appends `bytes` to the file at `path` (following it if it moved), then fsyncs if asked.
fn write_batch(path: &Path, file: &Shared, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
    follow_path(path, &mut file)?;
    append(&mut file, bytes)?;
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

/// Reopens the file when `path` no longer names the one held — deleted, or rotated away — so
/// that no acknowledged line goes into a file nobody can read any more. One `stat` per batch.
fn follow_path(path: &Path, file: &mut File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let held = file.metadata()?;
    let same =
        std::fs::metadata(path).is_ok_and(|now| (now.dev(), now.ino()) == (held.dev(), held.ino()));
    if !same {
        let fresh = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // What went to the old file stays there (a rotation keeps it): make it durable first.
        if let Err(err) = file.sync_all() {
            tracing::warn!(%err, "could not sync the message file that was moved or deleted");
        }
        *file = fresh;
        tracing::warn!(file = %path.display(), "the message file was deleted or moved; writing to a new one at its path");
    }
    Ok(())
}

/// Appends whole lines, unbuffered, so they have reached the OS when this returns. If a write
/// fails part-way (a full disk), the part already written is cut off again, so the next line
/// does not continue a broken one (and no line of a failed batch is left behind).
fn append(file: &mut File, lines: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while written < lines.len() {
        match file.write(&lines[written..]) {
            Ok(0) => return Err(undo(file, written, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(undo(file, written, e)),
        }
    }
    Ok(())
}

/// Truncates the `written` bytes of a failed batch; returns the error that made it fail.
fn undo(file: &File, written: usize, error: std::io::Error) -> std::io::Error {
    if written > 0 {
        let cut = file
            .metadata()
            .and_then(|m| file.set_len(m.len().saturating_sub(written as u64)));
        if let Err(cut) = cut {
            tracing::error!(%cut, "could not remove a partly written line from the message file");
        }
    }
    error
}

#[async_trait]
impl Sink for FileSink {
    async fn publish(&self, topic: &TopicName, message: Message) -> Result<(), SinkError> {
        self.commit(Some(self.line(topic, &message)), false)
            .await
            .map_err(|e| SinkError::NotWritten {
                topic: topic.to_string(),
                detail: format!("could not write to {}: {e}", self.path.display()),
            })
    }

    async fn flush(&self) {
        let synced = self.commit(None, true).await;
        if let Err(error) = synced {
            tracing::warn!(path = %self.path.display(), %error, "could not fsync the message file");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    fn topic() -> TopicName {
        TopicName::parse("projects/my-project/topics/events").unwrap()
    }

    fn message(data: &[u8], device: &str) -> Message {
        message_in(data, device, "a/b")
    }

    fn message_in(data: &[u8], device: &str, sub_folder: &str) -> Message {
        let shared = [
            ("deviceId", device),
            ("deviceNumId", "2820037566240817"),
            ("deviceRegistryId", "reg"),
            ("deviceRegistryLocation", "europe-west1"),
            ("projectId", "my-project"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Message {
            data: data.to_vec(),
            attributes: Attributes::new(Arc::new(shared), Some(sub_folder.to_owned())),
        }
    }

    #[tokio::test]
    async fn batches_are_written_inline_until_one_is_slow_and_fsyncs_go_to_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let sink = FileSink::open(&path).await.unwrap();
        for n in 0..10u8 {
            sink.publish(&topic(), message(&[n], "dev-1"))
                .await
                .unwrap();
        }
        assert_eq!(sink.thread_writes(), 0);
        sink.flush().await;
        assert_eq!(sink.thread_writes(), 1, "the fsync");

        // Every write counts as slow: the first is written inline, the next by the thread.
        let slow = FileSink::open_with(&path, Duration::ZERO).await.unwrap();
        slow.publish(&topic(), message(b"a", "dev-1"))
            .await
            .unwrap();
        assert_eq!(slow.thread_writes(), 0);
        slow.publish(&topic(), message(b"b", "dev-1"))
            .await
            .unwrap();
        assert_eq!(slow.thread_writes(), 1);
        let data: Vec<_> = read_lines(&path)
            .iter()
            .map(|line| line["data"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(data.len(), 12);
        assert_eq!(data[10..], ["YQ==", "Yg=="]);
    }

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_published_message_reads_back_as_a_pull_would_show_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let sink = FileSink::open(&path).await.unwrap();
        let sent = message(&[0, 1, 0xfb, 0xff, b'\n'], "dev-1");
        sink.publish(&topic(), sent.clone()).await.unwrap();

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["topic"], "projects/my-project/topics/events");
        assert!(!line["messageId"].as_str().unwrap().is_empty());
        let time: jiff::Timestamp = line["publishTime"].as_str().unwrap().parse().unwrap();
        assert!(jiff::Timestamp::now().duration_since(time).as_secs() < 60);
        let data = shared::proto3::decode_base64(line["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, sent.data);
        let attributes: std::collections::BTreeMap<String, String> =
            serde_json::from_value(line["attributes"].clone()).unwrap();
        assert_eq!(attributes, sent.attributes.to_map());
        assert_eq!(attributes["subFolder"], "a/b");
    }

    #[test]
    fn a_line_is_compact_json_in_the_order_of_a_pull_with_its_strings_escaped() {
        let sent = message_in(&[0, 1, 0xfb, 0xff, b'\n'], "dev-1", "a\"b\\c\n\u{1}");
        let time: jiff::Timestamp = "2026-12-05T00:01:02.345678Z".parse().unwrap();
        let topic = topic();
        let line = Line {
            topic: &topic,
            message_id: MessageId {
                prefix: 17,
                sequence: 4,
            },
            data: &sent.data,
            attributes: &sent.attributes,
        };
        let mut out = b"before".to_vec();
        line.encode(&time.to_string(), &mut out).unwrap();
        let text = std::str::from_utf8(&out[6..]).unwrap();
        assert!(text.starts_with(
            "{\"topic\":\"projects/my-project/topics/events\",\"messageId\":\"17-4\",\
             \"publishTime\":\"2026-12-05T00:01:02.345678Z\",\"data\":\"AAH7/wo=\",\"attributes\":{"
        ));
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["attributes"]["subFolder"], "a\"b\\c\n\u{1}");
        assert_eq!(value["attributes"]["deviceId"], "dev-1");
        assert_eq!(value["attributes"].as_object().unwrap().len(), 6);
        // The time reads back exactly as serde writes a timestamp.
        assert_eq!(value["publishTime"], serde_json::to_value(time).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishes_never_interleave_and_get_unique_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let sink = Arc::new(FileSink::open(&path).await.unwrap());
        let payload = vec![b'x'; 64 * 1024];
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let sink = Arc::clone(&sink);
                let sent = message(&payload, &format!("dev-{i}"));
                tokio::spawn(async move { sink.publish(&topic(), sent).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        sink.flush().await;

        let lines = read_lines(&path);
        assert_eq!(lines.len(), 200);
        let devices: HashSet<_> = lines
            .iter()
            .map(|l| l["attributes"]["deviceId"].clone())
            .collect();
        assert_eq!(devices.len(), 200);
        let ids: HashSet<_> = lines.iter().map(|l| l["messageId"].clone()).collect();
        assert_eq!(ids.len(), 200);
        for line in &lines {
            let data = shared::proto3::decode_base64(line["data"].as_str().unwrap()).unwrap();
            assert_eq!(data, payload);
        }
    }

    #[tokio::test]
    async fn reopening_appends_instead_of_truncating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        for device in ["first", "second"] {
            let sink = FileSink::open(&path).await.unwrap();
            sink.publish(&topic(), message(b"hi", device))
                .await
                .unwrap();
            sink.flush().await;
        }
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 2);
        assert_ne!(lines[0]["messageId"], lines[1]["messageId"]);
    }

    #[tokio::test]
    async fn a_deleted_or_rotated_file_is_followed_so_no_acknowledged_line_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let sink = FileSink::open(&path).await.unwrap();
        sink.publish(&topic(), message(b"1", "before"))
            .await
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        sink.publish(&topic(), message(b"2", "deleted"))
            .await
            .unwrap();
        let lines = read_lines(&path);
        assert_eq!(
            lines.len(),
            1,
            "the line acknowledged after the delete is at the path"
        );
        assert_eq!(lines[0]["attributes"]["deviceId"], "deleted");

        // Rotated the way logrotate does it: renamed, and the next line starts a new file.
        let rotated = dir.path().join("messages.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.publish(&topic(), message(b"3", "rotated"))
            .await
            .unwrap();
        assert_eq!(read_lines(&rotated).len(), 1);
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["attributes"]["deviceId"], "rotated");
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_written_is_refused_as_not_written() {
        // /dev/full accepts the open but fails every write with ENOSPC.
        let Ok(sink) = FileSink::open("/dev/full").await else {
            panic!("/dev/full is needed for this test (Linux)");
        };
        let result = sink.publish(&topic(), message(b"hi", "dev")).await;
        assert!(
            matches!(result, Err(SinkError::NotWritten { .. })),
            "{result:?}"
        );
    }
}
