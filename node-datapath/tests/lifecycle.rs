//! Privileged lifecycle tests: start/adopt/replace/off of the pinned
//! datapath, error reporting, the capability probe and the map seam, on
//! this kernel (see `common`). Run as root:
//! `cargo test -p switchyard-node-datapath --test lifecycle`.

#![allow(clippy::unwrap_used)] // test code (helpers outside #[test] fns)

mod common;

use common::{
    Lab, Svc, VIP, err_total, every_link, ok_count, ok_total, serve_vip_on_backend_1, started,
    wait_counter,
};
use switchyard_abi::{Counter, IPPROTO_TCP, SvcKey};
use switchyard_lb::maps::{LbMaps, MapOp};
use switchyard_node_datapath::{Datapath, Hook, LinkAction};

#[test]
fn restart_adopts_pins_without_a_failed_request() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(1, 8080);
    lab.serve(2, 8080);
    let config = lab.config();
    let dp = started(Datapath::start(&config));
    let ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(1)
        .backends(&[
            (1, Lab::backend_addr(1), 8080),
            (2, Lab::backend_addr(2), 8080),
        ])
        .cluster_ip_ops();
    dp.lb_maps().unwrap().apply_all(&ops).unwrap();
    let snapshot = dp.lb_maps().unwrap().snapshot().unwrap();
    assert_eq!(snapshot.services.len(), 4, "{snapshot:?}");

    let client = lab.looping_client("tcp", "10.96.0.10:80");
    let c0 = wait_counter(&dp, Counter::ConnectTranslated, 0, 100);
    // The agent goes away: nothing of it remains in this process.
    drop(dp);
    let c1 = {
        let stats = switchyard_node_datapath::read_stats(&config.bpffs_dir).unwrap();
        let v = stats.get(Counter::ConnectTranslated);
        assert!(v >= c0);
        v
    };
    let dp = started(Datapath::start(&config));
    let r = dp.report();
    assert_eq!(r.adopted_maps.len(), 11, "{r:?}");
    assert!(r.links.iter().all(|(_, a)| *a == LinkAction::Kept), "{r:?}");
    assert_eq!(
        dp.lb_maps().unwrap().snapshot().unwrap(),
        snapshot,
        "maps lost across restart"
    );
    wait_counter(&dp, Counter::ConnectTranslated, c1, 200);
    let s = client.stop();
    assert_eq!(err_total(&s), 0, "a request failed across the restart: {s}");
    assert!(ok_total(&s) >= 300, "{s}");
}

#[test]
fn off_restores_the_node_and_is_idempotent() {
    require_privileged!();
    let mut lab = Lab::new(1);
    lab.serve(1, 8080);
    let dp = lab.start();
    // Start is idempotent too.
    let again = lab.start();
    assert!(every_link(&again, LinkAction::Kept));
    serve_vip_on_backend_1(&dp);
    let cg = lab.cgroup.to_str().unwrap().to_owned();
    let shown = common::run("bpftool", &["cgroup", "show", &cg]);
    for hook in [
        "connect4",
        "sendmsg4",
        "recvmsg4",
        "getpeername4",
        "sock_release",
    ] {
        assert!(shown.contains(hook), "{hook} not attached: {shown}");
    }
    assert_eq!(ok_count(&lab.client("tcp", "10.96.0.10:80", 1), "b1"), 1);
    drop((dp, again));

    let report = switchyard_node_datapath::off(&lab.bpffs_dir).unwrap();
    assert_eq!(report.links_removed.len(), 5, "{report:?}");
    assert_eq!(report.maps_removed.len(), 11, "{report:?}");
    assert!(report.foreign_left.is_empty(), "{report:?}");
    let shown = common::run("bpftool", &["cgroup", "show", &cg]);
    assert!(
        shown.trim().is_empty(),
        "programs left on the cgroup: {shown}"
    );
    assert!(!lab.bpffs_dir.exists(), "pins left");
    // The VIP is no longer translated.
    let s = lab.client("tcp", "10.96.0.10:80", 1);
    assert_eq!(s["errors"]["ENETUNREACH"], 1, "{s}");
    assert_eq!(
        switchyard_node_datapath::off(&lab.bpffs_dir).unwrap(),
        Default::default()
    );
}

