//! PUBACK latency histogram in microseconds, log-linear: exact below 64 µs, then 64 buckets per
//! power of two (under 1.6 % error), so a run of any length keeps a few kilobytes per connection
//! instead of every sample. Percentiles are bucket lower bounds; the maximum is exact.

use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped here (about 19 hours), which bounds the bucket array.
const MAX_MICROS: u64 = (1 << 36) - 1;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; index_of(MAX_MICROS) + 1],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_MICROS)
            .min(MAX_MICROS);
        self.counts[index_of(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The latency at or below which `quantile` of the samples fall (0 with no samples).
    pub fn quantile_micros(&self, quantile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return value_of(index).min(self.max);
            }
        }
        self.max
    }

    pub fn max_micros(&self) -> u64 {
        self.max
    }
}

fn index_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros();
    let shift = exponent - SUB_BITS;
    let mantissa = micros >> shift;
    (((shift as u64 + 1) << SUB_BITS) + (mantissa - SUB)) as usize
}

fn value_of(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let shift = (index >> SUB_BITS) - 1;
    (SUB + (index & (SUB - 1))) << shift
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_their_precision() {
        for micros in [
            0, 1, 63, 64, 65, 127, 128, 1000, 12_345, 999_999, MAX_MICROS,
        ] {
            let low = value_of(index_of(micros));
            assert!(low <= micros, "{micros} -> {low}");
            assert!(
                (micros - low) as f64 <= micros as f64 / 64.0,
                "{micros} -> {low}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_known_spread() {
        let mut hist = Histogram::default();
        for ms in 1..=100 {
            hist.record(Duration::from_millis(ms));
        }
        let p50 = hist.quantile_micros(0.5);
        assert!((49_000..=50_000).contains(&p50), "{p50}");
        let p99 = hist.quantile_micros(0.99);
        assert!((97_500..=99_000).contains(&p99), "{p99}");
        assert_eq!(hist.max_micros(), 100_000);
        let mut other = Histogram::default();
        other.record(Duration::from_secs(1));
        hist.merge(&other);
        assert_eq!(hist.max_micros(), 1_000_000);
        assert_eq!(Histogram::default().quantile_micros(0.5), 0);
    }
}
