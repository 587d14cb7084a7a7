//! What this node can run: kernel, BTF, mounts, privileges, whether each
//! socket hook's program actually loads and attaches (tried on a temporary
//! cgroup that is removed again), and whether the ingress program loads
//! with its conntrack kfuncs (not attached). The result is plain data for
//! the `NodeDatapath` status.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::{
    DatapathError,
    config::{Capacities, Hook},
    object::{OBJECT, attach_link, load_object, load_program},
};

/// One hook's probe result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookProbe {
    /// The hook name (`connect4`, …).
    pub hook: String,
    /// Loaded and attached successfully.
    pub attachable: bool,
    /// Why not, if not.
    pub error: Option<String>,
}

/// The node's datapath capabilities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `uname -r`.
    pub kernel_release: String,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// First cgroup v2 mount point.
    pub cgroup2_mount: Option<String>,
    /// First bpffs mount point.
    pub bpffs_mount: Option<String>,
    /// The process has CAP_BPF+CAP_NET_ADMIN or CAP_SYS_ADMIN.
    pub bpf_privileges: bool,
    /// Per hook: loadable and attachable.
    pub hooks: Vec<HookProbe>,
    /// The ingress program (traffic from outside the node): loadable with
    /// its conntrack kfuncs resolved (`attachable` means loaded; it is not
    /// attached anywhere). `None` when not tried (no privileges).
    pub ingress: Option<HookProbe>,
    /// iptables backends found (`nft`, `legacy`).
    pub iptables_backends: Vec<String>,
}

impl Capabilities {
    /// Whether everything the socket load balancer needs is present.
    pub fn datapath_ready(&self) -> bool {
        self.cgroup2_mount.is_some()
            && self.bpffs_mount.is_some()
            && self.bpf_privileges
            && self.hooks.len() == Hook::ALL.len()
            && self.hooks.iter().all(|h| h.attachable)
    }
}

/// Mount point of the first filesystem of type `fstype` in a
/// `/proc/self/mounts` text.
pub fn mount_of(mounts: &str, fstype: &str) -> Option<String> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_src, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then(|| dir.replace("\\040", " "))
    })
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Whether the `CapEff` line of a `/proc/<pid>/status` text grants loading
/// and attaching cgroup BPF programs; `None` if the line is missing.
pub fn caps_sufficient(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let eff = u64::from_str_radix(hex, 16).ok()?;
    let has = |c: u32| eff & (1u64 << c) != 0;
    Some(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN)))
}

fn own_caps_sufficient() -> Result<bool, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    caps_sufficient(&status).ok_or_else(|| "no CapEff in /proc/self/status".to_owned())
}

/// Fails with [`DatapathError::MissingCapability`] unless this process may
/// load and attach the programs.
pub(crate) fn require_bpf_capabilities() -> Result<(), DatapathError> {
    match own_caps_sufficient() {
        Ok(true) => Ok(()),
        Ok(false) => Err(DatapathError::MissingCapability(
            "effective capabilities of this process lack them".to_owned(),
        )),
        Err(e) => Err(DatapathError::MissingCapability(e)),
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(bin).is_file())
}

/// Removes the temporary probe cgroup on every exit path.
struct TempCgroup(PathBuf);

impl Drop for TempCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            tracing::warn!(cgroup = %self.0.display(), error = %e, "cannot remove probe cgroup");
        }
    }
}

static PROBE_SEQ: AtomicU32 = AtomicU32::new(0);

