use super::*;

fn records(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    range.map(|n| format!("reading {n}").into_bytes()).collect()
}

fn drain(spool: &Spool) -> Vec<Entry> {
    std::iter::from_fn(|| spool.next().unwrap()).collect()
}

#[test]
fn records_come_back_in_order_and_acked_ones_not_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let seqs = spool.write(&records(0..10)).unwrap();
        assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
        spool.sync().unwrap();
        let entries = drain(&spool);
        assert_eq!(entries.len(), 10);
        assert_eq!(entries[3].bytes, b"reading 3");
        assert!(
            spool.next().unwrap().is_none(),
            "claimed entries are not handed out twice"
        );
        for seq in [1, 2, 5, 9] {
            spool.ack(seq).unwrap();
        }
        assert_eq!(spool.stats().pending, 6);
    }
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let left: Vec<u64> = drain(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(left, [3, 4, 6, 7, 8, 10]);
    assert_eq!(
        spool.write(&records(0..1)).unwrap(),
        [11],
        "seqs go on after a restart"
    );
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.write(&records(0..3)).unwrap();
        spool.sync().unwrap();
    }
    let segment = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    // A power cut in the middle of the third record's write.
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let left: Vec<Vec<u8>> = drain(&spool).into_iter().map(|e| e.bytes).collect();
    assert_eq!(left, records(0..2));
    assert_eq!(spool.write(&records(7..8)).unwrap(), [3]);
    assert_eq!(spool.next().unwrap().unwrap().bytes, b"reading 7");
}

#[test]
fn fully_acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let big = vec![vec![7u8; 20_000]; 30];
    spool.write(&big).unwrap();
    let segments = || {
        fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count()
    };
    assert!(segments() > 2, "{} segments", segments());
    for entry in drain(&spool) {
        spool.ack(entry.seq).unwrap();
    }
    assert_eq!(segments(), 1, "only the segment being written stays");
    assert_eq!(spool.stats().pending, 0);
}

#[test]
fn a_full_spool_drops_its_oldest_readings_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 * 1024).unwrap();
    for n in 0..40u32 {
        spool
            .write(&[format!("{n:04}").repeat(1000).into_bytes()])
            .unwrap();
    }
    let stats = spool.stats();
    assert!(stats.bytes <= 64 * 1024, "{stats:?}");
    assert!(stats.dropped > 0, "{stats:?}");
    let left = drain(&spool);
    assert_eq!(left.len() as u64 + stats.dropped, 40);
    // What is left is the newest, in order.
    assert_eq!(left.last().unwrap().bytes, "0039".repeat(1000).into_bytes());
    assert!(left.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
}

#[test]
fn a_claimed_fresh_record_is_skipped_by_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.write(&records(0..3)).unwrap();
    assert!(spool.claim(3));
    assert!(!spool.claim(3), "one sender per record");
    let seqs: Vec<u64> = drain(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2]);
    spool.ack(3).unwrap();
    assert!(!spool.claim(3), "an acked record is never claimed again");
}

#[tokio::test]
async fn a_producer_hears_back_only_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = std::sync::Arc::new(Spool::open(dir.path(), 1 << 20).unwrap());
    let (committer, mut signals, writer) =
        commit::Committer::start(spool.clone(), std::time::Duration::from_millis(50));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100u32 {
        let committer = committer.clone();
        tasks.spawn(async move { committer.append(format!("r{n}").into_bytes()).await });
    }
    let mut seqs: Vec<u64> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        seqs.push(done.unwrap().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    assert!(
        signals.fresh.try_recv().is_ok(),
        "fresh records are offered to the sender"
    );
    drop(committer);
    writer.await.unwrap();
    let reopened = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(reopened.stats().pending, 100);
}

#[test]
fn acks_survive_the_process_being_killed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.write(&records(0..10)).unwrap();
    spool.sync().unwrap();
    drain(&spool);
    for seq in [1, 2, 5, 9] {
        spool.ack(seq).unwrap();
    }
    // As SIGKILL does: nothing of the spool's own runs (no drop, no flush at exit).
    std::mem::forget(spool);
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let left: Vec<u64> = drain(&spool).iter().map(|e| e.seq).collect();
    assert_eq!(
        left,
        [3, 4, 6, 7, 8, 10],
        "acked readings would be sent again"
    );
}
