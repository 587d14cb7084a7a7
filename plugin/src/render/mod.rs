//! Pure rendering: API objects (and the time `now`) in, text out. Nothing
//! here talks to the API server, so every table is unit-tested.

mod nodes;
mod plan;

pub use nodes::{NodeRow, node_rows, nodes_table};
pub use plan::{plan_status, plans_table};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Table layout: `Table` is what a terminal shows, `Wide` adds the columns
/// that make lines long (as `kubectl get -o wide`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Table,
    Wide,
}

/// Column-aligned text, as kubectl prints it: headers upper case, three
/// spaces between columns, the last column not padded (so a long message
/// does not push trailing blanks onto every line).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_string()).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths
                    .get(i)
                    .map_or(0, |w| w.saturating_sub(cell.chars().count()));
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A duration for people: tenths of a second below 10 s when the span has
/// them (a Lease's renewal time is in microseconds; a plan's timestamps are
/// whole seconds, and `2.0s` would claim a precision they lack), then the
/// two largest units, as kubectl's ages (`45s`, `3m12s`, `2h5m`, `4d3h`).
/// Negative spans (clock skew between this machine and the operator's)
/// read as zero.
pub fn human(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 10.0 && secs.fract() != 0.0 {
        return format!("{secs:.1}s");
    }
    // Truncation is intended: whole seconds from here on.
    let s = secs as u64;
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m{}s", s / 60, s % 60),
        7_200..172_800 => format!("{}h{}m", s / 3_600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86_400, s / 3_600 % 24),
    }
}

/// Seconds from `from` to `to`.
pub fn span(from: &Time, to: Timestamp) -> f64 {
    to.duration_since(from.0).as_secs_f64()
}

/// `text` cut to `max` characters, an ellipsis marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_and_the_last_is_not_padded() {
        let rows = vec![
            vec!["node1".into(), "Done".into(), "".into()],
            vec!["node-long".into(), "Verify".into(), "waiting".into()],
        ];
        let out = table(&["NODE", "STEP", "MESSAGE"], &rows);
        assert_eq!(
            out,
            "NODE        STEP     MESSAGE\n\
             node1       Done\n\
             node-long   Verify   waiting\n"
        );
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(human(1.74), "1.7s");
        assert_eq!(human(2.0), "2s");
        assert_eq!(human(-3.0), "0s");
        assert_eq!(human(45.9), "45s");
        assert_eq!(human(192.0), "3m12s");
        assert_eq!(human(7_500.0), "2h5m");
        assert_eq!(human(97.0 * 3_600.0), "4d1h");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ééééé", 5), "ééééé");
        assert_eq!(truncate("ééééééé", 5), "éééé…");
    }
}