#[test]
fn clear_errors_for_a_bad_environment() {
    require_privileged!();
    use switchyard_node_datapath::DatapathError as E;
    let lab = Lab::new(0);
    let mut c = lab.config();
    c.cgroup = lab.cgroup.join("does-not-exist");
    assert!(matches!(Datapath::start(&c), Err(E::CgroupMissing(_))));
    c.cgroup = std::env::temp_dir();
    assert!(matches!(Datapath::start(&c), Err(E::NotCgroup2(_))));
    let mut c = lab.config();
    c.bpffs_dir = std::env::temp_dir().join(format!("{}-not-bpffs", lab.id));
    assert!(matches!(Datapath::start(&c), Err(E::BpffsNotMounted(_))));

    // Pins from a build with other capacities are refused, not reused.
    let dp = lab.start();
    drop(dp);
    let mut bigger = lab.config();
    bigger.capacities.services *= 2;
    let err = Datapath::start(&bigger).unwrap_err();
    assert!(matches!(err, E::IncompatiblePin { .. }), "{err}");
    // The failed start left the running datapath alone.
    let again = lab.start();
    assert!(every_link(&again, LinkAction::Kept));
}

#[test]
fn capability_probe_finds_every_hook_attachable_and_the_ingress_program_loadable() {
    require_privileged!();
    let caps = switchyard_node_datapath::capabilities::probe();
    assert!(!caps.kernel_release.is_empty());
    assert!(caps.bpf_privileges);
    assert_eq!(caps.hooks.len(), 5, "{caps:?}");
    assert!(caps.datapath_ready(), "{caps:#?}");
    // This kernel has the conntrack kfuncs: the ingress program loads.
    let ingress = caps
        .ingress
        .as_ref()
        .expect("ingress probed with privileges");
    assert!(ingress.attachable, "{ingress:?}");
    serde_json::to_string(&caps).unwrap();
}

#[test]
fn changed_programs_are_replaced_atomically_while_a_client_loops() {
    require_privileged!();
    let mut lab = Lab::new(2);
    lab.serve(1, 8080);
    lab.serve(2, 8080);
    let config = lab.config();
    // An "older agent" with other programs is running.
    let variant = common::test_object("datapath_variant.o");
    let old = started(Datapath::start_object(
        &config,
        common::object_bytes(&variant),
    ));
    let ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(1)
        .backends(&[
            (1, Lab::backend_addr(1), 8080),
            (2, Lab::backend_addr(2), 8080),
        ])
        .cluster_ip_ops();
    old.lb_maps().unwrap().apply_all(&ops).unwrap();
    let client = lab.looping_client("tcp", "10.96.0.10:80");
    let c0 = wait_counter(&old, Counter::ConnectTranslated, 0, 100);
    let ids_before = common::run("bpftool", &["cgroup", "show", lab.cgroup.to_str().unwrap()]);
    drop(old);

    let new = started(Datapath::start(&config));
    let r = new.report();
    assert!(
        r.links.iter().all(|(_, a)| *a == LinkAction::Replaced),
        "{r:?}"
    );
    assert_eq!(r.adopted_maps.len(), 11, "{r:?}");
    let ids_after = common::run("bpftool", &["cgroup", "show", lab.cgroup.to_str().unwrap()]);
    assert_ne!(ids_before, ids_after, "program ids unchanged");
    assert_eq!(
        ids_after.matches("sy_").count(),
        Hook::ALL.len(),
        "{ids_after}"
    );
    wait_counter(&new, Counter::ConnectTranslated, c0, 200);
    let s = client.stop();
    assert_eq!(
        err_total(&s),
        0,
        "a request failed during the replacement: {s}"
    );
    // A second start with the same object keeps everything.
    let again = started(Datapath::start(&config));
    assert!(every_link(&again, LinkAction::Kept));
}

