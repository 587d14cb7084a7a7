//! Percentiles and medians. Pure.

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` by the nearest-rank method:
/// the smallest sample with at least `q` of the samples at or below it.
/// `None` for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of `values` (mean of the middle two for an even count); `None`
/// when empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

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
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.999), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        // Ten samples: p99 and p999 are the maximum.
        let t: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&t, 0.99), Some(10));
        assert_eq!(percentile(&t, 0.5), Some(5));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

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
