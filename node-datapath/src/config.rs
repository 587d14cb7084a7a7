//! Plain configuration and report types of the datapath.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;
use switchyard_abi::capacity;

/// Default pin directory.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/switchyard";

/// The pin directory of maps under `bpffs_dir`.
pub(crate) fn maps_dir(bpffs_dir: &Path) -> PathBuf {
    bpffs_dir.join("maps")
}

/// The pin directory of links under `bpffs_dir`.
pub(crate) fn links_dir(bpffs_dir: &Path) -> PathBuf {
    bpffs_dir.join("links")
}

/// One of the five socket hooks: four translate addresses (cgroup
/// sock_addr programs), `sock_release` cleans up after a socket (a cgroup
/// sock program).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// `cgroup/connect4`.
    Connect4,
    /// `cgroup/sendmsg4`.
    Sendmsg4,
    /// `cgroup/recvmsg4`.
    Recvmsg4,
    /// `cgroup/getpeername4`.
    Getpeername4,
    /// `cgroup/sock_release`.
    SockRelease,
}

impl Hook {
    /// Every hook, in attach order (reverse paths last is harmless either way).
    pub const ALL: [Hook; 5] = [
        Hook::Connect4,
        Hook::Sendmsg4,
        Hook::Recvmsg4,
        Hook::Getpeername4,
        Hook::SockRelease,
    ];

    /// The hook's name (also its link pin's file name and metric label).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect4 => "connect4",
            Hook::Sendmsg4 => "sendmsg4",
            Hook::Recvmsg4 => "recvmsg4",
            Hook::Getpeername4 => "getpeername4",
            Hook::SockRelease => "sock_release",
        }
    }

    /// The program's function name in `bpf/sock_lb.h`.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Connect4 => "sy_connect4",
            Hook::Sendmsg4 => "sy_sendmsg4",
            Hook::Recvmsg4 => "sy_recvmsg4",
            Hook::Getpeername4 => "sy_getpeername4",
            Hook::SockRelease => "sy_sock_release",
        }
    }

    /// `enum bpf_attach_type` value.
    pub(crate) fn attach_type(self) -> u32 {
        match self {
            Hook::Connect4 => 10,     // BPF_CGROUP_INET4_CONNECT
            Hook::Sendmsg4 => 14,     // BPF_CGROUP_UDP4_SENDMSG
            Hook::Recvmsg4 => 19,     // BPF_CGROUP_UDP4_RECVMSG
            Hook::Getpeername4 => 29, // BPF_CGROUP_INET4_GETPEERNAME
            Hook::SockRelease => 34,  // BPF_CGROUP_INET_SOCK_RELEASE
        }
    }
}

/// Map capacities (`max_entries`); defaults are lb.h's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Capacities {
    /// `sy_svc_v4`.
    pub services: u32,
    /// `sy_backend_v4`.
    pub backends: u32,
    /// `sy_revnat_v4`.
    pub rev_nat: u32,
    /// `sy_sock_rnat4` (LRU).
    pub sock_rev_nat: u32,
    /// `sy_affinity4` (LRU).
    pub affinity: u32,
    /// Bytes of the `sy_events` ring buffer: a power of 2, at least a page.
    pub events_ring: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            services: capacity::SERVICES,
            backends: capacity::BACKENDS,
            rev_nat: capacity::REV_NAT,
            sock_rev_nat: capacity::SOCK_REV_NAT,
            affinity: capacity::AFFINITY,
            events_ring: capacity::EVENTS_RING,
        }
    }
}

/// Where and how to run the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Pin directory on a bpffs (created if missing).
    pub bpffs_dir: PathBuf,
    /// cgroup v2 directory the programs attach to (the node's root cgroup
    /// in production; a per-test subtree in tests).
    pub cgroup: PathBuf,
    /// Map sizes.
    pub capacities: Capacities,
    /// The node's external interfaces: each runs the ingress program that
    /// serves NodePort, ExternalIP and LoadBalancer traffic from outside
    /// the node, and the namespace gets the health-port steering program.
    /// Empty: only the socket programs run.
    pub ingress_interfaces: Vec<String>,
    /// How the ingress program attaches to those interfaces.
    pub tc_attach: TcAttach,
}

/// The ingress program's function name in `bpf/nodeport.h`.
pub const INGRESS_PROGRAM: &str = "sy_ingress";

/// How the ingress program attaches to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum TcAttach {
    /// tcx links where the kernel has them (6.6 and later), `clsact`
    /// filters otherwise.
    #[default]
    Auto,
    /// A pinned tcx link per interface.
    Tcx,
    /// A `cls_bpf` filter on the interface's `clsact` qdisc.
    Clsact,
}

impl TcAttach {
    /// Whether this attaches through `clsact` on the running kernel.
    pub fn uses_clsact(self) -> bool {
        match self {
            Self::Auto => {
                use aya::util::KernelVersion;
                KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0))
            }
            Self::Tcx => false,
            Self::Clsact => true,
        }
    }
}

impl DatapathConfig {
    /// Default pin directory and capacities for `cgroup`.
    pub fn new(cgroup: impl Into<PathBuf>) -> Self {
        Self {
            bpffs_dir: PathBuf::from(DEFAULT_BPFFS_DIR),
            cgroup: cgroup.into(),
            capacities: Capacities::default(),
            ingress_interfaces: Vec::new(),
            tc_attach: TcAttach::Auto,
        }
    }
}

/// What [`Datapath::start`] did to one hook's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkAction {
    /// No pinned link: attached and pinned.
    Attached,
    /// Pinned link with the same program: left alone.
    Kept,
    /// Pinned link with another program: program swapped atomically.
    Replaced,
    /// Pinned link was defunct or on another cgroup: detached, re-attached.
    Reattached,
}

/// The outcome of [`Datapath::start`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StartReport {
    /// Maps that were already pinned and were reused with their contents.
    pub adopted_maps: Vec<&'static str>,
    /// Per hook, what happened to its link.
    pub links: Vec<(Hook, LinkAction)>,
    /// Per external interface, what happened to its ingress link.
    pub ingress: Vec<(String, LinkAction)>,
    /// What happened to the health-port steering link (with ingress only).
    pub health: Option<LinkAction>,
    /// Wall time of the whole start (load + attach).
    pub elapsed: Duration,
}

/// What [`off`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OffReport {
    /// Links detached and unpinned.
    pub links_removed: Vec<String>,
    /// Map pins removed.
    pub maps_removed: Vec<String>,
    /// Entries under the pin directory that are not ours and were left.
    pub foreign_left: Vec<PathBuf>,
}
