//! Medians and percentiles of samples.

/// The median (mean of the middle two for an even count); `None` when
/// empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` by the nearest-rank method:
/// the smallest sample with at least `q` of the samples at or below it;
/// `None` when empty.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 0.5), Some(5));
        assert_eq!(percentile(&v, 0.9), Some(9));
        assert_eq!(percentile(&v, 1.0), Some(10));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile::<u64>(&[], 0.5), None);
        // Ten samples: p99 and p999 are the maximum.
        assert_eq!(percentile(&v, 0.99), Some(10));
        assert_eq!(percentile(&v, 0.999), Some(10));
        let w: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&w, 0.5), Some(500));
        assert_eq!(percentile(&w, 0.99), Some(990));
        assert_eq!(percentile(&w, 0.999), Some(999));
        assert_eq!(percentile(&w, 1.0), Some(1000));
        assert_eq!(percentile(&w, 0.0), Some(1));
        assert_eq!(percentile(&[7], 0.999), Some(7));
    }
}
