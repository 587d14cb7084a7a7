//! The embedded BPF object: loading it (optionally onto pinned maps),
//! loading its programs, attaching them as cgroup links, and checking that
//! pinned maps match this build's layout.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapType},
    programs::{
        CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, ProgramFd, links::FdLink,
    },
};
use switchyard_abi::{
    AffinityKey, AffinityValue, Backend, COUNTER_MAX, Config, EventsRate, RevNat, SockKey,
    SockRevNat, SvcKey, SvcValue, capacity, map_names,
};

use crate::{Capacities, DatapathError, Hook};

/// The compiled `bpf/datapath.c`.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath.o"));

/// Directory of the test builds of the object (`datapath_variant.o`,
/// `datapath_unverifiable.o`, see build.rs), for integration tests.
#[doc(hidden)]
pub const TEST_OBJECT_DIR: &str = env!("OUT_DIR");

/// Expected shape of one pinned map.
pub(crate) struct MapSpec {
    pub(crate) name: &'static str,
    pub(crate) map_type: MapType,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
}

pub(crate) fn map_specs(c: &Capacities) -> [MapSpec; 11] {
    fn spec<K, V>(name: &'static str, map_type: MapType, max_entries: u32) -> MapSpec {
        MapSpec {
            name,
            map_type,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
        }
    }
    [
        spec::<SvcKey, SvcValue>(map_names::SERVICES, MapType::Hash, c.services),
        spec::<u32, Backend>(map_names::BACKENDS, MapType::Hash, c.backends),
        spec::<u16, RevNat>(map_names::REV_NAT, MapType::Hash, c.rev_nat),
        spec::<SockKey, SockRevNat>(map_names::SOCK_REV_NAT, MapType::LruHash, c.sock_rev_nat),
        spec::<AffinityKey, AffinityValue>(map_names::AFFINITY, MapType::LruHash, c.affinity),
        spec::<u32, u64>(map_names::COUNTERS, MapType::PerCpuArray, COUNTER_MAX),
        spec::<u32, u32>(
            map_names::HEALTH_SOCKS,
            MapType::SockHash,
            capacity::HEALTH_SOCKS,
        ),
        // A ring buffer has no key or value: the kernel reports 0 for both.
        spec::<(), ()>(map_names::EVENTS, MapType::RingBuf, c.events_ring),
        spec::<u32, u64>(map_names::EVENTS_LOST, MapType::PerCpuArray, 1),
        spec::<u32, Config>(map_names::CONFIG, MapType::Array, 1),
        spec::<u32, EventsRate>(map_names::EVENTS_RATE, MapType::PerCpuArray, 1),
    ]
}

/// Fails if a pinned map differs from what this build expects.
pub(crate) fn check_pinned_map(path: &Path, spec: &MapSpec) -> Result<(), DatapathError> {
    let data = MapData::from_pin(path).map_err(|e| DatapathError::map(spec.name, e))?;
    let info = data.info().map_err(|e| DatapathError::map(spec.name, e))?;
    let map_type = info
        .map_type()
        .map_err(|e| DatapathError::map(spec.name, e))?;
    let got = (
        map_type,
        info.key_size(),
        info.value_size(),
        info.max_entries(),
    );
    let want = (
        spec.map_type,
        spec.key_size,
        spec.value_size,
        spec.max_entries,
    );
    if got == want {
        Ok(())
    } else {
        Err(DatapathError::IncompatiblePin {
            path: path.to_owned(),
            detail: format!(
                "pinned (type, key, value, max_entries) = {got:?}, this build wants {want:?}"
            ),
        })
    }
}

fn classify_load(e: aya::EbpfError) -> DatapathError {
    if let aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) = &e
        && io_error.kind() == std::io::ErrorKind::PermissionDenied
    {
        return DatapathError::MissingCapability(format!("creating maps: {io_error}"));
    }
    DatapathError::Load(Box::new(e))
}

pub(crate) fn classify_prog(
    program: &'static str,
    e: aya::programs::ProgramError,
) -> DatapathError {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.kind() == std::io::ErrorKind::PermissionDenied
                && verifier_log.to_string().trim().is_empty()
            {
                DatapathError::MissingCapability(format!("loading {program}: {io_error}"))
            } else {
                DatapathError::VerifierRejected {
                    program,
                    source: io_error,
                    log: verifier_log.to_string(),
                }
            }
        }
        other => DatapathError::Program {
            program,
            source: Box::new(other),
        },
    }
}

