//! Raw CSV rows of the measurements, medians over runs and ratios to the direct
//! baseline: what the report sections read.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{model::DATAPATHS, stats::median};

/// One measured value of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Number of Services.
    pub n: usize,
    /// `direct`, `iptables-nft`, `iptables-legacy`, `nftables` or `ebpf`.
    pub datapath: String,
    /// What was measured (unit in the name).
    pub metric: String,
    /// `first`, `random`, `last`, or `-`.
    pub target: String,
    /// Run index (0-based).
    pub run: u32,
    /// Samples behind the value (connects, operations, rules, map ops).
    pub samples: u64,
    /// The value.
    pub value: f64,
}

impl Row {
    /// The CSV header.
    pub const HEADER: &'static str = "n,datapath,metric,target,run,samples,value";

    /// One CSV line.
    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.n, self.datapath, self.metric, self.target, self.run, self.samples, self.value
        )
    }

    /// Parses [`Row::to_csv`]'s output; `None` for the header or junk.
    pub fn parse(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 7 {
            return None;
        }
        Some(Row {
            n: f[0].parse().ok()?,
            datapath: f[1].into(),
            metric: f[2].into(),
            target: f[3].into(),
            run: f[4].parse().ok()?,
            samples: f[5].parse().ok()?,
            value: f[6].parse().ok()?,
        })
    }
}

/// Key of an aggregated value: (N, datapath, metric, target).
pub type Key = (usize, String, String, String);

/// The median over runs of one (N, datapath, metric, target).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agg {
    /// Median of the runs' values.
    pub median: f64,
    /// Number of runs.
    pub runs: usize,
    /// Fewest samples in a run.
    pub min_samples: u64,
}

/// Aggregates rows into medians over runs.
pub fn aggregate(rows: &[Row]) -> BTreeMap<Key, Agg> {
    let mut groups: BTreeMap<Key, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.n, r.datapath.clone(), r.metric.clone(), r.target.clone()))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .filter_map(|(k, rs)| {
            let vals: Vec<f64> = rs.iter().map(|r| r.value).collect();
            Some((
                k,
                Agg {
                    median: median(&vals)?,
                    runs: rs.len(),
                    min_samples: rs.iter().map(|r| r.samples).min()?,
                },
            ))
        })
        .collect()
}

/// A lookup over aggregated values.
#[derive(Debug)]
pub struct Table {
    aggs: BTreeMap<Key, Agg>,
}

impl Table {
    /// From raw rows.
    pub fn new(rows: &[Row]) -> Self {
        Self {
            aggs: aggregate(rows),
        }
    }

    /// The aggregate of one key.
    pub fn get(&self, n: usize, dp: &str, metric: &str, target: &str) -> Option<Agg> {
        self.aggs
            .get(&(n, dp.into(), metric.into(), target.into()))
            .copied()
    }

    /// `value / direct's value` for the same N, metric and target.
    pub fn ratio(&self, n: usize, dp: &str, metric: &str, target: &str) -> Option<f64> {
        let v = self.get(n, dp, metric, target)?.median;
        let d = self.get(n, "direct", metric, target)?.median;
        (d != 0.0).then(|| v / d)
    }

    /// Distinct N values, ascending.
    pub fn ns(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.aggs.keys().map(|k| k.0).collect();
        v.dedup();
        v
    }

    /// Datapaths present, in [`DATAPATHS`] order.
    pub fn datapaths(&self) -> Vec<&'static str> {
        DATAPATHS
            .into_iter()
            .filter(|d| self.aggs.keys().any(|k| k.1 == *d))
            .collect()
    }

    /// A cell: value with `decimals`, plus `(×ratio)` unless direct.
    pub fn cell(&self, n: usize, dp: &str, metric: &str, target: &str, decimals: usize) -> String {
        let Some(a) = self.get(n, dp, metric, target) else {
            return "—".into();
        };
        let mut s = format!("{:.*}", decimals, a.median);
        if dp != "direct"
            && let Some(r) = self.ratio(n, dp, metric, target)
        {
            let _ = write!(s, " (×{r:.2})");
        }
        s
    }
}

/// `old` without the rows of `part` at the N values in `new`, then `new`: a partial
/// run's rows replacing what it measured again.
pub fn replace_rows(old: &[Row], new: &[Row], part: impl Fn(&Row) -> bool) -> Vec<Row> {
    let replaced = |r: &Row| part(r) && new.iter().any(|x| x.n == r.n);
    old.iter()
        .filter(|r| !replaced(r))
        .chain(new)
        .cloned()
        .collect()
}

/// Parses a raw CSV.
pub fn parse_csv(text: &str) -> Vec<Row> {
    text.lines().filter_map(Row::parse).collect()
}
