//! The agent's own sync path, measured with its real parts: the agent's
//! stores (`switchyard_agent::store`) fed with objects projected on
//! arrival (as `agent.rs` does), `switchyard_agent::sync::Syncer`
//! adopting the pinned maps, one full sync,
//! then single-endpoint changes handed to the sync one at a time, then
//! syncs with nothing to do; finally (untimed) every changed Service is put
//! back, so the maps serve the scenario again. Runs in a fresh child
//! process, so its resident set is what an agent holds for N Services.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use switchyard_agent::store::{self, Event, Key, Services, Slices, Store};
use switchyard_agent::sync::{Syncer, Touched};
use switchyard_lb::LbMaps;

use crate::{
    BenchError,
    ebpf::{peak_rss_kib, service_object, slice_name, slice_object},
    model::{ENDPOINTS, NAMESPACE, Scenario, endpoint, mix64},
};

/// What [`agent_path`] measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentResult {
    /// Services.
    pub services: usize,
    /// The first sync (relist: every Service recomputed and written), s.
    pub full_sync_s: f64,
    /// Endpoint changes measured.
    pub changes: usize,
    /// One endpoint change, from the change handed to `Syncer::sync` to
    /// the map write returning: median and p99, µs.
    pub change_sync_p50_us: f64,
    pub change_sync_p99_us: f64,
    /// The same plus the agent's store work (projection, store write), µs.
    pub change_event_p50_us: f64,
    pub change_event_p99_us: f64,
    /// Map operations per change (median).
    pub change_ops: f64,
    /// A sync with nothing changed (a spurious wake-up), median µs.
    pub noop_sync_p50_us: f64,
    /// Resident set before anything was built (binary, libraries), KiB.
    pub rss_base_kib: u64,
    /// Resident set with the stores filled, before any sync, KiB.
    pub rss_stores_kib: u64,
    /// Resident set after the syncs (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set (`VmHWM`), KiB.
    pub rss_peak_kib: u64,
}

fn rss_kib() -> u64 {
    crate::ebpf::self_status_kib("VmRSS")
}

/// The `q`-th percentile (nearest rank) of `v`; 0 for no samples.
fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    switchyard_testkit::stats::percentile(v, q / 100.0).unwrap_or(0.0)
}

/// Fills a store as a watch's initial list does, one projected object at
/// a time (the object never outlives its event).
fn fill<T>(store: &Store<T>, n: usize, make: impl Fn(usize) -> (Key, T)) {
    store.apply(Event::Init);
    for i in 0..n {
        let (k, v) = make(i);
        store.apply(Event::InitApply(k, v));
    }
    store.apply(Event::InitDone);
}

fn sync(
    syncer: &mut Syncer,
    services: &Services,
    slices: &Slices,
    touched: Vec<Touched>,
) -> Result<(), BenchError> {
    syncer
        .sync(services, slices, touched)
        .map_err(|e| BenchError::Arg(format!("agent sync failed: {e}")))
}

/// Runs the agent's sync path for `sc` on the maps pinned under
/// `bpffs_dir`, with `changes` single-endpoint changes.
pub fn agent_path(
    bpffs_dir: &std::path::Path,
    sc: &Scenario,
    changes: usize,
) -> Result<AgentResult, BenchError> {
    let rss_base_kib = rss_kib();
    // Start from empty maps (the `sync` child filled them).
    empty_maps(bpffs_dir)?;
    let (services, slices) = (Services::default(), Slices::default());
    fill(&services, sc.services, |i| {
        store::service_entry(&service_object(sc, i))
    });
    fill(&slices, sc.services, |i| {
        store::slice_entry(&slice_object(sc, i))
    });
    let rss_stores_kib = rss_kib();
    let node = crate::ebpf::node_context();
    let mut syncer = Syncer::new(node);
    syncer
        .adopt(bpffs_dir)
        .map_err(|e| BenchError::Arg(format!("adopt: {e}")))?;
    let t = Instant::now();
    sync(&mut syncer, &services, &slices, vec![Touched::Relisted])?;
    let full_sync_s = t.elapsed().as_secs_f64();

    let Changes {
        mut sync_us,
        mut event_us,
        mut ops,
    } = endpoint_changes(sc, &mut syncer, &services, &slices, changes)?;
    let mut noop_us = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        sync(&mut syncer, &services, &slices, Vec::new())?;
        noop_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    restore_endpoints(sc, &mut syncer, &services, &slices)?;
    let med = |v: &mut Vec<f64>| pct(v, 50.0);
    let p99 = |v: &mut Vec<f64>| pct(v, 99.0);
    Ok(AgentResult {
        services: sc.services,
        full_sync_s,
        changes,
        change_sync_p50_us: med(&mut sync_us),
        change_sync_p99_us: p99(&mut sync_us),
        change_event_p50_us: med(&mut event_us),
        change_event_p99_us: p99(&mut event_us),
        change_ops: med(&mut ops),
        noop_sync_p50_us: med(&mut noop_us),
        rss_base_kib,
        rss_stores_kib,
        rss_kib: rss_kib(),
        rss_peak_kib: peak_rss_kib(),
    })
}

