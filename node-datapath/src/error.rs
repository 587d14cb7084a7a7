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
    /// The verifier refused a program; `log` is its full output.
    #[error("the verifier rejected program {program}: {source}\nverifier log:\n{log}")]
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

impl DatapathError {
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
