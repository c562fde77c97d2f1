//! `publish` mode: every connection keeps `inflight` QoS 1 publishes awaiting their PUBACK and
//! refills as acks arrive, until the duration has passed or the shared count is used up; then it
//! waits (at most the ack timeout) for what is still in flight. Throughput counts acked messages
//! over the time from the start signal to the last connection's end, so connect time is excluded
//! and a server that acks slowly at the end pays for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use serde::Serialize;

use crate::cli::{PublishArgs, Target, check_bounded, expand};
use crate::conn::Connection;
use crate::hist::Histogram;
use crate::report::{self, ConnectFailures, Errors, Go};

/// Packet ids are 16 bits; half the space keeps allocation trivially bounded.
const MAX_INFLIGHT: usize = 32_768;
/// Largest payload (IoT Core's event limit is 256 KB; a little above lets that be tested).
const MAX_PAYLOAD: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Plan {
    pub inflight: usize,
    pub payload: Bytes,
    pub duration: Duration,
    pub count: Option<u64>,
    pub topic: String,
    pub ack_timeout: Duration,
}

impl Plan {
    pub fn from_args(args: &PublishArgs) -> anyhow::Result<Plan> {
        ensure!(
            (1..=MAX_INFLIGHT).contains(&args.inflight),
            "--inflight must be between 1 and {MAX_INFLIGHT}"
        );
        ensure!(
            args.payload <= MAX_PAYLOAD,
            "--payload must be at most {MAX_PAYLOAD} bytes"
        );
        ensure!(args.count != Some(0), "--count must be at least 1");
        check_bounded("--duration", args.duration)?;
        check_bounded("--ack-timeout", args.ack_timeout)?;
        Ok(Plan {
            inflight: args.inflight,
            payload: payload(args.payload),
            duration: args.duration,
            count: args.count,
            topic: args.topic.clone(),
            ack_timeout: args.ack_timeout,
        })
    }
}

/// Printable bytes, so a sink that stores text shows something recognisable.
fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The JSON line of a `publish` run.
#[derive(Debug, Serialize)]
pub struct PublishResult {
    pub mode: &'static str,
    pub target: String,
    pub connections: usize,
    pub connected: u64,
    #[serde(flatten)]
    pub connect: ConnectFailures,
    pub connect_secs: f64,
    pub inflight: usize,
    pub payload_bytes: usize,
    pub duration_secs: f64,
    pub elapsed_secs: f64,
    pub messages_sent: u64,
    pub messages_acked: u64,
    pub unacked: u64,
    pub msgs_per_sec: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    #[serde(flatten)]
    pub errors: Errors,
}

/// One connection's share of the result.
#[derive(Debug, Default)]
struct Stats {
    sent: u64,
    acked: u64,
    unacked: u64,
    latency: Histogram,
    error: Option<String>,
}

/// Publishes left for the whole run, shared by all connections.
#[derive(Debug)]
struct Budget(AtomicI64);

impl Budget {
    fn take(&self) -> bool {
        self.0.fetch_sub(1, Ordering::Relaxed) > 0
    }
}

pub async fn run(target: Arc<Target>, plan: Plan) -> anyhow::Result<PublishResult> {
    let budget = Arc::new(Budget(AtomicI64::new(
        plan.count
            .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX)),
    )));
    let plan = Arc::new(plan);
    let body = {
        let plan = plan.clone();
        move |conn, index, go| drive(conn, index, go, plan.clone(), budget.clone())
    };
    let (tasks, phase) = report::connect_all(&target, body).await;
    eprintln!(
        "mqtt-load: publish: {} of {} connected in {:.2} s; publishing for up to {:.1} s",
        phase.connected,
        target.connections,
        phase.connect_secs,
        plan.duration.as_secs_f64()
    );
    let mut result = empty_result(&target, &plan, &phase);
    let mut latency = Histogram::default();
    for task in tasks {
        match task.await.context("a connection task panicked")? {
            Ok(stats) => add_stats(&mut result, &mut latency, stats),
            Err(failure) => result.connect.add(&failure),
        }
    }
    let elapsed = phase.finish();
    finish_result(&mut result, &latency, elapsed);
    Ok(result)
}

fn empty_result(target: &Target, plan: &Plan, phase: &report::ConnectPhase) -> PublishResult {
    PublishResult {
        mode: "publish",
        target: target.describe(),
        connections: target.connections,
        connected: phase.connected,
        connect: ConnectFailures::default(),
        connect_secs: report::round3(phase.connect_secs),
        inflight: plan.inflight,
        payload_bytes: plan.payload.len(),
        duration_secs: plan.duration.as_secs_f64(),
        elapsed_secs: 0.0,
        messages_sent: 0,
        messages_acked: 0,
        unacked: 0,
        msgs_per_sec: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        errors: Errors::default(),
    }
}

fn add_stats(result: &mut PublishResult, latency: &mut Histogram, stats: Stats) {
    result.messages_sent += stats.sent;
    result.messages_acked += stats.acked;
    result.unacked += stats.unacked;
    latency.merge(&stats.latency);
    if let Some(error) = stats.error {
        result.errors.add(error);
    }
}

fn finish_result(result: &mut PublishResult, latency: &Histogram, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    result.elapsed_secs = report::round3(secs);
    result.msgs_per_sec = if secs > 0.0 {
        (result.messages_acked as f64 / secs).round() as u64
    } else {
        0
    };
    result.p50_ms = report::millis(latency.quantile_micros(0.50));
    result.p99_ms = report::millis(latency.quantile_micros(0.99));
    result.max_ms = report::millis(latency.max_micros());
}