#[test]
fn a_new_cgroup_path_moves_the_links() {
    require_privileged!();
    let lab = Lab::new(0);
    let first = lab.cgroup.join("first");
    std::fs::create_dir(&first).unwrap();
    struct Rmdir(std::path::PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _first = Rmdir(first.clone());
    let mut c = lab.config();
    c.cgroup = first.clone();
    started(Datapath::start(&c));
    let r = lab.start();
    assert!(every_link(&r, LinkAction::Reattached), "{:?}", r.report());
    let on_first = common::run("bpftool", &["cgroup", "show", first.to_str().unwrap()]);
    assert!(
        on_first.trim().is_empty(),
        "links left on the old cgroup: {on_first}"
    );
    let on_new = common::run("bpftool", &["cgroup", "show", lab.cgroup.to_str().unwrap()]);
    assert_eq!(on_new.matches("sy_").count(), Hook::ALL.len(), "{on_new}");
}

#[test]
fn lb_maps_round_trip_and_occupancy() {
    require_privileged!();
    let lab = Lab::new(0);
    let dp = lab.start();
    let mut maps = dp.lb_maps().unwrap();
    let ops = Svc::new(VIP, 80, IPPROTO_TCP)
        .rev_nat(5)
        .backends(&[
            (1, Lab::backend_addr(1), 8080),
            (2, Lab::backend_addr(2), 8080),
        ])
        .cluster_ip_ops();
    maps.apply_all(&ops).unwrap();
    let snap = maps.snapshot().unwrap();
    assert_eq!(
        (snap.services.len(), snap.backends.len(), snap.rev_nat.len()),
        (4, 2, 1)
    );
    let master = snap.services[&SvcKey::new(VIP, 80, IPPROTO_TCP, 0, 0)];
    assert_eq!((master.count, master.rev_nat_index), (2, 5));
    assert_eq!(snap.backends[&2].ip(), Lab::backend_addr(2));

    let stats = dp.stats().unwrap();
    let entries = |name: &str| stats.maps.iter().find(|m| m.map == name).unwrap().entries;
    assert_eq!(entries("sy_svc_v4"), 4);
    assert_eq!(entries("sy_backend_v4"), 2);
    assert_eq!(entries("sy_revnat_v4"), 1);
    assert_eq!(
        stats
            .maps
            .iter()
            .find(|m| m.map == "sy_svc_v4")
            .unwrap()
            .capacity,
        1024
    );
    let text = switchyard_node_datapath::metrics::render(&stats);
    assert!(
        text.contains("switchyard_datapath_map_entries{map=\"sy_svc_v4\"} 4"),
        "{text}"
    );

    // Deleting absent keys is not an error; deleting everything empties.
    let mut deletes: Vec<MapOp> = snap
        .services
        .keys()
        .map(|k| MapOp::DeleteService(*k))
        .collect();
    deletes.extend([
        MapOp::DeleteRevNat(5),
        MapOp::DeleteBackend(1),
        MapOp::DeleteBackend(2),
    ]);
    maps.apply_all(&deletes).unwrap();
    maps.apply_all(&deletes).unwrap();
    assert_eq!(maps.snapshot().unwrap(), Default::default());
}

#[test]
fn verifier_rejection_is_reported_with_its_log_and_leaves_nothing() {
    require_privileged!();
    let lab = Lab::new(0);
    let broken = common::test_object("datapath_unverifiable.o");
    let err = Datapath::start_object(&lab.config(), common::object_bytes(&broken)).unwrap_err();
    match &err {
        switchyard_node_datapath::DatapathError::VerifierRejected { program, log, .. } => {
            assert_eq!(*program, "sy_connect4");
            assert!(log.contains("invalid mem access"), "verifier log: {log}");
            // The message (what a status condition carries) keeps the reason.
            let msg = err.to_string();
            assert!(msg.contains("invalid mem access"), "{msg}");
            assert!(msg.lines().count() <= 10, "{msg}");
        }
        other => panic!("expected VerifierRejected, got {other}"),
    }
    // The failed fresh start removed the maps and directories it created.
    assert!(!lab.bpffs_dir.exists(), "pins left after a failed start");
    let shown = common::run("bpftool", &["cgroup", "show", lab.cgroup.to_str().unwrap()]);
    assert!(shown.trim().is_empty(), "{shown}");
}
