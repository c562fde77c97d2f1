//! The sink used when no Pub/Sub is configured: every accepted message is appended to a local
//! file as one JSON line shaped like a message in a Pub/Sub pull (`topic`, `messageId`,
//! `publishTime`, base64 `data`, `attributes`), so whatever reads Pub/Sub output can read this
//! file the same way.
//!
//! Durability: `publish` returns once its line has been written and flushed to the operating
//! system, so a crash of this process loses nothing acknowledged; a crash of the machine can lose
//! the lines written since the last fsync, which happens only in `flush()` at shutdown (an fsync
//! per line would cap throughput at the disk's sync rate).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::Serialize;
use shared::TopicName;

use super::{Message, Sink, SinkError};

/// Appends messages as JSON lines to one file; one writer, so lines never interleave.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    // A std mutex: it is only taken inside `spawn_blocking`, never across an `.await`.
    file: Arc<Mutex<File>>,
    // Message ids are `{open time in µs}-{sequence}`, unique across restarts of the process.
    id_prefix: i64,
    sequence: AtomicU64,
}

/// One line of the file, in the field order and spelling of a Pub/Sub pull.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    topic: String,
    message_id: String,
    publish_time: String,
    data: String,
    attributes: &'a BTreeMap<String, String>,
}

impl FileSink {
    /// Opens `path` for appending, creating it if needed.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_owned();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?
            .into_std()
            .await;
        Ok(Self {
            path,
            file: Arc::new(Mutex::new(file)),
            id_prefix: jiff::Timestamp::now().as_microsecond(),
            sequence: AtomicU64::new(0),
        })
    }

    /// The file the messages go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn render(&self, topic: &TopicName, message: &Message) -> Result<Vec<u8>, serde_json::Error> {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let line = Line {
            topic: topic.to_string(),
            message_id: format!("{}-{sequence}", self.id_prefix),
            publish_time: jiff::Timestamp::now().to_string(),
            data: shared::proto3::encode_base64(&message.data),
            attributes: &message.attributes,
        };
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Runs `work` on the file in a blocking thread, so file I/O never stalls the runtime.
    async fn with_file<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut File) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            // Poisoning is harmless here: `append_line` never leaves half a line behind.
            let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut file)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Appends one whole line, unbuffered, so it has reached the OS when this returns. If a write
/// fails part-way (a full disk), the part already written is cut off again, so the next line
/// does not continue a broken one.
fn append_line(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while written < line.len() {
        match file.write(&line[written..]) {
            Ok(0) => return Err(undo(file, written, std::io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(undo(file, written, e)),
        }
    }
    Ok(())
}

/// Truncates the `written` bytes of a failed line; returns the error that made it fail.
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
        let unavailable = |detail: String| SinkError::Unavailable {
            topic: topic.to_string(),
            detail,
        };
        let line = self
            .render(topic, &message)
            .map_err(|e| unavailable(format!("could not encode the message: {e}")))?;
        self.with_file(move |file| append_line(file, &line))
            .await
            .map_err(|e| unavailable(format!("could not write to {}: {e}", self.path.display())))
    }

    async fn flush(&self) {
        let synced = self.with_file(|file| file.sync_all()).await;
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

    fn topic() -> TopicName {
        TopicName::parse("projects/my-project/topics/events").unwrap()
    }

    fn message(data: &[u8], device: &str) -> Message {
        let attributes = [
            ("deviceId", device),
            ("deviceNumId", "2820037566240817"),
            ("deviceRegistryId", "reg"),
            ("deviceRegistryLocation", "europe-west1"),
            ("projectId", "my-project"),
            ("subFolder", "a/b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Message {
            data: data.to_vec(),
            attributes,
        }
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
        let attributes: BTreeMap<String, String> =
            serde_json::from_value(line["attributes"].clone()).unwrap();
        assert_eq!(attributes, sent.attributes);
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
    async fn a_file_that_cannot_be_written_makes_the_sink_unavailable() {
        // /dev/full accepts the open but fails every write with ENOSPC.
        let Ok(sink) = FileSink::open("/dev/full").await else {
            panic!("/dev/full is needed for this test (Linux)");
        };
        let result = sink.publish(&topic(), message(b"hi", "dev")).await;
        assert!(
            matches!(result, Err(SinkError::Unavailable { .. })),
            "{result:?}"
        );
    }
}
