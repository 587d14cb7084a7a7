//! Loading, attaching, adopting and removing the socket load balancer.
//!
//! Everything the kernel needs to keep serving lives under one bpffs
//! directory (default [`DEFAULT_BPFFS_DIR`]):
//!
//! ```text
//! <dir>/maps/<map name>   every map of lb.h (pinned by the loader)
//! <dir>/links/<hook>      one bpf_link per hook on the configured cgroup
//! ```
//!
//! The links keep the programs alive, so the datapath keeps serving after
//! the agent exits. [`Datapath::start`] is idempotent and is also the
//! restart path: it reuses pinned maps (their contents survive), loads the
//! embedded programs, and for each pinned link compares the attached
//! program's tag (and the maps it uses) with the freshly loaded one: equal
//! → the link is **kept** untouched; different → the program is
//! **replaced atomically** with
//! `BPF_LINK_UPDATE` (no instant without a program). A pinned link that is
//! defunct or on another cgroup is replaced by a new link (attached before
//! the old one is detached). [`off`] detaches every link and removes every
//! pin it knows, leaving no trace. Links carry no attach flags, so other
//! programs on the cgroup or its ancestors keep running beside ours.

use std::{fs::File, os::fd::AsFd, path::Path, time::Instant};

use tracing::info;

pub use crate::config::{
    Capacities, DEFAULT_BPFFS_DIR, DatapathConfig, Hook, LinkAction, OffReport, StartReport,
    TcAttach,
};
pub use crate::object::TEST_OBJECT_DIR;
use crate::{
    DatapathError, capabilities,
    config::{links_dir, maps_dir},
    links::{LinkTarget, StartGuard, adopt_link, detach_and_unpin, pin_new_link},
    maps::PinnedLbMaps,
    metrics::DatapathStats,
    object::{
        HookProgram, OBJECT, attach_link, check_pinned_map, load_object, load_program, map_specs,
    },
    sys,
};

/// A running (attached, pinned) datapath. Dropping it changes nothing in the
/// kernel: the pins keep serving. Use [`off`] to remove it.
#[derive(Debug)]
pub struct Datapath {
    config: DatapathConfig,
    report: StartReport,
}

/// Fails unless `path` (or its nearest existing ancestor) is on a bpffs.
fn check_bpffs(path: &Path) -> Result<(), DatapathError> {
    let mut p = path;
    while !p.exists() {
        p = p
            .parent()
            .ok_or_else(|| DatapathError::BpffsNotMounted(path.to_owned()))?;
    }
    let magic = sys::fs_magic(p).map_err(|e| DatapathError::io("statfs", p, e))?;
    if magic == sys::BPF_FS_MAGIC {
        Ok(())
    } else {
        Err(DatapathError::BpffsNotMounted(path.to_owned()))
    }
}

/// Fails unless `path` is an existing cgroup v2 directory.
pub(crate) fn check_cgroup2(path: &Path) -> Result<(), DatapathError> {
    if !path.is_dir() {
        return Err(DatapathError::CgroupMissing(path.to_owned()));
    }
    let magic = sys::fs_magic(path).map_err(|e| DatapathError::io("statfs", path, e))?;
    if magic == sys::CGROUP2_SUPER_MAGIC {
        Ok(())
    } else {
        Err(DatapathError::NotCgroup2(path.to_owned()))
    }
}

/// Makes `hook`'s pinned link on the cgroup run `prog` (see the module doc).
fn ensure_link(
    prog: &mut HookProgram<'_>,
    hook: Hook,
    pin: &Path,
    cgroup: &File,
    cgroup_id: u64,
    guard: &mut StartGuard,
) -> Result<LinkAction, DatapathError> {
    let stale = pin.exists();
    if stale {
        let target = LinkTarget::Cgroup {
            id: cgroup_id,
            attach_type: hook.attach_type(),
        };
        let new_fd = prog.fd().map_err(|e| DatapathError::Program {
            program: hook.program(),
            source: Box::new(e),
        })?;
        if let Some(action) = adopt_link(pin, target, new_fd.as_fd())? {
            return Ok(action);
        }
    }
    let link = attach_link(prog, hook, cgroup)?;
    pin_new_link(link, pin, stale, guard)
}

/// The maps already pinned under `maps` (checked against this build's
/// layout; the load reuses them with their contents); the others are
/// recorded in `guard` as this start's to remove on failure.
fn check_map_pins(
    config: &DatapathConfig,
    maps: &Path,
    guard: &mut StartGuard,
) -> Result<Vec<&'static str>, DatapathError> {
    let mut adopted = Vec::new();
    for spec in map_specs(&config.capacities) {
        let pin = maps.join(spec.name);
        if pin.exists() {
            check_pinned_map(&pin, &spec)?;
            adopted.push(spec.name);
        } else {
            guard.new_map_pins.push(pin);
        }
    }
    Ok(adopted)
}

fn mkdir_all(p: &Path) -> Result<(), DatapathError> {
    std::fs::create_dir_all(p).map_err(|e| DatapathError::io("mkdir", p, e))
}

impl Datapath {
    /// Loads (or adopts) and attaches the datapath; see the module doc.
    /// On error, whatever this call created is removed again; adopted state
    /// is left as it was.
    pub fn start(config: &DatapathConfig) -> Result<Self, DatapathError> {
        Self::start_object(config, OBJECT)
    }

