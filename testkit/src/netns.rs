//! Network namespaces for the privileged tests and benchmarks: a guard that
//! deletes its namespace when dropped (also when a test panics), and running
//! a closure inside a namespace without moving the caller's thread.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace `name`; its loopback stays down.
    pub fn add(name: impl Into<String>) -> io::Result<Self> {
        let name = name.into();
        let out = Command::new("ip").args(["netns", "add", &name]).output()?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(io::Error::other(format!(
                "ip netns add {name}: {}",
                stderr.trim()
            )));
        }
        Ok(Self { name })
    }

    /// Its name (`ip -n NAME`, `ip netns exec NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        path_of(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The bind mount of the namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `f` on a new thread inside the network namespace `name` and returns
/// its result; the caller's thread stays where it is.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let file = std::fs::File::open(path_of(name))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd; it affects this thread only.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other(format!("the closure run in {name} panicked")))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_lives_as_long_as_its_guard_and_runs_closures() {
        if crate::skip_unless_root("network namespaces") {
            return;
        }
        let name = format!("sy-tk-{}", std::process::id());
        let ns = NetNs::add(&name).unwrap();
        assert!(ns.path().exists());
        let inode =
            |p: PathBuf| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        let theirs = in_netns(ns.name(), || inode("/proc/thread-self/ns/net".into())).unwrap();
        assert_ne!(
            theirs.unwrap(),
            inode("/proc/thread-self/ns/net".into()).unwrap()
        );
        drop(ns);
        assert!(!path_of(&name).exists());
        assert!(in_netns(&name, || ()).is_err());
    }
}
