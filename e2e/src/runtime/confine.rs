//! Applies a [`Confinement`] in the forked child before `exec`, after the
//! namespaces and cgroup: the bounding set cut to the container's
//! capabilities, the seccomp filter (installed while the child still holds
//! CAP_SYS_ADMIN, so it needs no no-new-privileges), the user and groups,
//! the permitted/effective (and for a non-root user inheritable and
//! ambient) sets, then no-new-privileges. Only async-signal-safe system
//! calls on data prepared before the fork.

use std::io;

use super::seccomp;
use super::security::{ALL_CAPS, Confinement};

/// A confinement with its seccomp program built (before the fork).
#[derive(Clone)]
pub struct Prepared {
    conf: Confinement,
    filter: Option<Vec<libc::sock_filter>>,
    groups: Vec<libc::gid_t>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("conf", &self.conf)
            .field("filter_len", &self.filter.as_ref().map(Vec::len))
            .finish()
    }
}

impl Prepared {
    /// Builds what [`apply`] needs. A privileged container gets every
    /// capability the runtime itself holds (as runc does), not more.
    pub fn new(conf: &Confinement) -> Self {
        let mut conf = conf.clone();
        if conf.caps == ALL_CAPS {
            conf.caps &= own_permitted().unwrap_or(ALL_CAPS);
        }
        Self {
            filter: conf.seccomp_deny.as_deref().map(seccomp::program),
            groups: conf.groups.clone(),
            conf,
        }
    }
}

/// This process's permitted capability set.
fn own_permitted() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapPrm:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

const CAP_V3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(op, a, b, 0, 0) }.into())
}

/// In the child: see the module documentation.
pub fn apply(p: &Prepared) -> io::Result<()> {
    let caps = p.conf.caps;
    drop_bounding(caps)?;
    if let Some(f) = &p.filter {
        install_filter(f)?;
    }
    if p.conf.uid.is_some() || p.conf.gid.is_some() || !p.groups.is_empty() {
        switch_user(p)?;
    }
    let non_root = p.conf.non_root();
    set_caps(caps, non_root)?;
    if non_root {
        for cap in (0..64).filter(|c| caps & (1u64 << c) != 0) {
            // SAFETY: prctl with integer arguments only.
            let r =
                unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) };
            check(r.into())?;
        }
    }
    if p.conf.no_new_privs {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)?;
    }
    Ok(())
}

fn drop_bounding(caps: u64) -> io::Result<()> {
    for cap in (0..64u64).filter(|c| caps & (1u64 << c) == 0) {
        if let Err(e) = prctl(libc::PR_CAPBSET_DROP, cap, 0) {
            // Past the kernel's last capability.
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    Ok(())
}

fn install_filter(f: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(f.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = libc::sock_fprog {
        len,
        filter: f.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at a filter that outlives the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    check(r.into())
}

/// Groups, gid and uid (keeping the permitted set across the uid change),
/// and the process dumpable again so it may open its own /proc entries.
fn switch_user(p: &Prepared) -> io::Result<()> {
    let uid = p.conf.uid.unwrap_or(0);
    let gid = p.conf.gid.unwrap_or(0);
    prctl(libc::PR_SET_KEEPCAPS, 1, 0)?;
    // SAFETY: raw system calls (not glibc's all-threads wrappers; the forked
    // child has one thread) with integers and a slice that outlives them.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            p.groups.len(),
            p.groups.as_ptr(),
        ))?;
        check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
    }
    prctl(libc::PR_SET_DUMPABLE, 1, 0)
}

fn set_caps(caps: u64, non_root: bool) -> io::Result<()> {
    let header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let inheritable = if non_root { caps } else { 0 };
    let data = [0, 32].map(|shift| CapData {
        effective: (caps >> shift) as u32,
        permitted: (caps >> shift) as u32,
        inheritable: (inheritable >> shift) as u32,
    });
    // SAFETY: capset with a valid v3 header and two data elements.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) })
}

#[cfg(test)]
mod tests {
    use super::super::security::cap_bit;
    use super::*;
    use crate::sys::{Placement, place};

    fn field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_default()
            .trim()
    }

    /// Spawns a confined `cat` of its own status and mount table (the
    /// lab runs as root; elsewhere there is nothing to confine).
    #[tokio::test]
    async fn a_confined_process_has_exactly_its_context() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let caps = cap_bit("NET_ADMIN").unwrap_or(0) | cap_bit("BPF").unwrap_or(0);
        let conf = Confinement {
            uid: Some(65532),
            gid: Some(65532),
            groups: vec![],
            caps,
            no_new_privs: true,
            read_only_root: true,
            seccomp_deny: Some(super::super::security::seccomp_deny_list(caps)),
        };
        let placement = Placement {
            confinement: Some(conf),
            ..Default::default()
        };
        let mut cmd = tokio::process::Command::new("/bin/cat");
        cmd.args(["/proc/self/status", "/proc/self/mountinfo"]);
        place(&mut cmd, &placement).expect("placement");
        let out = cmd.output().await.expect("spawn");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let mask = format!("{caps:016x}");
        for name in ["CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"] {
            assert_eq!(field(&text, name), mask, "{name}");
        }
        assert_eq!(field(&text, "NoNewPrivs"), "1");
        assert_eq!(field(&text, "Seccomp"), "2");
        assert!(field(&text, "Uid").starts_with("65532\t65532"));
        let root = text
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .expect("root mount");
        assert!(
            root.split(' ').nth(5).is_some_and(|o| o.starts_with("ro")),
            "{root}"
        );
    }

    /// A privileged container keeps what the runtime holds, even where
    /// that is less than every capability (this host lacks some).
    #[tokio::test]
    async fn privileged_gets_the_runtime_own_set() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let conf = Confinement {
            uid: None,
            gid: None,
            groups: vec![],
            caps: ALL_CAPS,
            no_new_privs: false,
            read_only_root: false,
            seccomp_deny: None,
        };
        let placement = Placement {
            confinement: Some(conf),
            ..Default::default()
        };
        let mut cmd = tokio::process::Command::new("/bin/cat");
        cmd.arg("/proc/self/status");
        place(&mut cmd, &placement).expect("placement");
        let out = cmd.output().await.expect("spawn");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let own = format!("{:016x}", own_permitted().expect("own set"));
        assert_eq!(field(&text, "CapEff"), own);
        assert_eq!(field(&text, "Seccomp"), "0");
    }
}