/// A loader for the embedded object with the given capacities; `pins`
/// gives each map its pin path (reused when it exists). With
/// `resolve_kfuncs` the conntrack kfunc calls of the ingress program are
/// resolved against the running kernel first (see [`crate::kfunc`]).
pub(crate) fn load_object(
    object: &[u8],
    capacities: &Capacities,
    pins: Option<&Path>,
    resolve_kfuncs: bool,
) -> Result<aya::Ebpf, DatapathError> {
    let specs = map_specs(capacities);
    let pin_paths: Vec<(&'static str, PathBuf)> = match pins {
        Some(dir) => specs.iter().map(|s| (s.name, dir.join(s.name))).collect(),
        None => Vec::new(),
    };
    let mut loader = EbpfLoader::new();
    // The object needs no CO-RE relocations: skip parsing vmlinux BTF.
    loader.btf(None);
    for s in &specs {
        loader.map_max_entries(s.name, s.max_entries);
    }
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    if !resolve_kfuncs {
        return loader.load(object).map_err(classify_load);
    }
    let (patched, missing) = crate::kfunc::resolve(object, crate::kfunc::kernel_ids()?)?;
    if !missing.is_empty() {
        return Err(DatapathError::MissingKfuncs { missing });
    }
    loader.load(patched.bytes()).map_err(classify_load)
}

/// A loaded program of one hook: the address hooks are cgroup sock_addr
/// programs, `sock_release` a cgroup sock program.
pub(crate) enum HookProgram<'a> {
    SockAddr(&'a mut CgroupSockAddr),
    Sock(&'a mut CgroupSock),
}

impl HookProgram<'_> {
    /// The loaded program's descriptor.
    pub(crate) fn fd(&self) -> Result<&ProgramFd, ProgramError> {
        match self {
            HookProgram::SockAddr(p) => p.fd(),
            HookProgram::Sock(p) => p.fd(),
        }
    }
}

/// Attempts of one program load. The verifier gives up with `EAGAIN` when
/// a handled signal arrives while it runs (the agent handles SIGTERM and
/// SIGINT); libbpf retries such a load the same way.
const LOAD_ATTEMPTS: usize = 5;

/// Whether a program load failed only because the verifier was interrupted.
pub(crate) fn interrupted(e: &ProgramError) -> bool {
    matches!(e, ProgramError::LoadError { io_error, .. } if io_error.raw_os_error() == Some(libc::EAGAIN))
}

/// Runs `load` until it succeeds, fails otherwise than `is_interrupted`,
/// or [`LOAD_ATTEMPTS`] attempts were made.
pub(crate) fn retry_interrupted<E>(
    mut load: impl FnMut() -> Result<(), E>,
    is_interrupted: impl Fn(&E) -> bool,
) -> Result<(), E> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(e) if attempt < LOAD_ATTEMPTS && is_interrupted(&e) => {
                tracing::debug!(attempt, "program load interrupted by a signal; retrying");
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Loads the program `program` of `ebpf` as a `P` with `load` (its
/// type's own load), retrying a load a signal interrupted.
pub(crate) fn load_named<'a, P>(
    ebpf: &'a mut aya::Ebpf,
    program: &'static str,
    mut load: impl FnMut(&mut P) -> Result<(), ProgramError>,
) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog: &mut P = ebpf
        .program_mut(program)
        .ok_or(DatapathError::MissingObject(program))?
        .try_into()
        .map_err(|e| DatapathError::Program {
            program,
            source: Box::new(e),
        })?;
    retry_interrupted(|| load(&mut *prog), interrupted).map_err(|e| classify_prog(program, e))?;
    Ok(prog)
}

/// Loads `hook`'s program in `ebpf` and returns it.
pub(crate) fn load_program(
    ebpf: &mut aya::Ebpf,
    hook: Hook,
) -> Result<HookProgram<'_>, DatapathError> {
    let program = hook.program();
    let perr = |e| DatapathError::Program {
        program,
        source: Box::new(e),
    };
    let prog = ebpf
        .program_mut(program)
        .ok_or(DatapathError::MissingObject(program))?;
    if hook == Hook::SockRelease {
        let prog: &mut CgroupSock = prog.try_into().map_err(perr)?;
        retry_interrupted(|| prog.load(), interrupted).map_err(|e| classify_prog(program, e))?;
        Ok(HookProgram::Sock(prog))
    } else {
        let prog: &mut CgroupSockAddr = prog.try_into().map_err(perr)?;
        retry_interrupted(|| prog.load(), interrupted).map_err(|e| classify_prog(program, e))?;
        Ok(HookProgram::SockAddr(prog))
    }
}

