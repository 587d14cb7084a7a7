//! Thin wrappers over the kernel pieces the lab uses: network namespaces
//! (named, via `ip netns`), cgroup v2 directories, process placement
//! (`setns`, mount and UTS namespaces, cgroup) and running work on a thread
//! that has entered a network namespace.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use switchyard_testkit::procfs;

use crate::error::{Error, Result};
use crate::runtime::confine::{self, Prepared};
use crate::runtime::rootfs::{self, Entering, RootFs};
use crate::runtime::security::Confinement;

/// Runs a helper program and returns its stdout; a non-zero exit is an error
/// carrying stderr.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io("running", program))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Command {
        command: command_line(program, args),
        detail: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

fn command_line<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs `ip` with the given arguments (split on whitespace).
pub fn ip(args: &str) -> Result<String> {
    let v: Vec<&str> = args.split_whitespace().collect();
    run("ip", &v)
}

/// Path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Creates a named network namespace with loopback up.
pub fn netns_add(name: &str) -> Result<()> {
    ip(&format!("netns add {name}"))?;
    ip(&format!("-n {name} link set lo up"))?;
    Ok(())
}

/// Deletes a named network namespace (no error if it is gone already).
pub fn netns_del(name: &str) {
    if netns_path(name).exists()
        && let Err(e) = ip(&format!("netns del {name}"))
    {
        tracing::warn!(%name, error = %e, "deleting network namespace");
    }
}

/// Names of existing named network namespaces starting with `prefix`.
pub fn netns_list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Writes a sysctl inside a network namespace (`/proc/sys/net/...`).
pub fn netns_sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_netns(&netns_path(netns), move || {
        std::fs::write(&path, &value).map_err(Error::io("writing sysctl", &path))
    })?
}

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `netns`; sockets it creates stay in that namespace.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let file = File::open(netns).map_err(Error::io("opening netns", netns))?;
    let handle = std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(Error::sys("setns"))?;
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| Error::Config("thread inside a network namespace panicked".into()))?
}

/// A cgroup v2 directory owned by the lab.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Absolute path of the directory.
    pub path: PathBuf,
}

impl Cgroup {
    /// Creates (if missing) the cgroup at `path`.
    pub fn create(path: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&path).map_err(Error::io("creating cgroup", &path))?;
        Ok(Self { path })
    }

    /// A child cgroup.
    pub fn child(&self, name: &str) -> Result<Self> {
        Self::create(self.path.join(name))
    }

    /// Kills every process in the subtree and removes it, depth first.
    pub fn destroy(path: &Path) {
        if !path.exists() {
            return;
        }
        // cgroup.kill (5.14+) kills the whole subtree atomically.
        let _ = std::fs::write(path.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            remove_tree(path);
            if !path.exists() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if path.exists() {
            tracing::warn!(path = %path.display(), "cgroup still busy after kill");
        }
    }

    /// Pids currently in this cgroup (not its children).
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Pids in the whole subtree.
    pub fn pids_recursive(&self) -> Vec<i32> {
        let mut out = self.pids();
        if let Ok(dir) = std::fs::read_dir(&self.path) {
            for e in dir.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.extend(Cgroup { path: e.path() }.pids_recursive());
                }
            }
        }
        out
    }
}

fn remove_tree(path: &Path) {
    if let Ok(dir) = std::fs::read_dir(path) {
        for e in dir.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// The mount point of the cgroup v2 hierarchy (from /proc/self/mounts).
pub fn cgroup2_root() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(Error::io("reading", "/proc/self/mounts"))?;
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .ok_or_else(|| Error::Config("no cgroup2 mount; run e2e/hack/host-setup.sh".into()))
}

/// The bpffs mount point (`/sys/fs/bpf` or `$SWITCHYARD_BPFFS`), if
/// mounted.
pub fn bpffs_root() -> Option<PathBuf> {
    let want = std::env::var_os("SWITCHYARD_BPFFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf"));
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .any(|f| f.len() > 2 && f[2] == "bpf" && Path::new(f[1]) == want)
        .then_some(want)
}

