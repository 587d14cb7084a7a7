//! A container's root filesystem: the image's unpacked rootfs as the
//! read-only lower layer of an overlay with a per-container upper layer,
//! entered in the forked child (its private mount namespace) with `/proc`,
//! a minimal `/dev`, the host's `/sys` and the pod's volume mounts, then
//! `pivot_root` into it. The mounts live in the child's namespace only:
//! they go away with the container's last process.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::{cstring, mount};

/// Where a container's root filesystem is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFs {
    /// The image's unpacked rootfs (shared, never written).
    pub lower: PathBuf,
    /// This container's directory: `upper`, `work` and `merged` in it.
    pub dir: PathBuf,
    /// The working directory inside the image.
    pub workdir: String,
}

/// The device nodes bound from the host into the container's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// `/dev` links to the process's own descriptors.
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Everything [`enter`] needs, as C strings built before the fork.
#[derive(Debug, Clone)]
pub struct Entering {
    overlay: CString,
    merged: CString,
    proc_dir: CString,
    dev: CString,
    sys: CString,
    devices: Vec<(CString, CString)>,
    links: Vec<(CString, CString)>,
    dirs: Vec<CString>,
    files: Vec<CString>,
    binds: Vec<(CString, CString)>,
    workdir: CString,
}

/// The directories from `/` down to `path` (excluded), outermost first.
fn ancestors(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .ancestors()
        .skip(1)
        .filter(|p| p.parent().is_some())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// `path` (absolute, in the container) under `merged`.
fn inside(merged: &Path, path: &Path) -> PathBuf {
    merged.join(path.strip_prefix("/").unwrap_or(path))
}

impl RootFs {
    /// Creates the overlay's directories (empty: a restarted container
    /// starts from the image again) and prepares the mounts of `binds`
    /// (host source, container target) inside the root.
    pub fn prepare(&self, binds: &[(PathBuf, PathBuf)]) -> Result<Entering> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(Error::io("removing", &self.dir))?;
        }
        let (upper, work, merged) = (
            self.dir.join("upper"),
            self.dir.join("work"),
            self.dir.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).map_err(Error::io("creating", d))?;
        }
        let overlay = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            upper.display(),
            work.display()
        );
        let at = |p: &str| cstring(&inside(&merged, Path::new(p)));
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        let mut mounts = Vec::new();
        for (src, dst) in binds {
            for d in ancestors(dst) {
                dirs.push(cstring(&inside(&merged, &d))?);
            }
            let target = inside(&merged, dst);
            if src.is_dir() {
                dirs.push(cstring(&target)?);
            } else {
                files.push(cstring(&target)?);
            }
            mounts.push((cstring(src)?, cstring(&target)?));
        }
        let mut devices = Vec::new();
        for d in DEVICES {
            devices.push((
                cstring(&Path::new("/dev").join(d))?,
                at(&format!("/dev/{d}"))?,
            ));
        }
        let mut links = Vec::new();
        for (name, target) in DEV_LINKS {
            links.push((cstring(Path::new(target))?, at(&format!("/dev/{name}"))?));
        }
        Ok(Entering {
            overlay: CString::new(overlay)
                .map_err(|_| Error::Config("overlay options with a NUL byte".into()))?,
            merged: cstring(&merged)?,
            proc_dir: at("/proc")?,
            dev: at("/dev")?,
            sys: at("/sys")?,
            devices,
            links,
            dirs,
            files,
            binds: mounts,
            workdir: cstring(Path::new(&self.workdir))?,
        })
    }
}

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `mount(2)` of a filesystem of type `fstype` (its name is its source).
fn mount_fs(
    fstype: &CStr,
    dst: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> std::io::Result<()> {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: valid NUL-terminated strings (or null data) outliving the call.
    check(unsafe { libc::mount(fstype.as_ptr(), dst.as_ptr(), fstype.as_ptr(), flags, data) })
}

/// `mkdir`, an existing directory being fine.
fn make_dir(path: &CStr) -> std::io::Result<()> {
    // SAFETY: a valid path outliving the call.
    if unsafe { libc::mkdir(path.as_ptr(), 0o755) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// An empty file to mount a file on (an existing one is kept).
fn make_file(path: &CStr) -> std::io::Result<()> {
    // SAFETY: a valid path; the descriptor is closed at once.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just opened.
    unsafe { libc::close(fd) };
    Ok(())
}

/// In the forked child, in its own mount namespace with `/` a slave:
/// mounts the root and everything in it, then makes it the root. Only
/// async-signal-safe system calls on data built by [`RootFs::prepare`].
pub fn enter(e: &Entering) -> std::io::Result<()> {
    mount_fs(c"overlay", &e.merged, 0, Some(&e.overlay))?;
    for d in [&e.proc_dir, &e.dev, &e.sys] {
        make_dir(d)?;
    }
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount_fs(c"proc", &e.proc_dir, hardened, None)?;
    mount_fs(
        c"tmpfs",
        &e.dev,
        libc::MS_NOSUID,
        Some(c"mode=755,size=64k"),
    )?;
    for (host, target) in &e.devices {
        make_file(target)?;
        mount(Some(host), target, libc::MS_BIND)?;
    }
    for (target, link) in &e.links {
        // SAFETY: valid paths outliving the call.
        check(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })?;
    }
    mount(Some(c"/sys"), &e.sys, libc::MS_BIND | libc::MS_REC)?;
    for d in &e.dirs {
        make_dir(d)?;
    }
    for f in &e.files {
        make_file(f)?;
    }
    for (src, dst) in &e.binds {
        mount(Some(src), dst, libc::MS_BIND | libc::MS_REC)?;
    }
    // SAFETY: path arguments are valid C strings outliving the calls;
    // pivot_root with the same old and new root stacks the old root on
    // the new one, and the detach unmount removes it.
    unsafe {
        check(libc::chdir(e.merged.as_ptr()))?;
        let dot = c".".as_ptr();
        if libc::syscall(libc::SYS_pivot_root, dot, dot) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        check(libc::umount2(dot, libc::MNT_DETACH))?;
        check(libc::chdir(e.workdir.as_ptr()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{Placement, place};

    /// Runs every tool the agent execs inside the agent image the lab
    /// runs (`config/images/build.sh --profile debug`, linked from the
    /// target directory), when it is built and the test runs as root.
    #[tokio::test]
    async fn the_agent_image_runs_the_tools_the_agent_execs() {
        let layout = crate::binaries::project_bin_dir().join("images/agent/oci");
        if !nix::unistd::geteuid().is_root() || !layout.exists() {
            return;
        }
        let tmp = std::env::temp_dir().join(format!("sy-rootfs-{}", std::process::id()));
        let image = super::super::unpack::unpack(&layout, &tmp.join("cache")).expect("unpack");
        for (tool, arg) in [
            ("/usr/sbin/iptables-nft-save", "--version"),
            ("/usr/sbin/iptables-legacy-save", "--version"),
            ("/usr/sbin/ip6tables-nft-restore", "--version"),
            ("/usr/sbin/iptables", "--version"),
            ("/usr/sbin/nft", "--version"),
            ("/usr/sbin/ipset", "--version"),
            ("/usr/sbin/ip", "-V"),
            ("/usr/local/bin/switchyard-agent", "--help"),
        ] {
            let placement = Placement {
                root: Some(RootFs {
                    lower: image.rootfs.clone(),
                    dir: tmp.join("c"),
                    workdir: "/".into(),
                }),
                ..Default::default()
            };
            let mut cmd = tokio::process::Command::new(tool);
            cmd.arg(arg).env_clear();
            place(&mut cmd, &placement).expect("placement");
            let out = cmd.output().await;
            assert!(
                out.as_ref().is_ok_and(|o| o.status.success()),
                "{tool}: {out:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn mount_points_are_made_outermost_first_inside_the_root() {
        assert_eq!(
            ancestors(Path::new("/var/run/secrets/kubernetes.io/serviceaccount")),
            [
                "/var",
                "/var/run",
                "/var/run/secrets",
                "/var/run/secrets/kubernetes.io"
            ]
            .map(PathBuf::from)
        );
        assert!(ancestors(Path::new("/sys")).is_empty());
        assert_eq!(
            inside(Path::new("/c/merged"), Path::new("/run/xtables.lock")),
            PathBuf::from("/c/merged/run/xtables.lock")
        );
    }
}
