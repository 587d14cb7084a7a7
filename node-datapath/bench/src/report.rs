//! The generated `BENCHMARKS.md` from the measured rows (see [`crate::results`]) and
//! the run facts (its method prose is `bench/templates/*.md`).
//! Pure except [`write_markdown`]'s file I/O.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::BenchError;
pub use crate::results::{Agg, Key, Row, Table, aggregate, parse_csv};
pub use crate::run_facts::{Facts, NsFacts};
use switchyard_testkit::report::fill;

fn latency_table(t: &Table, target: &str, out: &mut String) {
    let _ = writeln!(
        out,
        "| N | datapath | p50 µs | p99 µs | p99.9 µs | connects/run |\n|---:|---|---:|---:|---:|---:|"
    );
    for n in t.ns() {
        for dp in t.datapaths() {
            let Some(a) = t.get(n, dp, "connect_p50_us", target) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {n} | {dp} | {} | {} | {} | {} |",
                t.cell(n, dp, "connect_p50_us", target, 1),
                t.cell(n, dp, "connect_p99_us", target, 1),
                t.cell(n, dp, "connect_p999_us", target, 1),
                a.min_samples
            );
        }
    }
}

fn rate_table(t: &Table, out: &mut String) {
    let _ = writeln!(
        out,
        "| N | datapath | conn/s, 1 thread | conn/s, 2 threads | UDP req/resp per s | errors |\n|---:|---|---:|---:|---:|---:|"
    );
    for n in t.ns() {
        for dp in t.datapaths() {
            if t.get(n, dp, "conn_per_s_1t", "last").is_none() {
                continue;
            }
            let errors: f64 = [
                "conn_per_s_1t_errors",
                "conn_per_s_2t_errors",
                "udp_rr_per_s_errors",
            ]
            .iter()
            .filter_map(|m| t.get(n, dp, m, "last").map(|a| a.median))
            .sum::<f64>()
                + ["first", "random", "last"]
                    .iter()
                    .filter_map(|tg| t.get(n, dp, "connect_errors", tg).map(|a| a.median))
                    .sum::<f64>();
            let _ = writeln!(
                out,
                "| {n} | {dp} | {} | {} | {} | {errors:.0} |",
                t.cell(n, dp, "conn_per_s_1t", "last", 0),
                t.cell(n, dp, "conn_per_s_2t", "last", 0),
                t.cell(n, dp, "udp_rr_per_s", "last", 0),
            );
        }
    }
}

fn program_table(t: &Table, out: &mut String) {
    let _ = writeln!(
        out,
        "| N | iptables-nft restore s: whole-table / kube-proxy `--noflush` | iptables-legacy restore s: whole-table / `--noflush` | nft -f s: chunked / one transaction | eBPF full sync s | eBPF: snapshot / desired / plan / apply s | map ops |\n|---:|---:|---:|---:|---:|---|---:|"
    );
    let v = |n, dp: &str, m: &str, d: usize| {
        t.get(n, dp, m, "-")
            .map_or("—".to_string(), |a| format!("{:.*}", d, a.median))
    };
    for n in t.ns() {
        let phases = [
            "ebpf_snapshot_s",
            "ebpf_desired_s",
            "ebpf_plan_s",
            "ebpf_apply_s",
        ]
        .iter()
        .map(|m| v(n, "ebpf", m, 3))
        .collect::<Vec<_>>()
        .join(" / ");
        let ops = t
            .get(n, "ebpf", "program_s", "-")
            .map_or("—".into(), |a| a.min_samples.to_string());
        let _ = writeln!(
            out,
            "| {n} | {} / {} | {} / {} | {} / {} | {} | {phases} | {ops} |",
            v(n, "iptables-nft", "program_s", 2),
            v(n, "iptables-nft", "program_noflush_s", 2),
            v(n, "iptables-legacy", "program_s", 2),
            v(n, "iptables-legacy", "program_noflush_s", 2),
            v(n, "nftables", "program_s", 2),
            v(n, "nftables", "program_single_s", 2),
            v(n, "ebpf", "program_s", 3),
        );
    }
}