/// The measured part of one connection, then DISCONNECT.
async fn drive(
    mut conn: Connection,
    index: u64,
    go: Go,
    plan: Arc<Plan>,
    budget: Arc<Budget>,
) -> Stats {
    let mut window = Window::new(&plan, index, go);
    let outcome = window.run(&mut conn, &budget).await;
    let mut stats = window.stats;
    stats.unacked = window.inflight.len() as u64;
    if let Err(error) = outcome {
        stats.error = Some(format!("connection {index}: {error}"));
    }
    conn.close().await;
    stats
}

/// The in-flight window of one connection: the publishes awaiting a PUBACK, by packet id.
struct Window {
    /// A PUBLISH encoded once; each send copies it and patches in the packet id.
    template: Vec<u8>,
    pkid_at: usize,
    inflight: HashMap<u16, Instant>,
    limit: usize,
    next_pkid: u16,
    stop_at: Instant,
    hard_end: Instant,
    ack_timeout: Duration,
    stats: Stats,
}

impl Window {
    fn new(plan: &Plan, index: u64, go: Go) -> Window {
        let (template, pkid_at) = encode_template(&expand(&plan.topic, index), &plan.payload);
        let stop_at = go.start + plan.duration;
        Window {
            template,
            pkid_at,
            inflight: HashMap::with_capacity(plan.inflight),
            limit: plan.inflight,
            next_pkid: 0,
            stop_at,
            hard_end: stop_at + plan.ack_timeout,
            ack_timeout: plan.ack_timeout,
            stats: Stats::default(),
        }
    }

    /// Refill, write the batch, wait for at least one packet, take every packet already read.
    async fn run(&mut self, conn: &mut Connection, budget: &Budget) -> Result<(), String> {
        loop {
            self.refill(conn, budget);
            if self.inflight.is_empty() {
                return Ok(());
            }
            let deadline = self.deadline();
            if conn.has_queued() {
                tokio::time::timeout_at(deadline.into(), conn.flush())
                    .await
                    .map_err(|_| "timed out writing publishes".to_owned())?
                    .map_err(|e| format!("writing publishes: {e}"))?;
            }
            let packet = tokio::time::timeout_at(self.deadline().into(), conn.next_packet())
                .await
                .map_err(|_| {
                    format!(
                        "no PUBACK within the timeout ({} in flight)",
                        self.inflight.len()
                    )
                })?
                .map_err(|e| format!("reading: {e}"))?;
            self.handle(packet)?;
            while let Some(packet) = conn.try_packet().map_err(|e| format!("reading: {e}"))? {
                self.handle(packet)?;
            }
        }
    }

    /// No ack for `ack_timeout`, or the run's hard end, whichever is sooner.
    fn deadline(&self) -> Instant {
        (Instant::now() + self.ack_timeout).min(self.hard_end)
    }

    fn refill(&mut self, conn: &mut Connection, budget: &Budget) {
        let now = Instant::now();
        if now >= self.stop_at {
            return;
        }
        while self.inflight.len() < self.limit && budget.take() {
            let pkid = self.allocate_pkid();
            self.template[self.pkid_at..self.pkid_at + 2].copy_from_slice(&pkid.to_be_bytes());
            conn.queue_raw(&self.template);
            self.inflight.insert(pkid, now);
            self.stats.sent += 1;
        }
    }

    /// The next packet id (1..=65535) not in flight; the window is at most half the space.
    fn allocate_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<(), String> {
        match packet {
            Packet::PubAck(ack) => match self.inflight.remove(&ack.pkid) {
                Some(sent) => {
                    self.stats.latency.record(sent.elapsed());
                    self.stats.acked += 1;
                    Ok(())
                }
                None => Err(format!("PUBACK for packet id {} not in flight", ack.pkid)),
            },
            Packet::PingResp | Packet::Publish(_) | Packet::SubAck(_) => Ok(()),
            Packet::Disconnect => Err("the server sent DISCONNECT".to_owned()),
            other => Err(format!("unexpected packet from the server: {other:?}")),
        }
    }
}

/// Encodes a QoS 1 PUBLISH with rumqttc's codec and finds where its packet id sits: right
/// after the topic, which follows the fixed header.
fn encode_template(topic: &str, payload: &Bytes) -> (Vec<u8>, usize) {
    let mut publish = Publish::from_bytes(topic, QoS::AtLeastOnce, payload.clone());
    publish.pkid = 1;
    let mut buffer = bytes::BytesMut::with_capacity(publish.size());
    // Only a zero packet id makes this fail, and it is 1 here.
    let _ = Packet::Publish(publish).write(&mut buffer, usize::MAX);
    let pkid_at = buffer.len() - payload.len() - 2;
    (buffer.to_vec(), pkid_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_patches_the_packet_id_in_place() {
        let payload = Bytes::from_static(b"hello");
        let (mut bytes, at) = encode_template("/devices/d/events", &payload);
        bytes[at..at + 2].copy_from_slice(&513u16.to_be_bytes());
        let mut buffer = bytes::BytesMut::from(&bytes[..]);
        match Packet::read(&mut buffer, 1 << 20) {
            Ok(Packet::Publish(publish)) => {
                assert_eq!(publish.pkid, 513);
                assert_eq!(publish.topic, "/devices/d/events");
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                assert_eq!(&publish.payload[..], b"hello");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_count_budget_runs_out() {
        let budget = Budget(AtomicI64::new(2));
        assert!(budget.take());
        assert!(budget.take());
        assert!(!budget.take());
        assert!(!budget.take());
    }
}
