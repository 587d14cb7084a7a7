//! The client pod of a flow. The socket programs report the client's
//! cgroup id, which is the inode of its cgroup v2 directory under the
//! agent's cgroup root. Pod cgroups are named after the pod's UID (the
//! kubelet's cgroupfs driver: `pod<uid>`; its systemd driver:
//! `kubepods-<qos>-pod<uid with _>.slice`; the lab's runtime: `pod-<uid>`),
//! and the pods bound to this node (watched, metadata only) name the UID.
//!
//! [`pod_uid`] is pure; [`PodSources`] caches cgroup ids (an id is never
//! reused, so what one resolved to stays true) and walks the cgroup tree
//! only for an id it has not seen; [`watch`] keeps the UIDs' names.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tracing::{Instrument, info_span, warn};

use super::PodName;
use super::reader::FlowHub;

/// Cgroup ids remembered; past this the cache starts over.
const MAX_CGROUPS: usize = 8192;
/// How deep under the root pod cgroups are looked for.
const MAX_DEPTH: usize = 8;

/// A pod UID in one cgroup directory name, lowercase with dashes.
fn uid_in(component: &str) -> Option<String> {
    component
        .match_indices("pod")
        .find_map(|(i, _)| uid_at(&component[i + 3..]))
}

/// The UID `rest` starts with (after an optional dash).
fn uid_at(rest: &str) -> Option<String> {
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let uid: String = rest.get(..36)?.replace('_', "-").to_ascii_lowercase();
    let groups: Vec<&str> = uid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let hex = groups
        .iter()
        .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    (lens == [8, 4, 4, 4, 12] && hex).then_some(uid)
}

/// The UID of the pod whose cgroup `path` is or is under.
pub fn pod_uid(path: &Path) -> Option<String> {
    path.components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find_map(uid_in)
}

/// The cgroup directory under `root` whose id is `id`.
fn find_cgroup(root: &Path, id: u64) -> Option<PathBuf> {
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            return Some(dir);
        }
        if depth == MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    None
}

/// Cgroup ids to pod UIDs to pod names.
#[derive(Debug, Default)]
pub struct PodSources {
    root: Option<PathBuf>,
    cgroups: HashMap<u64, Option<String>>,
    pods: HashMap<String, PodName>,
}

impl PodSources {
    /// Looks up cgroups under `root` from now on.
    pub fn set_root(&mut self, root: PathBuf) {
        self.root = Some(root);
        self.cgroups.clear();
    }

    /// The pods of this node, all at once (a watch's (re)listing).
    pub fn set_pods(&mut self, pods: HashMap<String, PodName>) {
        self.pods = pods;
    }

    pub fn set_pod(&mut self, uid: String, name: PodName) {
        self.pods.insert(uid, name);
    }

    pub fn remove_pod(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    /// The pod of the process in cgroup `id`, if it is a pod's.
    pub fn source(&mut self, id: u64) -> Option<PodName> {
        let root = self.root.as_deref()?;
        if self.cgroups.len() >= MAX_CGROUPS {
            self.cgroups.clear();
        }
        let uid = self
            .cgroups
            .entry(id)
            .or_insert_with(|| find_cgroup(root, id).and_then(|p| pod_uid(&p)));
        uid.as_ref().and_then(|u| self.pods.get(u)).cloned()
    }
}

fn pod_entry(p: &PartialObjectMeta<Pod>) -> Option<(String, PodName)> {
    let m = &p.metadata;
    let name = PodName {
        namespace: m.namespace.as_deref()?.into(),
        name: m.name.as_deref()?.into(),
    };
    Some((m.uid.clone()?, name))
}

/// Keeps `hub`'s pod names to the pods bound to `node` (metadata only)
/// until the task is aborted.
pub async fn watch(client: Client, node: String, hub: Arc<FlowHub>) {
    let span = info_span!("pods", node = %node);
    follow(client, node, hub).instrument(span).await;
}

async fn follow(client: Client, node: String, hub: Arc<FlowHub>) {
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut listing: HashMap<String, PodName> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(p)) => listing.extend(pod_entry(&p)),
            Ok(watcher::Event::InitDone) => hub.pods(|s| s.set_pods(std::mem::take(&mut listing))),
            Ok(watcher::Event::Apply(p)) => {
                if let Some((uid, name)) = pod_entry(&p) {
                    hub.pods(|s| s.set_pod(uid, name));
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    hub.pods(|s| s.remove_pod(uid));
                }
            }
            Err(e) => warn!(error = %e, "watching this node's pods (flows name their clients)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f2c8a1e-6b7d-4e21-9c0a-1b2c3d4e5f60";

    #[test]
    fn pod_uids_in_every_drivers_cgroup_names() {
        let cases = [
            "/sys/fs/cgroup/kubepods/besteffort/pod3f2c8a1e-6b7d-4e21-9c0a-1b2c3d4e5f60/abc123",
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f2c8a1e_6b7d_4e21_9c0a_1b2c3d4e5f60.slice/cri-containerd-ab.scope",
            "/sys/fs/cgroup/switchyard-lab/c/node1/pod-3F2C8A1E-6B7D-4E21-9C0A-1B2C3D4E5F60",
            "/sys/fs/cgroup/kubepods/pod3f2c8a1e-6b7d-4e21-9c0a-1b2c3d4e5f60",
        ];
        for c in cases {
            assert_eq!(pod_uid(Path::new(c)).as_deref(), Some(UID), "{c}");
        }
        for not in [
            "/sys/fs/cgroup/system.slice/kubelet.service",
            "/sys/fs/cgroup/kubepods/besteffort",
            "/sys/fs/cgroup/kubepods/pod3f2c8a1e-6b7d-4e21-9c0a",
            "/sys/fs/cgroup/kubepods/podzzzzzzzz-6b7d-4e21-9c0a-1b2c3d4e5f60",
        ] {
            assert_eq!(pod_uid(Path::new(not)), None, "{not}");
        }
    }

    #[test]
    fn cgroup_ids_resolve_to_the_pod_of_their_directory() {
        let root = std::env::temp_dir().join(format!("sy-pods-{}", std::process::id()));
        let leaf = root.join(format!("kubepods/pod{UID}/ctr"));
        std::fs::create_dir_all(&leaf).expect("temp dirs");
        let id = std::fs::metadata(&leaf).expect("stat").ino();
        let other = std::fs::metadata(root.join("kubepods"))
            .expect("stat")
            .ino();
        let mut s = PodSources::default();
        let name = PodName {
            namespace: "app".into(),
            name: "client".into(),
        };
        s.set_pods(HashMap::from([(UID.to_owned(), name.clone())]));
        assert_eq!(s.source(id), None, "no root yet");
        s.set_root(root.clone());
        assert_eq!(s.source(id), Some(name));
        assert_eq!(s.source(other), None, "not a pod's cgroup");
        s.remove_pod(UID);
        assert_eq!(s.source(id), None, "the pod went");
        let _ = std::fs::remove_dir_all(&root);
    }
}