/// Where and how a spawned process lives.
#[derive(Debug, Default, Clone)]
pub struct Placement {
    /// Join this network namespace.
    pub netns: Option<PathBuf>,
    /// Move into this cgroup before exec.
    pub cgroup: Option<PathBuf>,
    /// Private mount namespace with these bind mounts (source, target).
    pub mounts: Vec<(PathBuf, PathBuf)>,
    /// Private UTS namespace with this hostname.
    pub hostname: Option<String>,
    /// The container's `securityContext`, applied last.
    pub confinement: Option<Confinement>,
    /// The image's root filesystem to run in (the host's when `None`); the
    /// bind mounts' targets are then inside it.
    pub root: Option<RootFs>,
}

/// Applies `placement` to `cmd`: the child joins the namespaces and cgroup
/// between fork and exec and becomes a session leader (so its process group
/// can be signalled as a whole).
pub fn place(cmd: &mut tokio::process::Command, placement: &Placement) -> Result<()> {
    let netns = match &placement.netns {
        Some(p) => Some(File::open(p).map_err(Error::io("opening netns", p))?),
        None => None,
    };
    let cgroup = match &placement.cgroup {
        Some(p) => {
            let procs = p.join("cgroup.procs");
            Some(
                OpenOptions::new()
                    .write(true)
                    .open(&procs)
                    .map_err(Error::io("opening", &procs))?,
            )
        }
        None => None,
    };
    let mut mounts = Vec::new();
    let entering = match &placement.root {
        Some(root) => Some(root.prepare(&placement.mounts)?),
        None => {
            for (src, dst) in &placement.mounts {
                mounts.push((cstring(src)?, cstring(dst)?));
            }
            None
        }
    };
    let hostname = placement.hostname.clone();
    let read_only_root = placement
        .confinement
        .as_ref()
        .is_some_and(|c| c.read_only_root);
    let confine = placement.confinement.as_ref().map(Prepared::new);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls async-signal-safe system calls on values prepared above.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(f) = &cgroup
                && libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(f) = &netns
                && libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if !mounts.is_empty() || read_only_root || entering.is_some() {
                bind_mounts(&mounts, entering.as_ref(), read_only_root)?;
            }
            if let Some(h) = &hostname {
                if libc::unshare(libc::CLONE_NEWUTS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(c) = &confine {
                confine::apply(c)?;
            }
            Ok(())
        });
    }
    Ok(())
}

/// In the forked child, before exec: a private mount namespace (the host's
/// mounts still propagate in, none out) with `mounts` bind-mounted (source,
/// target) or the image's root entered with its mounts, and the root mount
/// read-only if `read_only_root` (the bind mounts keep their own flags).
/// Only async-signal-safe system calls.
fn bind_mounts(
    mounts: &[(CString, CString)],
    root: Option<&Entering>,
    read_only_root: bool,
) -> std::io::Result<()> {
    // SAFETY: unshare takes no pointer.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    mount(None, c"/", libc::MS_REC | libc::MS_SLAVE)?;
    for (src, dst) in mounts {
        mount(Some(src), dst, libc::MS_BIND | libc::MS_REC)?;
    }
    if let Some(e) = root {
        rootfs::enter(e)?;
    }
    if read_only_root {
        remount_root_read_only()?;
    }
    Ok(())
}

/// `mount(2)` with no filesystem type and no data (`src` null when `None`).
pub(crate) fn mount(src: Option<&CStr>, dst: &CStr, flags: libc::c_ulong) -> std::io::Result<()> {
    let src = src.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: the paths are valid NUL-terminated strings (or null where
    // the kernel allows it) that outlive the call.
    let r = unsafe { libc::mount(src, dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `/` (the root mount only) read-only, keeping its other flags.
fn remount_root_read_only() -> std::io::Result<()> {
    let root = c"/";
    // SAFETY: statvfs gets a valid path and a buffer that outlive the call.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(root.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    let keep = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .iter()
    .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
    .fold(0, |m, (_, ms)| m | ms);
    mount(
        None,
        root,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | keep,
    )
}

pub(crate) fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("path with NUL byte: {}", p.display())))
}

/// Sends `sig` to the process group led by `pid`.
pub fn signal_group(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), sig);
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = procfs::read_stat(pid).unwrap_or_default();
    !matches!(procfs::stat_state(&stat), Some("Z" | "X") | None)
}