/// The targets of issue #7, checked against the measurements: one line per
/// check, saying met or missed and by how much.
pub fn target_checks(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    for n in t.ns() {
        for target in ["first", "random", "last"] {
            for (m, label) in [("connect_p50_us", "p50"), ("connect_p99_us", "p99")] {
                if let Some(r) = t.ratio(n, "ebpf", m, target) {
                    let verdict = if r <= 1.05 {
                        "met".to_string()
                    } else {
                        format!("MISSED by {:.1} points", (r - 1.05) * 100.0)
                    };
                    out.push(format!(
                        "N={n}, {target} Service, connect {label}: eBPF/direct = {r:.3} (target ≤ 1.05): {verdict}"
                    ));
                }
            }
        }
        for (m, label) in [
            ("conn_per_s_1t", "1 thread"),
            ("conn_per_s_2t", "2 threads"),
        ] {
            if let Some(r) = t.ratio(n, "ebpf", m, "last") {
                let verdict = if r >= 0.95 {
                    "met".to_string()
                } else {
                    format!("MISSED by {:.1} points", (0.95 - r) * 100.0)
                };
                out.push(format!(
                    "N={n}, conn/s {label}: eBPF/direct = {r:.3} (target ≥ 0.95): {verdict}"
                ));
            }
        }
    }
    out.extend(crate::report_ebpf::checks(t));
    out
}

fn or_unrecorded(s: &str) -> &str {
    if s.is_empty() { "not recorded" } else { s }
}

/// The title, how to reproduce, and this run's facts.
const HEAD: &str = include_str!("../templates/head.md");
/// How connect latency is measured.
const CONNECT_LATENCY: &str = include_str!("../templates/connect-latency.md");
/// How connection and UDP rates are measured.
const RATE: &str = include_str!("../templates/rate.md");
/// How programming time is measured.
const PROGRAMMING: &str = include_str!("../templates/programming.md");

/// Renders BENCHMARKS.md from rows, facts, sections written by other
/// benchmarks (`included`, in order) and the hand-written analysis.
pub fn render_markdown(rows: &[Row], facts: &Facts, included: &[String], analysis: &str) -> String {
    let t = Table::new(rows);
    let values = template_values(facts);
    let mut s = fill(HEAD, &values);
    s.push_str(&fill(CONNECT_LATENCY, &values));
    for (target, title) in [
        (
            "last",
            "Last Service in kube-proxy's order (worst case for iptables)",
        ),
        ("random", "A random Service (fixed per N)"),
        ("first", "First Service in kube-proxy's order"),
    ] {
        let _ = writeln!(s, "### {title}\n");
        latency_table(&t, target, &mut s);
        s.push('\n');
    }
    crate::report_ebpf::program_time_section(&t, &mut s);
    s.push_str(&fill(RATE, &values));
    rate_table(&t, &mut s);
    crate::report_ns::section(&t, facts.north_south.as_ref(), &mut s);
    s.push('\n');
    s.push_str(&fill(PROGRAMMING, &values));
    program_table(&t, &mut s);
    crate::report_ebpf::agent_section(&t, &mut s);
    crate::report_flows::section(rows, facts.flow_events.as_ref(), &mut s);
    for section in included {
        let _ = writeln!(s, "\n{}", section.trim());
    }
    let _ = writeln!(s, "\n## Targets (issue #7)\n");
    for line in target_checks(&t) {
        let _ = writeln!(s, "- {line}");
    }
    let _ = writeln!(s, "\n{}", analysis.trim());
    s
}

/// The run facts the templates name, formatted.
fn template_values(f: &Facts) -> Vec<(&'static str, String)> {
    vec![
        ("command", f.command.clone()),
        ("started_utc", f.started_utc.clone()),
        ("duration_s", format!("{:.0}", f.duration_s)),
        ("cpus", f.cpus.to_string()),
        ("cpu_model", f.cpu_model.clone()),
        ("kernel", f.kernel.clone()),
        ("iptables_nft", f.iptables_nft.clone()),
        ("iptables_legacy", f.iptables_legacy.clone()),
        ("nft", f.nft.clone()),
        ("loadavg_start", or_unrecorded(&f.loadavg_start).to_string()),
        ("loadavg_end", or_unrecorded(&f.loadavg_end).to_string()),
        ("services", format!("{:?}", f.services)),
        ("datapaths", f.datapaths.join(", ")),
        ("runs", f.runs.to_string()),
        ("warmup", f.warmup.to_string()),
        ("connects", f.connects.to_string()),
        ("latency_budget_ms", f.latency_budget_ms.to_string()),
        ("min_connects", f.min_connects.to_string()),
        ("rate_ms", f.rate_ms.to_string()),
        ("noflush_max", f.noflush_max.to_string()),
        ("nft_chunk", f.nft_chunk.to_string()),
        ("nft_single_max", f.nft_single_max.to_string()),
    ]
}

