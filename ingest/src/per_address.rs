//! A cap on the connections one source address may hold on a listener, shared by the HTTP and
//! MQTT listeners: without it one host could take every slot of `--max-connections` (until the
//! head or CONNECT deadline), locking every device out. A connection beyond the cap is closed as
//! it is accepted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per source address, for the per-address cap.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    /// At most `limit` connections per address; 0: no limit.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
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
            return None;
        }
        *count += 1;
        Some(AddressSlot(Some((self.clone(), ip))))
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
}
