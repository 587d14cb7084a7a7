//! A container's `securityContext` (pod level, then container level) as
//! the runtime applies it (pure): user and groups, the capability set,
//! no-new-privileges, a read-only root filesystem and the seccomp filter.
//! What the lab cannot apply is refused with a reason, never ignored.
//!
//! Capabilities: the bounding, permitted and effective sets all become the
//! container's set: containerd's default set, minus `drop` (`ALL` empties
//! it), plus `add`; `privileged` keeps every capability. A non-root user
//! keeps the set through `exec` as ambient capabilities.
//!
//! Seccomp `RuntimeDefault` is a deny list modelled on the container
//! runtimes' default profile (moby's and containerd's): the system calls
//! that profile does not allow, each answered with `EPERM`, unless the
//! container holds the capability that profile allows it for (`bpf` with
//! CAP_BPF or CAP_SYS_ADMIN, `perf_event_open` with CAP_PERFMON or
//! CAP_SYS_ADMIN, `mount`/`unshare`/`setns` with CAP_SYS_ADMIN, …). A
//! foreign architecture's system calls kill the process. Not modelled:
//! the profile's argument filters (`clone` namespace flags, `personality`).

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};

/// How one container's process is confined before `exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// `runAsUser`; `None` keeps root.
    pub uid: Option<u32>,
    /// `runAsGroup` (default: the uid, as images without a group entry).
    pub gid: Option<u32>,
    /// `supplementalGroups` and `fsGroup`.
    pub groups: Vec<u32>,
    /// The capability set as a bit mask (bit n = capability n).
    pub caps: u64,
    /// `allowPrivilegeEscalation: false`: PR_SET_NO_NEW_PRIVS.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem`: `/` read-only in the container's private
    /// mount namespace.
    pub read_only_root: bool,
    /// `RuntimeDefault` seccomp: the system calls it answers with EPERM.
    pub seccomp_deny: Option<Vec<u32>>,
}

impl Confinement {
    /// Whether the process keeps its capabilities across `exec` only as
    /// ambient ones (a non-root user).
    pub fn non_root(&self) -> bool {
        self.uid.is_some_and(|u| u != 0)
    }
}

/// Capability names (without `CAP_`) by number, as in
/// `linux/capability.h` up to CAP_CHECKPOINT_RESTORE.
pub const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's default capability set (what a container without
/// `capabilities` gets).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability the kernel headers above name.
pub const ALL_CAPS: u64 = (1u64 << CAP_NAMES.len()) - 1;

/// The bit of a capability name (`NET_ADMIN` or `CAP_NET_ADMIN`, any case).
pub fn cap_bit(name: &str) -> Option<u64> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAP_NAMES.iter().position(|n| *n == bare).map(|i| 1u64 << i)
}

/// The capability names in a mask, in number order.
pub fn cap_names(mask: u64) -> Vec<&'static str> {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn mask(names: &[String]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |m, n| {
        if n.eq_ignore_ascii_case("ALL") {
            return Ok(m | ALL_CAPS);
        }
        cap_bit(n)
            .map(|b| m | b)
            .ok_or_else(|| format!("unknown capability {n:?}"))
    })
}

fn default_mask() -> u64 {
    DEFAULT_CAPS
        .iter()
        .filter_map(|n| cap_bit(n))
        .fold(0, |m, b| m | b)
}

fn id(v: Option<i64>, what: &str) -> Result<Option<u32>, String> {
    v.map(|v| u32::try_from(v).map_err(|_| format!("{what} {v} is not a valid id")))
        .transpose()
}

/// The confinement of container `c` in a pod with pod-level context
/// `pod`; `Err` names what the lab runtime cannot apply.
pub fn confinement(pod: Option<&PodSecurityContext>, c: &Container) -> Result<Confinement, String> {
    let default_pod = PodSecurityContext::default();
    let default_ctr = SecurityContext::default();
    let p = pod.unwrap_or(&default_pod);
    let s = c.security_context.as_ref().unwrap_or(&default_ctr);
    refuse_unsupported(p, s)?;
    let privileged = s.privileged.unwrap_or(false);
    let uid = id(s.run_as_user.or(p.run_as_user), "runAsUser")?;
    let gid = id(s.run_as_group.or(p.run_as_group), "runAsGroup")?;
    if s.run_as_non_root.or(p.run_as_non_root).unwrap_or(false) && uid.unwrap_or(0) == 0 {
        return Err("runAsNonRoot is set but the container would run as root \
                    (the lab's images have no non-root user; set runAsUser)"
            .into());
    }
    let mut groups = Vec::new();
    for g in p
        .supplemental_groups
        .iter()
        .flatten()
        .copied()
        .chain(p.fs_group)
    {
        groups.extend(id(Some(g), "supplementalGroups/fsGroup")?);
    }
    let caps = if privileged {
        ALL_CAPS
    } else {
        let cs = s.capabilities.clone().unwrap_or_default();
        let drop = mask(cs.drop.as_deref().unwrap_or(&[]))?;
        let add = mask(cs.add.as_deref().unwrap_or(&[]))?;
        (default_mask() & !drop) | add
    };
    let no_new_privs = s.allow_privilege_escalation == Some(false);
    if no_new_privs && (privileged || caps & cap_bit("SYS_ADMIN").unwrap_or(0) != 0) {
        return Err("allowPrivilegeEscalation: false contradicts privileged or \
                    CAP_SYS_ADMIN"
            .into());
    }
    let profile = s
        .seccomp_profile
        .as_ref()
        .or(p.seccomp_profile.as_ref())
        .map(|sp| sp.type_.as_str());
    let seccomp_deny = match profile {
        None | Some("Unconfined") => None,
        Some("RuntimeDefault") if !privileged => Some(seccomp_deny_list(caps)),
        Some("RuntimeDefault") => None,
        Some(other) => return Err(format!("seccomp profile type {other} is not supported")),
    };
    Ok(Confinement {
        uid,
        gid: gid.or(uid),
        groups,
        caps,
        no_new_privs,
        read_only_root: s.read_only_root_filesystem.unwrap_or(false),
        seccomp_deny,
    })
}

/// Settings the lab cannot enforce: SELinux, AppArmor other than
/// `Unconfined`, sysctls, an unmasked /proc, Windows options.
fn refuse_unsupported(p: &PodSecurityContext, s: &SecurityContext) -> Result<(), String> {
    let apparmor = s
        .app_armor_profile
        .as_ref()
        .or(p.app_armor_profile.as_ref());
    if let Some(a) = apparmor
        && a.type_ != "Unconfined"
    {
        return Err(format!(
            "AppArmor profile type {} is not supported",
            a.type_
        ));
    }
    if s.se_linux_options.is_some() || p.se_linux_options.is_some() {
        return Err("seLinuxOptions are not supported".into());
    }
    if p.sysctls.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err("pod sysctls are not supported".into());
    }
    if s.proc_mount.as_deref().is_some_and(|m| m != "Default") {
        return Err("procMount other than Default is not supported".into());
    }
    if s.windows_options.is_some() || p.windows_options.is_some() {
        return Err("windowsOptions are not supported".into());
    }
    Ok(())
}

/// The system calls `RuntimeDefault` denies a container holding `caps`.
pub fn seccomp_deny_list(caps: u64) -> Vec<u32> {
    let has = |n: &str| cap_bit(n).is_some_and(|b| caps & b != 0);
    super::seccomp::DENIED
        .iter()
        .filter(|(_, allowed_by)| !allowed_by.iter().any(|c| has(c)))
        .map(|(nr, _)| *nr)
        .collect()
}

#[cfg(test)]
mod tests;