/// Removes every entry of the maps pinned under `bpffs_dir`.
fn empty_maps(bpffs_dir: &std::path::Path) -> Result<(), BenchError> {
    let mut maps = switchyard_node_datapath::PinnedLbMaps::open(bpffs_dir)?;
    let ops = switchyard_lb::diff::diff_snapshots(&maps.snapshot()?, &Default::default());
    maps.apply_all(&ops)
        .map_err(|(i, e)| BenchError::Arg(format!("emptying maps, op {i}: {e}")))
}

/// Per endpoint change: the sync alone and with the store work (µs), and
/// the map operations it took.
#[derive(Debug, Default)]
struct Changes {
    sync_us: Vec<f64>,
    event_us: Vec<f64>,
    ops: Vec<f64>,
}

/// `changes` single-endpoint changes, each handed to the sync alone.
fn endpoint_changes(
    sc: &Scenario,
    syncer: &mut Syncer,
    services: &Services,
    slices: &Slices,
    changes: usize,
) -> Result<Changes, BenchError> {
    let mut out = Changes::default();
    for j in 0..changes {
        // Spread over the Services; each change moves endpoint 0 of one
        // Service to a fresh address, or back.
        let i = (mix64(j as u64) % sc.services as u64) as usize;
        let Some(cur) = slices.get(NAMESPACE, &slice_name(i)) else {
            return Err(BenchError::Arg(format!("slice {} missing", slice_name(i))));
        };
        // The object as the API server would send it after the change.
        let mut slice = slice_object(sc, i);
        let moved = endpoint(i, ENDPOINTS);
        let addr = if cur.endpoints.first().map(|e| e.ip) == Some(moved) {
            endpoint(i, 0)
        } else {
            moved
        };
        slice.endpoints[0].addresses = vec![addr.to_string()];
        let t0 = Instant::now();
        let (k, v) = store::slice_entry(&slice);
        drop(slice);
        let applied = slices.apply(Event::Apply(k, v));
        let touched: Vec<Touched> = Touched::of_slice(&applied).into_iter().collect();
        let t1 = Instant::now();
        sync(syncer, services, slices, touched)?;
        let t2 = Instant::now();
        out.event_us.push((t2 - t0).as_secs_f64() * 1e6);
        out.sync_us.push((t2 - t1).as_secs_f64() * 1e6);
        out.ops.push(syncer.last_ops as f64);
    }
    Ok(out)
}

/// Untimed: every Service back at its scenario endpoints, through the
/// same path, so that the traffic measurements on these maps reach the
/// servers (a moved endpoint 0 points at an address nobody serves).
fn restore_endpoints(
    sc: &Scenario,
    syncer: &mut Syncer,
    services: &Services,
    slices: &Slices,
) -> Result<(), BenchError> {
    for i in 0..sc.services {
        let moved = endpoint(i, ENDPOINTS);
        let Some(cur) = slices.get(NAMESPACE, &slice_name(i)) else {
            continue;
        };
        if cur.endpoints.first().map(|e| e.ip) == Some(moved) {
            let (k, v) = store::slice_entry(&slice_object(sc, i));
            let applied = slices.apply(Event::Apply(k, v));
            sync(
                syncer,
                services,
                slices,
                Touched::of_slice(&applied).into_iter().collect(),
            )?;
        }
    }
    Ok(())
}
