//! The agent's memory for its flow ring (`switchyard-bench flows`, a fresh
//! child process, as `switchyard-bench agent` measures the sync path): the
//! agent's [`FlowHub`] keeping `--flows-max` flows, filled through
//! [`FlowHub::ingest`] (the agent reader's call) with records shaped as
//! the kernel writes them, for the Services of the scenario and ~110 client
//! pods whose cgroups are found the way the agent finds them (directories
//! named after the pod UID under the hub's cgroup root). The baseline is
//! the same process with everything but the flows built: the Service
//! index, the pod names, an empty hub. Then the ring is filled once (every
//! flow kept) and once more (every flow replaced, the steady state).

use std::{collections::HashMap, os::unix::fs::MetadataExt as _, path::PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_agent::flows::{PodName, ServiceIndex, reader::FlowHub, reader::clock_now};
use switchyard_lb::{Options, desired_state};
use switchyard_node_datapath::abi::{Counter, FlowEvent, IPPROTO_TCP, event_hook, event_verdict};

use crate::{
    BenchError,
    ebpf::{node_context, objects, self_status_kib},
    model::{ENDPOINTS, Scenario, TCP_PORT, TCP_TARGET_PORT, endpoint, mix64, vip},
};

/// Client pods on the node (the kubelet's default `maxPods`).
pub const PODS: usize = 110;
/// Records per `ingest` call (a reader's wake-up under load drains a few
/// dozen at a time).
const BATCH: usize = 64;
/// One flow in this many is a refusal (no endpoints).
pub const DROP_EVERY: u64 = 20;

/// What [`measure`] found; memory in KiB and bytes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowMemory {
    /// The hub's capacity (`--flows-max`).
    pub flows_max: usize,
    /// Services the flows are named after.
    pub services: usize,
    /// Flows the hub kept after the first fill.
    pub kept: usize,
    /// Flows it evicted during the second fill.
    pub evicted: u64,
    /// `VmRSS` with everything but the flows, KiB.
    pub rss_base_kib: u64,
    /// `VmRSS` with the ring full, KiB.
    pub rss_full_kib: u64,
    /// `VmRSS` after every flow was replaced once, KiB.
    pub rss_steady_kib: u64,
    /// Bytes malloc had handed out (`mallinfo2()`'s `uordblks + hblkhd`)
    /// at the base.
    pub heap_base_bytes: u64,
    /// The same with the ring full.
    pub heap_full_bytes: u64,
    /// The same after every flow was replaced once.
    pub heap_steady_bytes: u64,
}

/// `VmRSS` of this process, KiB.
fn rss_kib() -> u64 {
    self_status_kib("VmRSS")
}

/// Bytes malloc has handed out, from its arenas and as separate mappings
/// (large blocks such as a full ring's buffer), after returning free pages
/// to the kernel (so RSS counts what is in use).
fn heap_bytes() -> u64 {
    // SAFETY: malloc_trim and mallinfo2 take no pointers; they walk glibc's
    // own arenas under its locks.
    let info = unsafe {
        libc::malloc_trim(0);
        libc::mallinfo2()
    };
    (info.uordblks + info.hblkhd) as u64
}

/// Pod cgroup directories (a stand-in cgroup tree in a temporary
/// directory, laid out as the kubelet's cgroupfs driver names them);
/// removed on drop.
struct PodTree {
    root: PathBuf,
    /// Per pod: its cgroup id (the directory's inode) and name.
    pods: Vec<(u64, String, PodName)>,
}

