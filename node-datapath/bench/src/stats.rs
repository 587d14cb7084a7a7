//! The latency summary of one run. Pure. Medians and percentiles are
//! `switchyard_testkit::stats`'s, shared with the operator and kube-proxy
//! benchmarks.

pub use switchyard_testkit::stats::{median, percentile};

/// Latency summary of one run, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Samples (measured connects, warm-up excluded).
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
}

/// Summarises nanosecond samples (sorts them in place).
pub fn summarize(samples_ns: &mut [u64]) -> Option<LatencySummary> {
    samples_ns.sort_unstable();
    let us = |q| percentile(samples_ns, q).map(|v| v as f64 / 1000.0);
    Some(LatencySummary {
        samples: samples_ns.len(),
        p50_us: us(0.5)?,
        p99_us: us(0.99)?,
        p999_us: us(0.999)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_order_independent_and_in_microseconds() {
        let mut a: Vec<u64> = (1..=2000).rev().map(|x| x * 1000).collect();
        let s = summarize(&mut a).unwrap();
        assert_eq!(s.samples, 2000);
        assert_eq!(s.p50_us, 1000.0);
        assert_eq!(s.p99_us, 1980.0);
        assert_eq!(s.p999_us, 1998.0);
        assert!(summarize(&mut []).is_none());
    }
}
