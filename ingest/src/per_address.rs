//! A cap on the connections one source address may hold on a listener, shared by the HTTP and
//! MQTT listeners: without it one host could take every slot of `--max-connections` (until the
//! head or CONNECT deadline), locking every device out. A connection beyond the cap is closed as
//! it is accepted. Closing it is all the answer a TCP connection can get before it speaks, so
//! the operator is told instead: a warning naming the address and the flag, at most once a minute
//! (a fleet behind one NAT shares an address and needs the cap raised; a flood must not flood the
//! log).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The most often a refusal is logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Open connections per source address, for the per-address cap.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    refusals: Arc<Mutex<Refusals>>,
}

/// Refusals not yet logged, and when the last warning went out.
#[derive(Debug, Default)]
struct Refusals {
    unlogged: u64,
    warned_at: Option<Instant>,
}

impl PerAddress {
    /// At most `limit` connections per address; 0: no limit.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, unless it holds its limit already.
    pub fn take(&self, ip: IpAddr) -> Option<AddressSlot> {
        if self.limit == 0 {
            return Some(AddressSlot(None));
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_default();
        if *count >= self.limit {
            drop(open);
            if let Some(refused) = self.refused(Instant::now()) {
                tracing::warn!(
                    %ip,
                    refused,
                    limit = self.limit,
                    "closed connections from an address that holds its limit of connections \
                     (count: since the last such warning); a fleet behind one NAT shares an \
                     address: raise --max-connections-per-address for it"
                );
            }
            return None;
        }
        *count += 1;
        Some(AddressSlot(Some((self.clone(), ip))))
    }
}

impl PerAddress {
    /// Counts a refusal at `now`; says how many to report when a warning is due.
    fn refused(&self, now: Instant) -> Option<u64> {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.unlogged += 1;
        let due = refusals
            .warned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY);
        if !due {
            return None;
        }
        refusals.warned_at = Some(now);
        Some(std::mem::take(&mut refusals.unlogged))
    }
}

/// One connection's place in its address's count; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot(Option<(PerAddress, IpAddr)>);

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some((per_address, ip)) = self.0.take() else {
            return;
        };
        let mut open = per_address
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit_and_gets_slots_back() {
        let caps = PerAddress::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = caps.take(a).unwrap();
        let _second = caps.take(a).unwrap();
        assert!(caps.take(a).is_none());
        assert!(caps.take(b).is_some(), "another address is not affected");
        drop(first);
        assert!(caps.take(a).is_some());
        let unlimited = PerAddress::new(0);
        let held: Vec<_> = (0..100).map(|_| unlimited.take(a).unwrap()).collect();
        assert_eq!(held.len(), 100);
    }

    #[test]
    fn refusals_are_reported_at_most_once_a_minute_with_their_count() {
        let caps = PerAddress::new(1);
        let start = Instant::now();
        assert_eq!(caps.refused(start), Some(1), "the first at once");
        assert_eq!(caps.refused(start + Duration::from_secs(1)), None);
        assert_eq!(caps.refused(start + Duration::from_secs(59)), None);
        assert_eq!(
            caps.refused(start + WARN_EVERY),
            Some(3),
            "with the two held back"
        );
        assert_eq!(caps.refused(start + WARN_EVERY * 3), Some(1));
    }
}