impl PodTree {
    fn new(pods: usize) -> Result<Self, BenchError> {
        let root = std::env::temp_dir().join(format!("syb{}-flow-pods", std::process::id()));
        let mut tree = Self {
            root,
            pods: Vec::new(),
        };
        for p in 0..pods {
            let uid = pod_uid(p);
            let dir = tree.root.join(format!("kubepods/burstable/pod{uid}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| BenchError::io(format!("mkdir {}", dir.display()), e))?;
            let ino = std::fs::metadata(&dir)
                .map_err(|e| BenchError::io(format!("stat {}", dir.display()), e))?
                .ino();
            let name = PodName {
                namespace: format!("team-{}", p % 7).into(),
                name: format!(
                    "app-{}-7d9f8b6c5d-{:05x}",
                    p % 13,
                    mix64(p as u64) & 0xfffff
                )
                .into(),
            };
            tree.pods.push((ino, uid, name));
        }
        Ok(tree)
    }
}

impl Drop for PodTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A UID-shaped string for pod `p`.
fn pod_uid(p: usize) -> String {
    let h = mix64(p as u64);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        mix64(h) & 0xffff_ffff_ffff
    )
}

/// Record `j`: a connect of pod `j`'s client to one of the scenario's
/// Services, forwarded to one of its endpoints (refused one time in
/// [`DROP_EVERY`]), as `sy_emit` writes it.
pub fn record(sc: &Scenario, cgroups: &[u64], j: u64, ktime_ns: u64) -> [u8; 48] {
    let i = (mix64(j) % sc.services as u64) as usize;
    let k = (j % ENDPOINTS as u64) as usize;
    let pod = (mix64(j ^ 0x5eed) % cgroups.len().max(1) as u64) as usize;
    let dropped = j % DROP_EVERY == DROP_EVERY - 1;
    let (backend, backend_port) = if dropped {
        (0, 0)
    } else {
        (u32::from(endpoint(i, k)).to_be(), TCP_TARGET_PORT.to_be())
    };
    FlowEvent {
        ktime_ns,
        cgroup_id: cgroups.get(pod).copied().unwrap_or_default(),
        sock_cookie: 0x1000 + j,
        netns_cookie: 0x4000 + pod as u64,
        frontend_addr: u32::from(vip(i)).to_be(),
        backend_addr: backend,
        frontend_port: TCP_PORT.to_be(),
        backend_port,
        proto: IPPROTO_TCP,
        verdict: if dropped {
            event_verdict::DROPPED
        } else {
            event_verdict::FORWARDED
        },
        hook: event_hook::CONNECT4,
        drop_reason: if dropped {
            Counter::DropNoBackend as u8
        } else {
            0
        },
    }
    .to_bytes()
}

/// The hub of an agent that synced `sc` and knows [`PODS`] pods.
fn hub(sc: &Scenario, tree: &PodTree, flows_max: usize) -> FlowHub {
    let (services, slices) = objects(sc);
    let index = {
        let d = desired_state(&services, &slices, &node_context(), &Options::default());
        ServiceIndex::of(&d.state)
    };
    drop((services, slices));
    let hub = FlowHub::new(flows_max, true);
    hub.set_services(index);
    let names: HashMap<String, PodName> = tree
        .pods
        .iter()
        .map(|(_, uid, name)| (uid.clone(), name.clone()))
        .collect();
    hub.pods(|p| {
        p.set_root(tree.root.clone());
        p.set_pods(names);
    });
    hub
}

/// Ingests `count` records starting at record `from`, in reader-sized
/// batches.
fn fill(hub: &FlowHub, sc: &Scenario, cgroups: &[u64], from: u64, count: usize) {
    let clock = clock_now();
    let mut j = from;
    let end = from + count as u64;
    while j < end {
        let n = (end - j).min(BATCH as u64);
        let batch: Vec<[u8; 48]> = (j..j + n)
            .map(|x| record(sc, cgroups, x, clock.monotonic_ns.saturating_sub(end - x)))
            .collect();
        hub.ingest(batch.iter().map(|r| r.as_slice()), &clock_now());
        j += n;
    }
}

/// Fills a hub of `flows_max` flows twice; see the module doc.
pub fn measure(sc: &Scenario, flows_max: usize) -> Result<FlowMemory, BenchError> {
    let tree = PodTree::new(PODS)?;
    let cgroups: Vec<u64> = tree.pods.iter().map(|(ino, _, _)| *ino).collect();
    let hub = hub(sc, &tree, flows_max);
    // Every pod's cgroup resolved once, as in an agent that has run a while.
    hub.pods(|p| {
        for id in &cgroups {
            p.source(*id);
        }
    });
    let (heap_base_bytes, rss_base_kib) = (heap_bytes(), rss_kib());
    fill(&hub, sc, &cgroups, 0, flows_max);
    let kept = hub.status().0;
    let (heap_full_bytes, rss_full_kib) = (heap_bytes(), rss_kib());
    fill(&hub, sc, &cgroups, flows_max as u64, flows_max);
    let (heap_steady_bytes, rss_steady_kib) = (heap_bytes(), rss_kib());
    check_named(&hub)?;
    Ok(FlowMemory {
        flows_max,
        services: sc.services,
        kept,
        evicted: hub.status().2.evicted,
        rss_base_kib,
        rss_full_kib,
        rss_steady_kib,
        heap_base_bytes,
        heap_full_bytes,
        heap_steady_bytes,
    })
}

/// The flows kept name their Service and pod (else they would be smaller
/// than an agent's).
fn check_named(hub: &FlowHub) -> Result<(), BenchError> {
    let (flows, _) = hub.last_and_follow(0, |_| true);
    let unnamed = flows
        .iter()
        .filter(|f| f.service.is_none() || f.source.is_none())
        .count();
    if flows.is_empty() || unnamed > 0 {
        return Err(BenchError::BadOutput {
            what: "flow memory".into(),
            detail: format!(
                "{unnamed} of {} flows without a Service or pod",
                flows.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_agent::flows::{Verdict, decode, pods::pod_uid as agent_pod_uid};

    #[test]
    fn records_decode_as_the_agent_decodes_the_kernels() {
        let sc = Scenario::new(100).unwrap();
        let clock = clock_now();
        let index = ServiceIndex::default();
        let fwd = decode(&record(&sc, &[7, 8], 3, 1), &clock, &index).unwrap();
        assert_eq!(fwd.verdict, Verdict::Forwarded);
        let i = (mix64(3) % 100) as usize;
        assert_eq!(fwd.frontend.ip(), &vip(i));
        assert_eq!(fwd.frontend.port(), TCP_PORT);
        let backend = fwd.backend.unwrap();
        assert_eq!(
            (*backend.ip(), backend.port()),
            (endpoint(i, 3), TCP_TARGET_PORT)
        );
        assert!([7, 8].contains(&fwd.cgroup_id));
        let refused = decode(&record(&sc, &[7], DROP_EVERY - 1, 1), &clock, &index).unwrap();
        assert_eq!(refused.verdict, Verdict::Dropped(Counter::DropNoBackend));
        assert_eq!(refused.backend, None);
    }

    #[test]
    fn pod_directories_carry_a_uid_the_agent_recognises() {
        for p in [0, 1, 109] {
            let uid = pod_uid(p);
            let dir = PathBuf::from(format!("/sys/fs/cgroup/kubepods/burstable/pod{uid}"));
            assert_eq!(agent_pod_uid(&dir), Some(uid));
        }
    }
}
