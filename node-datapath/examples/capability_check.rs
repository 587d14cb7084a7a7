//! Runs the agent's privileged datapath operations once, for measuring
//! which capabilities each one needs (`node-datapath/hack/measure-caps.sh`
//! runs it under reduced capability sets): the capability probe (load and
//! attach every socket hook on a temporary cgroup, load the ingress
//! program), then a full start (maps and programs pinned in bpffs, cgroup
//! links, the ingress program attached to the interface given), a restart
//! adopting those pins, and off.
//!
//! `capability_check <cgroup dir> <bpffs dir> [interface]`; prints one
//! `step: ok` or `step: FAILED <error>` line per operation.

use std::path::PathBuf;

use switchyard_node_datapath::{Datapath, DatapathConfig, capabilities};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(cgroup), Some(bpffs)) = (args.next(), args.next()) else {
        eprintln!("usage: capability_check <cgroup dir> <bpffs dir> [interface]");
        std::process::exit(2);
    };
    let (cgroup, bpffs) = (PathBuf::from(cgroup), PathBuf::from(bpffs));
    let probed = capabilities::probe_at(Some(&cgroup));
    for h in &probed.hooks {
        report(&format!("probe {}", h.hook), h.error.as_deref());
    }
    if let Some(i) = &probed.ingress {
        report("probe ingress load", i.error.as_deref());
    }
    let config = DatapathConfig {
        bpffs_dir: bpffs.clone(),
        cgroup,
        capacities: Default::default(),
        ingress_interfaces: args.collect(),
        tc_attach: Default::default(),
    };
    // The second start is an agent restart: it adopts the pins and links.
    for step in [
        "start (load, pin, attach)",
        "restart (adopt pins and links)",
    ] {
        match Datapath::start(&config) {
            Ok(dp) => {
                report(step, None);
                println!("  links: {:?}", dp.report().links);
            }
            Err(e) => report(step, Some(&e.to_string())),
        }
    }
    let off = switchyard_node_datapath::off(&bpffs)
        .err()
        .map(|e| e.to_string());
    report("off (unpin, detach)", off.as_deref());
}

fn report(step: &str, error: Option<&str>) {
    match error {
        None => println!("{step}: ok"),
        Some(e) => println!("{step}: FAILED {e}"),
    }
}