    /// [`Datapath::start`] with another compiled object (tests use the
    /// builds in [`TEST_OBJECT_DIR`] to exercise program replacement and
    /// verifier errors). `object` must be 8-byte aligned.
    #[doc(hidden)]
    pub fn start_object(config: &DatapathConfig, object: &[u8]) -> Result<Self, DatapathError> {
        let t0 = Instant::now();
        capabilities::require_bpf_capabilities()?;
        check_bpffs(&config.bpffs_dir)?;
        check_cgroup2(&config.cgroup)?;
        let maps = maps_dir(&config.bpffs_dir);
        let links = links_dir(&config.bpffs_dir);
        let mut guard = StartGuard {
            new_map_pins: Vec::new(),
            new_link_pins: Vec::new(),
            new_tc_filters: Vec::new(),
            new_dirs: [&config.bpffs_dir, &maps, &links]
                .into_iter()
                .filter(|d| !d.exists())
                .cloned()
                .collect(),
            armed: true,
        };
        mkdir_all(&maps)?;
        mkdir_all(&links)?;
        let adopted_maps = check_map_pins(config, &maps, &mut guard)?;
        let resolve_kfuncs = !config.ingress_interfaces.is_empty();
        let mut ebpf = load_object(object, &config.capacities, Some(&maps), resolve_kfuncs)?;

        let cgroup = File::open(&config.cgroup)
            .map_err(|e| DatapathError::io("open cgroup", &config.cgroup, e))?;
        let cgroup_id = sys::cgroup_id(&config.cgroup)
            .map_err(|e| DatapathError::io("stat cgroup", &config.cgroup, e))?;
        let mut actions = Vec::new();
        for hook in Hook::ALL {
            let mut prog = load_program(&mut ebpf, hook)?;
            let pin = links.join(hook.name());
            let action = ensure_link(&mut prog, hook, &pin, &cgroup, cgroup_id, &mut guard)?;
            actions.push((hook, action));
        }
        let ingress = crate::ingress::ensure(&mut ebpf, config, &links, &mut guard)?;
        let north_south = !config.ingress_interfaces.is_empty();
        let health = crate::health::ensure(&mut ebpf, north_south, &links, &mut guard)?;
        guard.armed = false;
        let report = StartReport {
            adopted_maps,
            links: actions,
            ingress,
            health,
            elapsed: t0.elapsed(),
        };
        info!(
            bpffs = %config.bpffs_dir.display(),
            cgroup = %config.cgroup.display(),
            ?report,
            "datapath started"
        );
        Ok(Self {
            config: config.clone(),
            report,
        })
    }

    /// What start did.
    pub fn report(&self) -> &StartReport {
        &self.report
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &DatapathConfig {
        &self.config
    }

    /// The health-port steering map ([`crate::health`]).
    pub fn health_sockets(&self) -> Result<crate::HealthSockets, DatapathError> {
        crate::HealthSockets::open(&self.config.bpffs_dir)
    }

    /// The load-balancer maps, for the sync loop ([`switchyard_lb::maps::LbMaps`]).
    pub fn lb_maps(&self) -> Result<PinnedLbMaps, DatapathError> {
        PinnedLbMaps::open(&self.config.bpffs_dir)
    }

    /// The kernel's run count and run time of `hook`'s program (counted
    /// only while a [`crate::RunTimeStats`] is held).
    pub fn run_time(&self, hook: Hook) -> Result<crate::ProgramRunTime, DatapathError> {
        crate::runtime::program_run_time(&self.config.bpffs_dir, hook)
    }

    /// The kernel's run count and run time of the ingress program on
    /// `interface` (counted only while a [`crate::RunTimeStats`] is held).
    pub fn ingress_run_time(
        &self,
        interface: &str,
    ) -> Result<crate::ProgramRunTime, DatapathError> {
        crate::runtime::ingress_run_time(&self.config.bpffs_dir, interface)
    }

    /// Counters (summed over CPUs) and map occupancy.
    pub fn stats(&self) -> Result<DatapathStats, DatapathError> {
        crate::maps::read_stats(&self.config.bpffs_dir)
    }
}

/// Mode Off: detaches every link and removes every pin of the datapath
/// under `bpffs_dir`, then the directories. Idempotent; entries that are not
/// ours are left and reported.
pub fn off(bpffs_dir: &Path) -> Result<OffReport, DatapathError> {
    let mut report = OffReport::default();
    if !bpffs_dir.exists() {
        return Ok(report);
    }
    check_bpffs(bpffs_dir)?;
    let links = links_dir(bpffs_dir);
    for hook in Hook::ALL {
        if detach_and_unpin(&links.join(hook.name())) {
            report.links_removed.push(hook.name().to_owned());
        }
    }
    let pins = crate::ingress::pinned(&links).into_iter().map(|(_, p)| p);
    for pin in pins.chain([crate::health::pin_path(&links)]) {
        if detach_and_unpin(&pin) {
            report.links_removed.push(pin.display().to_string());
        }
    }
    for interface in crate::clsact::interfaces() {
        if crate::clsact::detach(&interface) {
            report
                .links_removed
                .push(format!("clsact filter on {interface}"));
        }
    }
    let maps = maps_dir(bpffs_dir);
    for spec in map_specs(&Capacities::default()) {
        let pin = maps.join(spec.name);
        match std::fs::remove_file(&pin) {
            Ok(()) => report.maps_removed.push(spec.name.to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DatapathError::io("unpin", pin, e)),
        }
    }
    for dir in [links, maps, bpffs_dir.to_owned()] {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                let entries =
                    std::fs::read_dir(&dir).map_err(|e| DatapathError::io("readdir", &dir, e))?;
                report.foreign_left.extend(
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.path())
                        .filter(|p| !(p.ends_with("links") || p.ends_with("maps"))),
                );
            }
            Err(e) => return Err(DatapathError::io("rmdir", dir, e)),
        }
    }
    info!(bpffs = %bpffs_dir.display(), ?report, "datapath off");
    Ok(report)
}
