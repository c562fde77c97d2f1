//! `idle` mode: N connections complete CONNECT and then only keep alive (a PINGREQ every
//! keepalive interval) for the hold time, the way a fleet of quiet devices sits on a bridge. The
//! line `… connected …; holding …` on stderr marks the moment the server's memory can be read; the
//! JSON line at the end says how many were still connected when the hold ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::mqttbytes::v4::Packet;
use serde::Serialize;

use crate::cli::{IdleArgs, Target, check_bounded};
use crate::conn::Connection;
use crate::report::{self, ConnectFailures, Errors, Go};

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub hold: Duration,
}

impl Plan {
    pub fn from_args(args: &IdleArgs) -> anyhow::Result<Plan> {
        check_bounded("--hold", args.hold)?;
        Ok(Plan { hold: args.hold })
    }
}

/// The JSON line of an `idle` run.
#[derive(Debug, Serialize)]
pub struct IdleResult {
    pub mode: &'static str,
    pub target: String,
    pub connections: usize,
    /// Completed CONNECT with a successful CONNACK.
    pub connected: u64,
    /// Still connected when the hold ended.
    pub held: u64,
    /// Connected, then closed before the hold ended (by the server or a missed PINGRESP).
    pub dropped: u64,
    #[serde(flatten)]
    pub connect: ConnectFailures,
    pub connect_secs: f64,
    pub hold_secs: f64,
    pub keepalive_secs: u16,
    #[serde(flatten)]
    pub errors: Errors,
}

pub async fn run(target: Arc<Target>, plan: Plan) -> anyhow::Result<IdleResult> {
    let keepalive = Duration::from_secs(u64::from(target.keepalive));
    let body = move |conn, index, go| hold(conn, index, go, plan, keepalive);
    let (tasks, phase) = report::connect_all(&target, body).await;
    eprintln!(
        "mqtt-load: idle: {} of {} connected in {:.2} s; holding for {:.1} s",
        phase.connected,
        target.connections,
        phase.connect_secs,
        plan.hold.as_secs_f64()
    );
    let mut result = IdleResult {
        mode: "idle",
        target: target.describe(),
        connections: target.connections,
        connected: phase.connected,
        held: 0,
        dropped: 0,
        connect: ConnectFailures::default(),
        connect_secs: report::round3(phase.connect_secs),
        hold_secs: plan.hold.as_secs_f64(),
        keepalive_secs: target.keepalive,
        errors: Errors::default(),
    };
    for task in tasks {
        match task.await.context("a connection task panicked")? {
            Ok(Ok(())) => result.held += 1,
            Ok(Err(why)) => {
                result.dropped += 1;
                result.errors.add(why);
            }
            Err(failure) => result.connect.add(&failure),
        }
    }
    phase.finish();
    Ok(result)
}

/// Keeps one connection alive until the hold ends; an error says why it ended early.
async fn hold(
    mut conn: Connection,
    index: u64,
    go: Go,
    plan: Plan,
    keepalive: Duration,
) -> Result<(), String> {
    let outcome = keep_alive(&mut conn, go.start + plan.hold, keepalive).await;
    conn.close().await;
    outcome.map_err(|why| format!("connection {index}: {why}"))
}

async fn keep_alive(
    conn: &mut Connection,
    end: Instant,
    keepalive: Duration,
) -> Result<(), String> {
    let mut next_ping = (!keepalive.is_zero()).then(|| Instant::now() + keepalive);
    let mut awaiting_pong = false;
    loop {
        let wake = next_ping.map_or(end, |ping| ping.min(end));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() >= end {
                    return Ok(());
                }
                if awaiting_pong {
                    return Err("no PINGRESP within the keepalive interval".to_owned());
                }
                ping(conn).await?;
                awaiting_pong = true;
                next_ping = next_ping.map(|at| at + keepalive);
            }
            packet = conn.next_packet() => match packet {
                Ok(Packet::PingResp) => awaiting_pong = false,
                Ok(_) => {}
                Err(e) => return Err(format!("closed while idle: {e}")),
            },
        }
    }
}

async fn ping(conn: &mut Connection) -> Result<(), String> {
    conn.queue(&Packet::PingReq)
        .map_err(|e| format!("encoding PINGREQ: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), conn.flush())
        .await
        .map_err(|_| "timed out writing PINGREQ".to_owned())?
        .map_err(|e| format!("writing PINGREQ: {e}"))
}