/// Loads the embedded object (small maps, nothing pinned) and attaches each
/// program to a fresh child cgroup of `cgroup2`; everything is released
/// before returning.
fn probe_hooks(cgroup2: &Path) -> Vec<HookProbe> {
    let fail_all = |e: String| {
        Hook::ALL
            .iter()
            .map(|h| HookProbe {
                hook: h.name().to_owned(),
                attachable: false,
                error: Some(e.clone()),
            })
            .collect()
    };
    let dir = cgroup2.join(format!(
        "switchyard-probe-{}-{}",
        std::process::id(),
        PROBE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if let Err(e) = std::fs::create_dir(&dir) {
        return fail_all(format!("creating probe cgroup {}: {e}", dir.display()));
    }
    let tmp = TempCgroup(dir);
    let mut ebpf = match load_object(OBJECT, &PROBE_CAPACITIES, None, false) {
        Ok(o) => o,
        Err(e) => return fail_all(e.to_string()),
    };
    let cg = match std::fs::File::open(&tmp.0) {
        Ok(f) => f,
        Err(e) => return fail_all(format!("opening probe cgroup: {e}")),
    };
    let mut out = Vec::new();
    for hook in Hook::ALL {
        let r = load_program(&mut ebpf, hook).and_then(|mut p| attach_link(&mut p, hook, &cg));
        // Dropping the link detaches it.
        out.push(HookProbe {
            hook: hook.name().to_owned(),
            attachable: r.is_ok(),
            error: r.err().map(|e| e.to_string()),
        });
    }
    drop(ebpf);
    drop(cg);
    drop(tmp);
    out
}

/// Map sizes of the probes' throwaway loads.
const PROBE_CAPACITIES: Capacities = Capacities {
    services: 16,
    backends: 16,
    rev_nat: 16,
    sock_rev_nat: 16,
    affinity: 16,
    events_ring: 4096,
};

/// Loads the ingress program with its kfuncs resolved against this kernel,
/// without attaching it; everything is released before returning.
fn probe_ingress() -> HookProbe {
    let loaded = load_object(OBJECT, &PROBE_CAPACITIES, None, true)
        .and_then(|mut ebpf| crate::ingress::load(&mut ebpf).map(|_| ()));
    HookProbe {
        hook: "ingress".to_owned(),
        attachable: loaded.is_ok(),
        error: loaded.err().map(|e| e.to_string()),
    }
}

/// Probes the node, trying the hooks under the first cgroup v2 mount.
/// Never fails: what is missing is reported as such.
pub fn probe() -> Capabilities {
    probe_at(None)
}

/// Probes the node, trying the hooks on a temporary child of `cgroup` (the
/// cgroup the datapath will attach to; in a container whose `/sys/fs/cgroup`
/// is a bind mount, the first cgroup v2 mount listed may be shadowed).
pub fn probe_at(cgroup: Option<&Path>) -> Capabilities {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let cgroup2_mount = mount_of(&mounts, "cgroup2");
    let bpffs_mount = mount_of(&mounts, "bpf");
    let bpf_privileges = own_caps_sufficient().unwrap_or(false);
    let parent = cgroup
        .map(Path::to_path_buf)
        .or_else(|| cgroup2_mount.as_deref().map(Into::into));
    let hooks = match (&parent, bpf_privileges) {
        (Some(cg), true) => probe_hooks(cg),
        (None, _) => Vec::new(),
        (Some(_), false) => Vec::new(),
    };
    let ingress = bpf_privileges.then(probe_ingress);
    let mut iptables_backends = Vec::new();
    if on_path("iptables-nft") {
        iptables_backends.push("nft".to_owned());
    }
    if on_path("iptables-legacy") {
        iptables_backends.push("legacy".to_owned());
    }
    Capabilities {
        kernel_release: kernel_release(),
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        cgroup2_mount,
        bpffs_mount,
        bpf_privileges,
        hooks,
        ingress,
        iptables_backends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_by_type() {
        let m = "sysfs /sys sysfs rw 0 0\n\
                 cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n\
                 cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n\
                 bpf /sys/fs/bpf bpf rw 0 0\n";
        assert_eq!(
            mount_of(m, "cgroup2").as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        assert_eq!(mount_of(m, "bpf").as_deref(), Some("/sys/fs/bpf"));
        assert_eq!(mount_of(m, "tracefs"), None);
    }

    #[test]
    fn capability_bits() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(caps_sufficient(root), Some(true));
        // CAP_BPF (39) + CAP_NET_ADMIN (12) without CAP_SYS_ADMIN.
        let bpf_net = format!("CapEff:\t{:016x}\n", (1u64 << 39) | (1u64 << 12));
        assert_eq!(caps_sufficient(&bpf_net), Some(true));
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << 39);
        assert_eq!(caps_sufficient(&bpf_only), Some(false));
        assert_eq!(caps_sufficient("CapEff:\t0000000000000000\n"), Some(false));
        assert_eq!(caps_sufficient("Name:\tx\n"), None);
    }
}
