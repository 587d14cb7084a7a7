//! Prometheus text for the datapath's counters and map occupancy.
//!
//! Pure: [`render`] turns a [`DatapathStats`] (read by
//! [`crate::maps::read_stats`]) into exposition-format text that the agent's
//! `/metrics` endpoint appends to its own.

use std::fmt::Write as _;

use serde::Serialize;
use switchyard_abi::{COUNTER_MAX, Counter};

/// How full one map is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapOccupancy {
    /// Map name (lb.h).
    pub map: &'static str,
    /// Entries present.
    pub entries: u64,
    /// `max_entries`.
    pub capacity: u32,
}

/// A snapshot of the datapath's counters and maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DatapathStats {
    /// Per [`Counter`] (indexed by its value), summed over CPUs.
    pub counters: [u64; COUNTER_MAX as usize],
    /// Occupancy of the hash maps.
    pub maps: Vec<MapOccupancy>,
    /// Flow events that did not fit in the ring (`sy_events_lost`, summed
    /// over CPUs).
    pub events_lost: u64,
    /// Flow events over the per-CPU rate limit (`sy_events_rate`, summed
    /// over CPUs).
    pub events_shed: u64,
}

impl DatapathStats {
    /// One counter's value.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }

    /// Sum of every drop counter.
    pub fn drops(&self) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|c| self.get(*c))
            .sum()
    }
}

/// The hook label of a translation counter, `None` for the others.
fn translation_hook(c: Counter) -> Option<&'static str> {
    match c {
        Counter::ConnectTranslated => Some("connect4"),
        Counter::SendmsgTranslated => Some("sendmsg4"),
        Counter::RecvmsgRevNat => Some("recvmsg4"),
        Counter::PeernameRevNat => Some("getpeername4"),
        _ => None,
    }
}

/// The event label of a north-south (tc ingress) counter that is not a
/// drop, `None` for the others.
fn ingress_event(c: Counter) -> Option<&'static str> {
    match c {
        Counter::IngressTranslated => Some("translated"),
        Counter::IngressTracked => Some("tracked"),
        Counter::IngressUntracked => Some("untracked"),
        Counter::IngressCtClash => Some("conntrack_clash"),
        Counter::IngressReopened => Some("reopened"),
        _ => None,
    }
}

/// Renders `stats` as Prometheus text exposition format.
pub fn render(stats: &DatapathStats) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_all(&mut out, stats);
    out
}