/// Attaches `prog` to `cgroup` as a bpf_link and returns it. Cgroup links
/// take no flags (the kernel rejects any) and always behave as
/// `BPF_F_ALLOW_MULTI`: other programs on the cgroup or its ancestors keep
/// running; aya's `Single` mode is the one that passes flags 0.
pub(crate) fn attach_link(
    prog: &mut HookProgram<'_>,
    hook: Hook,
    cgroup: &File,
) -> Result<FdLink, DatapathError> {
    let program = hook.program();
    let perr = |e| DatapathError::Program {
        program,
        source: Box::new(e),
    };
    let lerr = |e| DatapathError::Link {
        program,
        source: Box::new(e),
    };
    match prog {
        HookProgram::SockAddr(p) => {
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(perr)?;
            FdLink::try_from(p.take_link(id).map_err(perr)?).map_err(lerr)
        }
        HookProgram::Sock(p) => {
            let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(perr)?;
            FdLink::try_from(p.take_link(id).map_err(perr)?).map_err(lerr)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::prog_tag_and_maps;

    fn small() -> Capacities {
        Capacities {
            services: 8,
            backends: 8,
            rev_nat: 8,
            sock_rev_nat: 8,
            affinity: 8,
            events_ring: 4096,
        }
    }

    fn tag_and_maps(object: &[u8], hook: Hook) -> ([u8; 8], Vec<u32>) {
        let mut ebpf = load_object(object, &small(), None, false).unwrap();
        let prog = load_program(&mut ebpf, hook).unwrap();
        prog_tag_and_maps(prog.fd().unwrap().as_fd()).unwrap()
    }

    /// Privileged: loads the real programs (no attach, nothing pinned).
    #[test]
    fn program_identity_is_tag_plus_maps() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: loading BPF programs needs root");
            return;
        }
        let (tag1, maps1) = tag_and_maps(OBJECT, Hook::Connect4);
        let (tag2, maps2) = tag_and_maps(OBJECT, Hook::Connect4);
        // Same instructions, different (fresh) maps.
        assert_eq!(tag1, tag2);
        assert_ne!(maps1, maps2);
        // connect4 uses the service, backend, sock rev-NAT, affinity,
        // counter, event ring, events-lost, config and events-rate maps;
        // recvmsg4 the sock rev-NAT, rev-NAT and counters.
        assert_eq!(maps1.len(), 9, "{maps1:?}");
        assert_eq!(tag_and_maps(OBJECT, Hook::Recvmsg4).1.len(), 3);
        let variant = std::fs::read(format!("{TEST_OBJECT_DIR}/datapath_variant.o")).unwrap();
        // Copy into 8-byte aligned storage, as aya expects.
        let mut words = vec![0u64; variant.len().div_ceil(8)];
        // SAFETY: `words` has at least `variant.len()` bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), variant.len())
        };
        bytes.copy_from_slice(&variant);
        let (variant_tag, _) = tag_and_maps(bytes, Hook::Connect4);
        assert_ne!(tag1, variant_tag);
    }

    /// `retry_interrupted` over loads that fail with `errnos` in turn and
    /// then succeed: its result and how many loads it made.
    fn retried(errnos: &[i32]) -> (Result<(), std::io::Error>, usize) {
        let mut calls = 0;
        let r = retry_interrupted(
            || {
                calls += 1;
                errnos
                    .get(calls - 1)
                    .map_or(Ok(()), |e| Err(std::io::Error::from_raw_os_error(*e)))
            },
            |e| e.raw_os_error() == Some(libc::EAGAIN),
        );
        (r, calls)
    }

    #[test]
    fn an_interrupted_load_is_retried_and_other_errors_are_not() {
        // Interrupted four times, then loaded.
        let (r, calls) = retried(&[libc::EAGAIN; LOAD_ATTEMPTS - 1]);
        assert!(r.is_ok());
        assert_eq!(calls, LOAD_ATTEMPTS);
        // Interrupted every time: the last EAGAIN is returned.
        let (r, calls) = retried(&[libc::EAGAIN; LOAD_ATTEMPTS + 1]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(calls, LOAD_ATTEMPTS);
        // A rejection is final.
        let (r, calls) = retried(&[libc::EACCES, libc::EAGAIN]);
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EACCES));
        assert_eq!(calls, 1);
    }
}
