//! The durable queue between the readings and the network: an append-only log of segment files
//! plus an ack file, in one directory, pure Rust so it runs wherever the agent does.
//!
//! - A record is `len (u32) | crc32 (u32) | seq (u64) | bytes`, little-endian; the CRC covers the
//!   seq and the bytes, so a record torn by a power cut is found on the next start and the
//!   segment is cut back to the last whole record.
//! - Segments are named by the seq of their first record and hold about `segment_bytes` each.
//! - Sending is out of order (several requests in flight), so acks are kept as a set above a
//!   low-water mark (every seq at or below it is acked), and appended to `acks` as they come.
//!   A segment whose every record is acked is deleted, and `acks` is rewritten without its seqs.
//!   Each ack is written to the file at once, but the file is never fsynced on its own: a killed
//!   agent resends nothing; an ack lost in a power cut only means that reading is sent again,
//!   and readings carry ids for exactly that case.
//! - Full (`max_bytes`): the oldest segment is deleted with whatever it still held, and the
//!   readings lost so are counted ([`Spool::dropped`]) and logged: the newest readings are the
//!   ones an owner wants after a long outage.
//!
//! Durability is the caller's choice of when to call [`Spool::sync`]: [`commit`] calls it at
//! most once per window and tells each producer only after the fsync that covers its record.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod commit;

const HEADER: usize = 16;
/// A record larger than this is refused; events are at most 256 KB on the wire anyway.
pub const MAX_RECORD: usize = 1024 * 1024;

/// A spool failure: the disk, mostly.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record is larger than the spool takes.
    #[error("a reading of {0} bytes is larger than the spool takes ({MAX_RECORD} bytes)")]
    TooLarge(usize),
    /// The spool's writer has stopped (the agent is shutting down).
    #[error("the spool is closed")]
    Closed,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A record handed to a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log.
    pub seq: u64,
    /// The bytes stored.
    pub bytes: Vec<u8>,
}

/// What the spool holds, for logs and the state report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written and not yet acked.
    pub pending: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Records dropped because the spool was full, since this process started.
    pub dropped: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// The seq after its last record.
    end_seq: u64,
    /// Bytes written.
    len: u64,
}

#[derive(Debug)]
struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// The segment being written.
    writer: File,
    next_seq: u64,
    low_water: u64,
    acked: BTreeSet<u64>,
    claimed: HashSet<u64>,
    ack_log: BufWriter<File>,
    /// Read position: segment (by first seq), byte offset.
    cursor: (u64, u64),
    /// The segment the cursor reads, open.
    reader: Option<(u64, File)>,
    /// Files written since the last sync.
    unsynced: Vec<File>,
    dir_dirty: bool,
    dropped: u64,
}