fn write_all(out: &mut String, stats: &DatapathStats) -> std::fmt::Result {
    write_counters(out, stats)?;
    write_maps(out, stats)
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// The kernel's counters: drops by reason, translations by hook, affinity
/// hits and lost flow events.
fn write_counters(out: &mut String, stats: &DatapathStats) -> std::fmt::Result {
    let drops = "switchyard_datapath_drop_count_total";
    family(
        out,
        drops,
        "counter",
        "Connections/datagrams the socket load balancer refused or could not serve, by reason.",
    )?;
    for c in Counter::ALL.iter().filter(|c| c.is_drop()) {
        writeln!(
            out,
            "{drops}{{reason=\"{}\"}} {}",
            c.reason(),
            stats.get(*c)
        )?;
    }
    let translations = "switchyard_datapath_translations_total";
    family(
        out,
        translations,
        "counter",
        "Socket addresses translated, by hook (forward on connect4/sendmsg4, reverse on recvmsg4/getpeername4).",
    )?;
    for c in Counter::ALL {
        if let Some(hook) = translation_hook(c) {
            writeln!(out, "{translations}{{hook=\"{hook}\"}} {}", stats.get(c))?;
        }
    }
    let affinity = "switchyard_datapath_affinity_hits_total";
    family(
        out,
        affinity,
        "counter",
        "Connections sent to a backend remembered by sessionAffinity ClientIP.",
    )?;
    writeln!(out, "{affinity} {}", stats.get(Counter::AffinityHit))?;
    write_ingress(out, stats)?;
    let lost = "switchyard_datapath_flow_events_lost_total";
    family(
        out,
        lost,
        "counter",
        "Flow events the socket load balancer did not report, by where: the event ring was full, or the CPU was over the events' rate limit.",
    )?;
    writeln!(out, "{lost}{{where=\"ring_full\"}} {}", stats.events_lost)?;
    writeln!(out, "{lost}{{where=\"rate_limit\"}} {}", stats.events_shed)
}

/// What the tc ingress program did with packets to NodePorts, LoadBalancer
/// IPs and external IPs; what it could not serve is in the drop family.
fn write_ingress(out: &mut String, stats: &DatapathStats) -> std::fmt::Result {
    let ingress = "switchyard_datapath_ingress_packets_total";
    family(
        out,
        ingress,
        "counter",
        "Packets to NodePort, LoadBalancer and external IP frontends, by what the tc ingress program did (translated: the first packet of a new connection, handed to conntrack NAT).",
    )?;
    for c in Counter::ALL {
        if let Some(event) = ingress_event(c) {
            writeln!(out, "{ingress}{{event=\"{event}\"}} {}", stats.get(c))?;
        }
    }
    Ok(())
}

/// Each BPF map's entries and capacity.
fn write_maps(out: &mut String, stats: &DatapathStats) -> std::fmt::Result {
    let entries = "switchyard_datapath_map_entries";
    family(out, entries, "gauge", "Entries in a datapath BPF map.")?;
    for m in &stats.maps {
        writeln!(out, "{entries}{{map=\"{}\"}} {}", m.map, m.entries)?;
    }
    let capacity = "switchyard_datapath_map_capacity";
    family(
        out,
        capacity,
        "gauge",
        "Maximum entries of a datapath BPF map.",
    )?;
    for m in &stats.maps {
        writeln!(out, "{capacity}{{map=\"{}\"}} {}", m.map, m.capacity)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DatapathStats {
        let mut s = DatapathStats::default();
        for (i, c) in Counter::ALL.iter().enumerate() {
            s.counters[*c as usize] = 100 + i as u64;
        }
        s.maps = vec![MapOccupancy {
            map: "sy_svc_v4",
            entries: 42,
            capacity: 524_288,
        }];
        s.events_lost = 7;
        s.events_shed = 3;
        s
    }

    /// `name{labels} value` lines, keyed by series.
    fn series(text: &str) -> std::collections::BTreeMap<String, u64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_owned(), v.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn every_drop_reason_is_a_labelled_series() {
        let s = sample();
        let got = series(&render(&s));
        for c in Counter::ALL.iter().filter(|c| c.is_drop()) {
            let key = format!(
                "switchyard_datapath_drop_count_total{{reason=\"{}\"}}",
                c.reason()
            );
            assert_eq!(got.get(&key), Some(&s.get(*c)), "{key}");
        }
        let drops: usize = got
            .keys()
            .filter(|k| k.contains("drop_count_total"))
            .count();
        assert_eq!(drops, Counter::ALL.iter().filter(|c| c.is_drop()).count());
    }

    #[test]
    fn translations_by_hook_and_occupancy() {
        let s = sample();
        let got = series(&render(&s));
        assert_eq!(
            got["switchyard_datapath_translations_total{hook=\"connect4\"}"],
            s.get(Counter::ConnectTranslated)
        );
        assert_eq!(
            got["switchyard_datapath_translations_total{hook=\"recvmsg4\"}"],
            s.get(Counter::RecvmsgRevNat)
        );
        assert_eq!(
            got["switchyard_datapath_map_entries{map=\"sy_svc_v4\"}"],
            42
        );
        assert_eq!(
            got["switchyard_datapath_map_capacity{map=\"sy_svc_v4\"}"],
            524_288
        );
        assert_eq!(
            got["switchyard_datapath_affinity_hits_total"],
            s.get(Counter::AffinityHit)
        );
        assert_eq!(
            got["switchyard_datapath_flow_events_lost_total{where=\"ring_full\"}"],
            7
        );
        assert_eq!(
            got["switchyard_datapath_flow_events_lost_total{where=\"rate_limit\"}"],
            3
        );
        assert_eq!(
            got["switchyard_datapath_ingress_packets_total{event=\"translated\"}"],
            s.get(Counter::IngressTranslated)
        );
        assert_eq!(
            got["switchyard_datapath_ingress_packets_total{event=\"conntrack_clash\"}"],
            s.get(Counter::IngressCtClash)
        );
        let ingress = got.keys().filter(|k| k.contains("ingress_packets")).count();
        assert_eq!(ingress, 5);
    }

    #[test]
    fn each_metric_has_help_and_type_once() {
        let text = render(&sample());
        for name in [
            "switchyard_datapath_drop_count_total",
            "switchyard_datapath_translations_total",
            "switchyard_datapath_affinity_hits_total",
            "switchyard_datapath_ingress_packets_total",
            "switchyard_datapath_flow_events_lost_total",
            "switchyard_datapath_map_entries",
            "switchyard_datapath_map_capacity",
        ] {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
    }

    #[test]
    fn drops_sums_only_drop_counters() {
        let s = sample();
        let want: u64 = Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|c| 100 + *c as u64)
            .sum();
        assert_eq!(s.drops(), want);
    }
}
