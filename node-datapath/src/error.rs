//! The crate's one error type.

use std::{io, path::PathBuf};

/// Everything that can go wrong while loading, attaching, adopting,
/// programming or removing the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pin directory's filesystem is not a bpffs.
    #[error("{0} is not on a bpffs (mount -t bpf bpf /sys/fs/bpf; e2e/hack/host-setup.sh does it)")]
    BpffsNotMounted(PathBuf),
    /// The configured cgroup does not exist.
    #[error("cgroup path {0} does not exist")]
    CgroupMissing(PathBuf),
    /// The configured cgroup is not on a cgroup v2 filesystem.
    #[error("{0} is not a cgroup v2 directory (mount -t cgroup2 none <dir>)")]
    NotCgroup2(PathBuf),
    /// The process lacks the capabilities to load BPF programs.
    #[error(
        "missing capability: loading and attaching BPF programs needs CAP_BPF and \
         CAP_NET_ADMIN, or CAP_SYS_ADMIN ({0})"
    )]
    MissingCapability(String),
    /// The verifier refused a program. The message ends with the log's
    /// last lines, where the verifier says why; `log` is all of it (up to
    /// megabytes: too much for a status condition or a CI summary).
    #[error(
        "the verifier rejected program {program}: {source}; the verifier log ends with:\n{}",
        log_tail(.log)
    )]
    VerifierRejected {
        /// Program name in the object.
        program: &'static str,
        /// The `bpf(BPF_PROG_LOAD)` error.
        source: io::Error,
        /// The verifier log.
        log: String,
    },
    /// A pinned map from an earlier run does not match this build's layout
    /// or configured capacity; run mode Off to remove the old datapath.
    #[error(
        "pinned map {path} is incompatible with this datapath ({detail}); run mode Off to \
         remove the old datapath first"
    )]
    IncompatiblePin {
        /// The pin.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The embedded object lacks a program or map this code expects.
    #[error("the embedded BPF object: {0}")]
    Object(String),

    #[error(
        "this kernel lacks the conntrack kfuncs {missing:?} the ingress program calls \
         (CONFIG_NF_CONNTRACK with BTF); NodePort, ExternalIP and LoadBalancer traffic from \
         outside the node cannot be served"
    )]
    MissingKfuncs { missing: Vec<&'static str> },

    #[error("interface {name}: {detail}")]
    Interface { name: String, detail: String },

    #[error("the embedded BPF object has no {0}")]
    MissingObject(&'static str),
    /// Parsing/creating the object (maps, relocations) failed.
    #[error("loading the BPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program operation (load, attach) failed.
    #[error("program {program}: {source}")]
    Program {
        /// Program name in the object.
        program: &'static str,
        /// The aya error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A link could not be turned into a pinnable bpf_link.
    #[error("link of program {program}: {source}")]
    Link {
        /// Program name in the object.
        program: &'static str,
        /// The aya error.
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The aya error.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A batched map write (`BPF_MAP_UPDATE_BATCH`/`BPF_MAP_DELETE_BATCH`)
    /// failed.
    #[error("map {map}: batched write: {source}")]
    MapBatch {
        /// Map name.
        map: &'static str,
        /// The `bpf(2)` error.
        #[source]
        source: io::Error,
    },
    /// Pinning a link failed.
    #[error("pinning {path}: {source}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// The aya error.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A raw `bpf(2)` command failed.
    #[error("bpf({op}): {source}")]
    Syscall {
        /// The command.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Lines of a verifier log shown in [`DatapathError::VerifierRejected`]'s
/// message, and the longest line kept.
const LOG_TAIL_LINES: usize = 8;
const LOG_LINE_CHARS: usize = 240;

/// The last [`LOG_TAIL_LINES`] non-empty lines of a verifier log, each cut
/// to [`LOG_LINE_CHARS`], with a note of how many lines came before.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let skipped = lines.len().saturating_sub(LOG_TAIL_LINES);
    let mut out = String::new();
    if skipped > 0 {
        out.push_str(&format!("  [{skipped} earlier lines]\n"));
    }
    for line in &lines[skipped..] {
        let cut: String = line.chars().take(LOG_LINE_CHARS).collect();
        out.push_str("  ");
        out.push_str(&cut);
        if cut.len() < line.len() {
            out.push('…');
        }
        out.push('\n');
    }
    if lines.is_empty() {
        out.push_str("  (empty)\n");
    }
    out.pop();
    out
}

impl DatapathError {
    /// The verifier's whole log, for a rejection.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::VerifierRejected { log, .. } => Some(log),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn map(map: &'static str, source: aya::maps::MapError) -> Self {
        Self::Map {
            map,
            source: Box::new(source),
        }
    }

    pub(crate) fn syscall(op: &'static str, source: io::Error) -> Self {
        Self::Syscall { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(log: &str) -> DatapathError {
        DatapathError::VerifierRejected {
            program: "sy_connect4",
            source: io::Error::from_raw_os_error(libc::EACCES),
            log: log.to_owned(),
        }
    }

    #[test]
    fn a_rejection_message_shows_the_end_of_the_log_only() {
        let mut log: String = (0..10_000).map(|i| format!("{i}: (b7) r0 = 0\n")).collect();
        log.push_str("\nR1 invalid mem access 'scalar'\nprocessed 10001 insns\n\n");
        let msg = rejected(&log).to_string();
        assert!(
            msg.starts_with("the verifier rejected program sy_connect4: "),
            "{msg}"
        );
        assert!(
            msg.contains("R1 invalid mem access 'scalar'\n  processed 10001 insns"),
            "{msg}"
        );
        assert!(msg.contains("[9994 earlier lines]"), "{msg}");
        assert!(!msg.contains("9993: "), "{msg}");
        assert!(msg.len() < 1_000, "{} bytes", msg.len());
        assert_eq!(rejected(&log).verifier_log(), Some(log.as_str()));
    }

    #[test]
    fn short_empty_and_long_line_logs() {
        let msg = rejected("one\ntwo").to_string();
        assert!(msg.ends_with(":\n  one\n  two"), "{msg}");
        assert!(!msg.contains("earlier"), "{msg}");
        assert!(rejected("").to_string().ends_with("  (empty)"));
        let long = "x".repeat(1_000);
        let msg = rejected(&long).to_string();
        assert!(
            msg.ends_with(&format!("  {}…", "x".repeat(LOG_LINE_CHARS))),
            "{msg}"
        );
        assert_eq!(
            DatapathError::MissingObject("sy_connect4").verifier_log(),
            None
        );
    }
}
