//! Logging to stderr, filtered by `RUST_LOG` (default `info,kube=warn`), in
//! the format `--log-format` names: `text` for people reading a terminal,
//! `json` for log pipelines (Loki, Elasticsearch, Cloud Logging): one object
//! a line with `timestamp`, `level`, `target`, the message and the event's
//! fields at the top level, and the fields of the spans it happened in (the
//! plan or node it is about) under `span` and `spans`.

use std::io::{IsTerminal, Write};
use std::str::FromStr;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How a binary writes its logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into())
}

/// The subscriber writing `format` to `writer`; text in colour only for a
/// terminal (a pod's log file would keep the escape codes).
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    terminal: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(terminal);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// Installs the process's logger.
pub fn init_logging(format: LogFormat) {
    let terminal = std::io::stderr().is_terminal();
    let sub = subscriber(format, filter(), std::io::stderr, terminal);
    if tracing::subscriber::set_global_default(sub).is_err() {
        let _ = writeln!(std::io::stderr(), "logging was set up already");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat) -> String {
        let buf = Buffer::default();
        let out = buf.clone();
        let sub = subscriber(format, EnvFilter::new("info"), move || out.clone(), false);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("reconcile", plan = "to-ebpf");
            let _in = span.enter();
            tracing::info!(node = "node1", step = "Cordon", "advanced");
            tracing::debug!("filtered out");
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_logs_are_one_object_a_line_with_the_fields_and_the_span() {
        let text = logged(LogFormat::Json);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "advanced");
        assert_eq!(
            (&v["node"], &v["step"]),
            (&"node1".into(), &"Cordon".into())
        );
        assert_eq!(v["span"]["plan"], "to-ebpf");
        assert!(v["timestamp"].is_string());
    }

    #[test]
    fn text_logs_are_for_people() {
        let text = logged(LogFormat::Text);
        assert!(
            text.contains("advanced") && text.contains("node=\"node1\""),
            "{text}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_err());
    }

    #[test]
    fn the_format_is_text_or_json() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("text or json")
        );
    }
}
