//! Presence in Firestore: `presence/{numId}` holds the device's current claim (instance, since,
//! generation, subscriptions) and `instances/{id}` each instance's lease. A claim counts only
//! while its instance's lease document says so, so renewing is one write per instance, not one
//! per connection, and the claims of an instance that died lapse together with its lease.
//! Claims, subscription changes and releases run in transactions that read the claim first: the
//! generation check and the write are one step, so a stale instance never touches a newer claim.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::rpc::{Rpc, TxId};
use super::{backend, value};
use crate::registry::{Presence, StoreResult};

/// A claim as stored; `instance` is absent once released, `generation` is kept.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claim {
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    since: Option<Timestamp>,
    generation: u64,
    config: bool,
    commands: bool,
}

/// An instance's lease, in microseconds since the epoch (an integer compares cheaply).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    lease_until_micros: i64,
}

pub(super) fn claim_path(num_id: u64) -> String {
    format!("presence/{num_id}")
}

fn lease_path(instance: &str) -> String {
    format!("instances/{instance}")
}

async fn read(rpc: &Rpc, num_id: u64, tx: Option<&TxId>) -> StoreResult<Option<Claim>> {
    match rpc.get(&claim_path(num_id), tx).await? {
        Some(doc) => Ok(Some(value::decode(doc.fields)?)),
        None => Ok(None),
    }
}

/// Takes the device for `instance`; returns the new generation and the claim it replaced.
pub(super) async fn claim(
    rpc: &Rpc,
    num_id: u64,
    instance: &str,
    now: Timestamp,
) -> StoreResult<(u64, Option<Presence>)> {
    rpc.in_transaction(|tx| async move {
        let previous = read(rpc, num_id, Some(&tx)).await?;
        let generation = previous.as_ref().map_or(0, |c| c.generation) + 1;
        let claim = Claim {
            instance: Some(instance.to_owned()),
            since: Some(now),
            generation,
            config: false,
            commands: false,
        };
        let write = rpc.set(&claim_path(num_id), value::encode(&claim)?);
        Ok(((generation, previous.and_then(presence)), vec![write]))
    })
    .await?
    .map_err(backend)
}

/// Changes the claim `generation` with `change`, if it is still the device's.
async fn change(
    rpc: &Rpc,
    num_id: u64,
    generation: u64,
    change: impl Fn(&mut Claim) + Copy,
) -> StoreResult<()> {
    rpc.in_transaction(|tx| async move {
        let writes = match read(rpc, num_id, Some(&tx)).await? {
            Some(mut claim) if claim.generation == generation && claim.instance.is_some() => {
                change(&mut claim);
                vec![rpc.set(&claim_path(num_id), value::encode(&claim)?)]
            }
            _ => Vec::new(),
        };
        Ok(((), writes))
    })
    .await?
    .map_err(backend)
}

/// Sets the subscriptions of claim `generation`.
pub(super) async fn subscriptions(
    rpc: &Rpc,
    num_id: u64,
    generation: u64,
    config: bool,
    commands: bool,
) -> StoreResult<()> {
    change(rpc, num_id, generation, |claim| {
        claim.config = config;
        claim.commands = commands;
    })
    .await
}

/// Releases claim `generation`.
pub(super) async fn release(rpc: &Rpc, num_id: u64, generation: u64) -> StoreResult<()> {
    change(rpc, num_id, generation, |claim| {
        *claim = Claim {
            generation: claim.generation,
            ..Claim::default()
        };
    })
    .await
}

/// The device's claim, if its instance's lease is live at `now`: two document reads.
pub(super) async fn get(rpc: &Rpc, num_id: u64, now: Timestamp) -> StoreResult<Option<Presence>> {
    let Some(claim) = read(rpc, num_id, None).await?.and_then(presence) else {
        return Ok(None);
    };
    let Some(doc) = rpc.get(&lease_path(&claim.instance), None).await? else {
        return Ok(None);
    };
    let lease: Lease = value::decode(doc.fields)?;
    Ok((lease.lease_until_micros > now.as_microsecond()).then_some(claim))
}

/// Sets `instance`'s lease to end at `until`.
pub(super) async fn renew(rpc: &Rpc, instance: &str, until: Timestamp) -> StoreResult<()> {
    let lease = Lease {
        lease_until_micros: until.as_microsecond(),
    };
    let write = rpc.set(&lease_path(instance), value::encode(&lease)?);
    rpc.commit(vec![write], None).await.map_err(backend)
}

/// Ends `instance`'s lease: its claims stop counting at once (they are overwritten by the next
/// claim of each device, or released when the device's connection elsewhere closes).
pub(super) async fn end(rpc: &Rpc, instance: &str) -> StoreResult<()> {
    rpc.commit(vec![rpc.delete(&lease_path(instance))], None)
        .await
        .map_err(backend)
}

fn presence(claim: Claim) -> Option<Presence> {
    Some(Presence {
        instance: claim.instance?,
        since: claim.since?,
        generation: claim.generation,
        config: claim.config,
        commands: claim.commands,
    })
}
