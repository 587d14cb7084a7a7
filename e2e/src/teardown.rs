//! Removing a cluster by name: what `Cluster` teardown, `switchyard-lab
//! down` and the stale-run cleanup share. Works from the names alone (state
//! directory, cgroup, namespace prefix), so it also cleans up after a run
//! that was killed.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::sys::{self, Cgroup};

/// The lab's cgroup subtree (`<cgroup2>/switchyard-lab`).
pub fn lab_cgroup_root() -> Result<PathBuf> {
    Ok(sys::cgroup2_root()?.join("switchyard-lab"))
}

/// The pid recorded as the owner (supervisor) of a cluster state directory.
pub fn owner(state: &Path) -> Option<i32> {
    std::fs::read_to_string(state.join("owner"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Removes everything a cluster named `name` may have created: its
/// processes and cgroup, its network namespaces, the mount points it
/// created (when no other lab cluster is alive) and its state directory.
pub fn teardown_by_name(name: &str, state: &Path) {
    if let Ok(root) = lab_cgroup_root() {
        Cgroup::destroy(&root.join(name));
        let _ = std::fs::remove_dir(&root);
    }
    if let Some(bpf) = sys::bpffs_root() {
        let lab = bpf.join("switchyard-lab");
        let _ = std::fs::remove_dir_all(lab.join(name));
        let _ = std::fs::remove_dir(&lab);
    }
    let prefix = format!("{name}-");
    let mut namespaces = sys::netns_list(&prefix);
    // Pods first, then nodes, then the control plane.
    namespaces.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for ns in namespaces {
        sys::netns_del(&ns);
    }
    let mountpoints = std::fs::read_to_string(state.join("mountpoints")).unwrap_or_default();
    let other_alive = state
        .parent()
        .and_then(|p| std::fs::read_dir(p).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p != state && owner(p).is_some_and(sys::pid_alive));
    match other_alive {
        // Another cluster's pods may use these mount points: hand them over.
        Some(other) if !mountpoints.is_empty() => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(other.join("mountpoints"))
            {
                let _ = std::io::Write::write_all(&mut f, mountpoints.as_bytes());
            }
        }
        Some(_) => {}
        None => {
            for line in mountpoints.lines().filter(|l| !l.is_empty()) {
                remove_created(Path::new(line));
            }
        }
    }
    let _ = std::fs::remove_dir_all(state);
    if let Some(parent) = state.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// Removes a mount point the lab created: empty files and directories
/// holding nothing else, bottom up; anything someone put there stays.
fn remove_created(p: &Path) {
    if p.is_dir() {
        if let Ok(dir) = std::fs::read_dir(p) {
            for e in dir.flatten() {
                remove_created(&e.path());
            }
        }
        let _ = std::fs::remove_dir(p);
    } else if std::fs::metadata(p).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(p);
    }
}

/// Tears down every cluster under `root` whose owning process is gone.
pub fn cleanup_stale(root: &Path) {
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    for e in dir.flatten() {
        let state = e.path();
        if owner(&state).is_some_and(sys::pid_alive) {
            continue;
        }
        if let Some(name) = state.file_name().and_then(|n| n.to_str()) {
            tracing::info!(%name, "removing leftovers of a dead lab cluster");
            teardown_by_name(name, &state);
        }
    }
}

/// With `SWITCHYARD_E2E_KEEP_LOGS=<dir>` set, copies the cluster's pod logs
/// (`<state>/pods/<uid>/<container>.log`) to `<dir>/<name>/` before teardown
/// removes them, to read what the operator, agents and load generators did
/// after a test ended.
pub fn keep_logs(name: &str, state: &Path) {
    let Some(dir) = std::env::var_os("SWITCHYARD_E2E_KEEP_LOGS") else {
        return;
    };
    let to = Path::new(&dir).join(name);
    let Ok(pods) = std::fs::read_dir(state.join("pods")) else {
        return;
    };
    for pod in pods.flatten() {
        let Ok(files) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        let target = to.join(pod.file_name());
        if std::fs::create_dir_all(&target).is_err() {
            continue;
        }
        for f in files.flatten().filter(|f| f.path().is_file()) {
            let _ = std::fs::copy(f.path(), target.join(f.file_name()));
        }
    }
}