/// The on-disk queue. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, repairing a torn last record and skipping what an
    /// earlier run had acked.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments = scan_segments(dir)?;
        let next_seq = segments.values().next_back().map_or(1, |s| s.end_seq);
        let oldest = segments.keys().next().copied().unwrap_or(next_seq);
        let ack_path = dir.join("acks");
        let mut acked: BTreeSet<u64> = read_acks(&ack_path)?
            .into_iter()
            .filter(|seq| *seq >= oldest)
            .collect();
        let mut low_water = oldest.saturating_sub(1);
        while acked.remove(&(low_water + 1)) {
            low_water += 1;
        }
        if segments.is_empty() {
            let segment = new_segment(dir, next_seq)?;
            segments.insert(next_seq, segment);
        }
        let (active_first, active) = segments
            .iter()
            .next_back()
            .map(|(first, s)| (*first, s.path.clone()))
            .ok_or(SpoolError::Closed)?;
        let writer = OpenOptions::new()
            .append(true)
            .open(&active)
            .map_err(io(&active))?;
        let ack_log = open_ack_log(&ack_path, low_water, &acked)?;
        let cursor = (segments.keys().next().copied().unwrap_or(active_first), 0);
        let spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(16 * 1024, 1024 * 1024),
            inner: Mutex::new(Inner {
                segments,
                writer,
                next_seq,
                low_water,
                acked,
                claimed: HashSet::new(),
                ack_log,
                cursor,
                reader: None,
                unsynced: Vec::new(),
                dir_dirty: true,
                dropped: 0,
            }),
        };
        spool.lock().delete_acked_segments(&spool.dir)?;
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state: at worst a resend.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes records (not yet fsynced) and returns their seqs. Makes room first when the spool
    /// is full.
    pub fn write(&self, records: &[Vec<u8>]) -> Result<Vec<u64>, SpoolError> {
        if let Some(big) = records.iter().find(|r| r.len() > MAX_RECORD) {
            return Err(SpoolError::TooLarge(big.len()));
        }
        let mut inner = self.lock();
        let mut seqs = Vec::with_capacity(records.len());
        let mut buffer = Vec::new();
        for record in records {
            if inner.active().len >= self.segment_bytes {
                inner.flush_into_active(&mut buffer)?;
                inner.roll(&self.dir)?;
            }
            let seq = inner.next_seq;
            encode(&mut buffer, seq, record);
            inner.next_seq += 1;
            let active = inner.active_mut();
            active.end_seq = seq + 1;
            active.len += (HEADER + record.len()) as u64;
            seqs.push(seq);
        }
        inner.flush_into_active(&mut buffer)?;
        let written = inner.writer.try_clone().map_err(io(&self.dir))?;
        inner.unsynced.push(written);
        inner.enforce_bound(self.max_bytes)?;
        Ok(seqs)
    }

    /// Makes everything written so far durable: one fsync per file touched, and one of the
    /// directory when a segment was created. The lock is not held during the fsyncs.
    pub fn sync(&self) -> Result<(), SpoolError> {
        let (files, dir_dirty) = {
            let mut inner = self.lock();
            let _ = inner.ack_log.flush();
            let dirty = std::mem::take(&mut inner.dir_dirty);
            (std::mem::take(&mut inner.unsynced), dirty)
        };
        let mut last = None::<u64>;
        for file in files {
            // Several clones of one segment: syncing one syncs them all.
            let id = file
                .metadata()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .ok();
            if id.is_some() && id == last {
                continue;
            }
            file.sync_data().map_err(io(&self.dir))?;
            last = id;
        }
        if dir_dirty {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(())
    }

    /// The oldest record not acked and not being sent, claimed for the caller.
    pub fn next(&self) -> Result<Option<Entry>, SpoolError> {
        let mut inner = self.lock();
        loop {
            let (first, offset) = inner.cursor;
            let Some(segment) = inner.segments.get(&first) else {
                // The segment was dropped or deleted: go on at the next one.
                match inner.segments.range(first..).next() {
                    Some((next, _)) => {
                        inner.cursor = (*next, 0);
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            if offset >= segment.len {
                let later = inner.segments.range(first + 1..).next().map(|(f, _)| *f);
                match later {
                    Some(next) => {
                        inner.cursor = (next, 0);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let path = segment.path.clone();
            let reader = match inner.reader.take() {
                Some((open, file)) if open == first => file,
                _ => File::open(&path).map_err(io(&path))?,
            };
            let record = read_record(&reader, &path, offset);
            inner.reader = Some((first, reader));
            let (seq, bytes) = record?;
            inner.cursor.1 = offset + (HEADER + bytes.len()) as u64;
            if inner.is_done(seq) || !inner.claimed.insert(seq) {
                continue;
            }
            return Ok(Some(Entry { seq, bytes }));
        }
    }

    /// Claims a record that the caller already holds (a fresh one, handed over by the writer):
    /// true when nobody sends it yet and it is not acked.
    pub fn claim(&self, seq: u64) -> bool {
        let mut inner = self.lock();
        !inner.is_done(seq) && inner.claimed.insert(seq)
    }

    /// The server accepted the record (or refused it for good): it never needs sending again.
    pub fn ack(&self, seq: u64) -> Result<(), SpoolError> {
        let mut inner = self.lock();
        inner.claimed.remove(&seq);
        if inner.is_done(seq) {
            return Ok(());
        }
        let ack_path = self.dir.join("acks");
        // Written through at once (no fsync): a killed agent then resends nothing it had
        // delivered; only a power cut can lose the last acks (to the page cache).
        let log = &mut inner.ack_log;
        log.write_all(&seq.to_le_bytes())
            .and_then(|()| log.flush())
            .map_err(io(&ack_path))?;
        inner.acked.insert(seq);
        let before = inner.low_water;
        while let Some(next) = inner
            .acked
            .first()
            .copied()
            .filter(|s| *s == inner.low_water + 1)
        {
            inner.acked.remove(&next);
            inner.low_water = next;
        }
        if inner.low_water != before {
            inner.delete_acked_segments(&self.dir)?;
        }
        Ok(())
    }

    /// Counts for logs and the state report.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let written = inner.next_seq.saturating_sub(inner.low_water + 1);
        Stats {
            pending: written.saturating_sub(inner.acked.len() as u64),
            bytes: inner.bytes(),
            dropped: inner.dropped,
        }
    }

    /// Records dropped because the spool was full, since this process started.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

impl Inner {
    fn active(&self) -> &Segment {
        // There is always at least one segment: `open` and `roll` keep one.
        self.segments
            .values()
            .next_back()
            .unwrap_or_else(|| unreachable!("the spool always has a segment"))
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .unwrap_or_else(|| unreachable!("the spool always has a segment"))
    }

    fn is_done(&self, seq: u64) -> bool {
        seq <= self.low_water || self.acked.contains(&seq)
    }

    fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    fn flush_into_active(&mut self, buffer: &mut Vec<u8>) -> Result<(), SpoolError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let path = self.active().path.clone();
        // One write per batch: a reading is in the kernel (safe from `kill -9`) once it returns.
        self.writer.write_all(buffer).map_err(io(&path))?;
        buffer.clear();
        Ok(())
    }

    fn roll(&mut self, dir: &Path) -> Result<(), SpoolError> {
        let old = self.writer.try_clone().map_err(io(dir))?;
        self.unsynced.push(old);
        let segment = new_segment(dir, self.next_seq)?;
        self.writer = OpenOptions::new()
            .append(true)
            .open(&segment.path)
            .map_err(io(&segment.path))?;
        self.segments.insert(self.next_seq, segment);
        self.dir_dirty = true;
        Ok(())
    }

    /// Deletes the oldest segments (never the one being written) while over the bound.
    fn enforce_bound(&mut self, max_bytes: u64) -> Result<(), SpoolError> {
        while self.bytes() > max_bytes && self.segments.len() > 1 {
            let Some((first, segment)) = self.segments.pop_first() else {
                break;
            };
            let lost = (first..segment.end_seq)
                .filter(|seq| !self.is_done(*seq))
                .count() as u64;
            self.dropped += lost;
            tracing::warn!(
                dropped = lost,
                total_dropped = self.dropped,
                "the spool is full: dropped its oldest readings (raise spool.max_bytes to keep more)"
            );
            fs::remove_file(&segment.path).map_err(io(&segment.path))?;
            self.low_water = self.low_water.max(segment.end_seq - 1);
            let low = self.low_water;
            self.acked.retain(|seq| *seq > low);
            self.dir_dirty = true;
        }
        Ok(())
    }

    /// Deletes segments whose every record is acked, then rewrites the ack file without them.
    fn delete_acked_segments(&mut self, dir: &Path) -> Result<(), SpoolError> {
        let mut deleted = false;
        while self.segments.len() > 1 {
            let Some(segment) = self.segments.values().next() else {
                break;
            };
            if segment.end_seq > self.low_water + 1 {
                break;
            }
            let path = segment.path.clone();
            fs::remove_file(&path).map_err(io(&path))?;
            self.segments.pop_first();
            deleted = true;
        }
        if deleted {
            self.ack_log = open_ack_log(&dir.join("acks"), self.low_water, &self.acked)?;
            self.dir_dirty = true;
        }
        Ok(())
    }
}

fn encode(buffer: &mut Vec<u8>, seq: u64, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&len.to_le_bytes());
    buffer.extend_from_slice(&checksum(seq, bytes).to_le_bytes());
    buffer.extend_from_slice(&seq.to_le_bytes());
    buffer.extend_from_slice(bytes);
}

fn checksum(seq: u64, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}

/// Parses a record header: (len, crc, seq).
fn header(bytes: &[u8; HEADER]) -> (usize, u32, u64) {
    let [l0, l1, l2, l3, c0, c1, c2, c3, s @ ..] = *bytes;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    (
        len,
        u32::from_le_bytes([c0, c1, c2, c3]),
        u64::from_le_bytes(s),
    )
}

fn read_record(file: &File, path: &Path, offset: u64) -> Result<(u64, Vec<u8>), SpoolError> {
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, offset).map_err(io(path))?;
    let (len, _, seq) = header(&head);
    let mut bytes = vec![0u8; len.min(MAX_RECORD)];
    file.read_exact_at(&mut bytes, offset + HEADER as u64)
        .map_err(io(path))?;
    Ok((seq, bytes))
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn new_segment(dir: &Path, first: u64) -> Result<Segment, SpoolError> {
    let path = segment_path(dir, first);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    Ok(Segment {
        path,
        end_seq: first,
        len: 0,
    })
}

/// Finds the segments, checks every record, and cuts a torn tail off.
fn scan_segments(dir: &Path) -> Result<BTreeMap<u64, Segment>, SpoolError> {
    let mut segments = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segments.insert(first, scan_segment(path, first)?);
        }
    }
    Ok(segments)
}

fn scan_segment(path: PathBuf, first: u64) -> Result<Segment, SpoolError> {
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io(&path))?;
    let (mut offset, mut end_seq) = (0usize, first);
    while let Some(head) = bytes.get(offset..offset + HEADER) {
        let head: &[u8; HEADER] = head.try_into().unwrap_or(&[0; HEADER]);
        let (len, crc, seq) = header(head);
        let body = bytes.get(offset + HEADER..offset + HEADER + len);
        match body {
            Some(body) if checksum(seq, body) == crc && seq >= end_seq => {
                end_seq = seq + 1;
                offset += HEADER + len;
            }
            _ => break,
        }
    }
    if offset < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            cut = bytes.len() - offset,
            "the spool's last write was torn (power cut?): cutting the partial record off"
        );
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len(offset as u64).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
    }
    Ok(Segment {
        path,
        end_seq,
        len: offset as u64,
    })
}

fn read_acks(path: &Path) -> Result<Vec<u64>, SpoolError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(io(path)(err)),
    };
    // A torn last ack (a partial u64) is ignored: that reading is simply sent again.
    Ok(bytes
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok().map(u64::from_le_bytes))
        .collect())
}

/// Rewrites the ack file with only the acks above the low-water mark, atomically.
fn open_ack_log(
    path: &Path,
    low_water: u64,
    acked: &BTreeSet<u64>,
) -> Result<BufWriter<File>, SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut bytes = Vec::with_capacity(acked.len() * 8);
    for seq in acked.iter().filter(|s| **s > low_water) {
        bytes.extend_from_slice(&seq.to_le_bytes());
    }
    fs::write(&tmp, &bytes).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path))?;
    Ok(BufWriter::new(file))
}

#[cfg(test)]
mod tests;