/// Reads the CSV, the facts, the optional analysis and the included
/// sections (a missing one becomes a note saying how to produce it), and
/// writes the markdown file.
pub fn write_markdown(
    csv: &Path,
    facts: &Path,
    analysis: Option<&Path>,
    include: &[PathBuf],
    out: &Path,
) -> Result<(), BenchError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| BenchError::io(format!("read {}", p.display()), e))
    };
    let rows = parse_csv(&read(csv)?);
    let facts: Facts = serde_json::from_str(&read(facts)?).map_err(|e| BenchError::BadOutput {
        what: "facts.json".into(),
        detail: e.to_string(),
    })?;
    let analysis = analysis.map(read).transpose()?.unwrap_or_default();
    let included = include
        .iter()
        .map(|p| {
            if p.exists() {
                read(p)
            } else {
                let name = p.file_name().unwrap_or(p.as_os_str());
                Ok(format!(
                    "_Not run: `{}` is missing (`make bench` writes it)._",
                    name.to_string_lossy()
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::write(out, render_markdown(&rows, &facts, &included, &analysis))
        .map_err(|e| BenchError::io(format!("write {}", out.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: usize, dp: &str, metric: &str, target: &str, run: u32, value: f64) -> Row {
        Row {
            n,
            datapath: dp.into(),
            metric: metric.into(),
            target: target.into(),
            run,
            samples: 100 + u64::from(run),
            value,
        }
    }

    #[test]
    fn csv_round_trips_and_skips_the_header() {
        let r = row(1000, "ebpf", "connect_p50_us", "last", 2, 31.25);
        let text = format!("{}\n{}\n", Row::HEADER, r.to_csv());
        assert_eq!(parse_csv(&text), vec![r]);
    }

    #[test]
    fn medians_and_ratios_to_direct() {
        let rows = vec![
            row(10, "direct", "connect_p50_us", "last", 0, 30.0),
            row(10, "direct", "connect_p50_us", "last", 1, 40.0),
            row(10, "direct", "connect_p50_us", "last", 2, 35.0),
            row(10, "ebpf", "connect_p50_us", "last", 0, 36.0),
            row(10, "ebpf", "connect_p50_us", "last", 1, 100.0),
            row(10, "ebpf", "connect_p50_us", "last", 2, 35.0),
        ];
        let t = Table::new(&rows);
        let d = t.get(10, "direct", "connect_p50_us", "last").unwrap();
        assert_eq!(d.median, 35.0);
        assert_eq!(d.runs, 3);
        assert_eq!(d.min_samples, 100);
        let r = t.ratio(10, "ebpf", "connect_p50_us", "last").unwrap();
        assert!((r - 36.0 / 35.0).abs() < 1e-12);
        assert_eq!(
            t.cell(10, "ebpf", "connect_p50_us", "last", 1),
            "36.0 (×1.03)"
        );
        assert_eq!(t.cell(10, "direct", "connect_p50_us", "last", 1), "35.0");
        assert_eq!(t.cell(10, "nftables", "connect_p50_us", "last", 1), "—");
        assert!(t.ratio(10, "ebpf", "connect_p50_us", "first").is_none());
    }

    #[test]
    fn target_checks_report_misses_with_their_size() {
        let rows = vec![
            row(1, "direct", "connect_p50_us", "last", 0, 100.0),
            row(1, "ebpf", "connect_p50_us", "last", 0, 110.0),
            row(1, "direct", "conn_per_s_1t", "last", 0, 1000.0),
            row(1, "ebpf", "conn_per_s_1t", "last", 0, 990.0),
            row(10_000, "ebpf", "program_s", "-", 0, 0.7),
        ];
        let checks = target_checks(&Table::new(&rows));
        assert!(
            checks
                .iter()
                .any(|c| c.contains("p50") && c.contains("MISSED by 5.0 points")),
            "{checks:?}"
        );
        assert!(
            checks
                .iter()
                .any(|c| c.contains("1 thread") && c.ends_with("met")),
            "{checks:?}"
        );
        assert!(
            checks
                .iter()
                .any(|c| c.contains("full sync") && c.contains("MISSED by 0.200 s")),
            "{checks:?}"
        );
    }

    #[test]
    fn markdown_has_every_section_and_the_datapaths_present() {
        let rows = vec![
            row(1, "direct", "connect_p50_us", "last", 0, 30.0),
            row(1, "iptables-nft", "connect_p50_us", "last", 0, 45.0),
            row(1, "iptables-nft", "program_s", "-", 0, 0.01),
        ];
        let scale = "### Operator at scale\n\n| nodes |".to_string();
        let md = render_markdown(&rows, &Facts::default(), &[scale], "## Analysis\n\ntext");
        let at = |s: &str| md.find(s).unwrap_or_else(|| panic!("missing {s}:\n{md}"));
        assert!(at("## Programming time") < at("### Operator at scale"));
        assert!(at("### Operator at scale") < at("## Targets"));
        for s in [
            "## TCP connect latency",
            "## Programming time",
            "## Targets",
            "## Analysis",
            "| 1 | iptables-nft | 45.0 (×1.50) |",
        ] {
            assert!(md.contains(s), "missing {s}:\n{md}");
        }
        assert!(!md.contains("| 1 | ebpf |"));
    }
}
