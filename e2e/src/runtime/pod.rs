//! One pod's life on a node: network namespace and address, volumes,
//! processes (one per container, each in the pod's netns and cgroup with a
//! private mount and UTS namespace, confined by its `securityContext`: see
//! [`super::security`]), truthful status, restarts per `restartPolicy`, and
//! teardown on deletion.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::images::{ImageProgram, argv, expand};
use super::oci;
use super::rootfs::RootFs;
use super::security::confinement;
use super::status::{ContainerReport, ContainerState, pod_status};
use super::unpack::{Unpacked, cache_dir, unpack};
use super::volumes::{PodContext, environment, materialize, mounts};
use super::{NodeShared, PodRecord, PodUpdate};
use crate::control_plane::Process;
use crate::error::{Error, Result};
use crate::network;
use crate::sys::{self, Cgroup, Placement};

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn terminating(u: &PodUpdate) -> bool {
    u.gone || u.pod.metadata.deletion_timestamp.is_some()
}

/// The pod's resources on the node, released by [`Sandbox::release`].
#[derive(Debug)]
pub(super) struct Sandbox {
    key: String,
    pub(super) netns: PathBuf,
    own_netns: Option<String>,
    pub(super) ip: Ipv4Addr,
    cgroup: Cgroup,
    dir: PathBuf,
    pub(super) started: String,
}

impl Sandbox {
    fn release(&self, shared: &NodeShared) {
        Cgroup::destroy(&self.cgroup.path);
        if let Some(ns) = &self.own_netns {
            sys::netns_del(ns);
            if let Ok(mut ips) = shared.ips.lock() {
                ips.release(self.ip);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Ok(mut r) = shared.registry.lock() {
            r.remove(&self.key);
        }
    }
}

/// A container's process and what is needed to start it again.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) report: ContainerReport,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    placement: Placement,
    log: PathBuf,
    pub(super) tcp_ports: Vec<u16>,
    pub(super) process: Option<Process>,
}

/// Runs the pod until it is deleted.
pub async fn run(shared: Arc<NodeShared>, mut rx: watch::Receiver<PodUpdate>) {
    let first = rx.borrow().clone();
    let pod = first.pod.clone();
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    // Like the kubelet, retry what may be transient (a ConfigMap not yet
    // published, a token request failing); an unknown image is final.
    let mut attempt = 0u32;
    while !terminating(&rx.borrow()) {
        match start(&shared, &pod).await {
            Ok((sandbox, containers)) => {
                super::supervise::supervise(&shared, &pod, &sandbox, containers, &mut rx).await;
                sandbox.release(&shared);
                break;
            }
            Err((sandbox, reason, message)) => {
                tracing::warn!(pod = %name, %reason, %message, attempt, "pod cannot start");
                if let Some(s) = sandbox {
                    s.release(&shared);
                }
                report_failure(&shared, &pod, &reason, &message).await;
                if reason == UNKNOWN_IMAGE || reason == UNSUPPORTED_SECURITY_CONTEXT {
                    wait_for_deletion(&mut rx).await;
                    break;
                }
                attempt += 1;
                let delay = Duration::from_millis(500 * u64::from(attempt.min(10)));
                let _ = tokio::time::timeout(delay, wait_for_deletion(&mut rx)).await;
            }
        }
    }
    let last = rx.borrow().clone();
    if !last.gone {
        finish_deletion(&shared, &last.pod).await;
    }
    tracing::info!(pod = %name, node = %shared.node.name, "pod stopped");
}

async fn wait_for_deletion(rx: &mut watch::Receiver<PodUpdate>) {
    while !terminating(&rx.borrow()) {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The container waiting reason for an image that cannot be unpacked or
/// run (as the kubelet's for an image it cannot pull).
pub const IMAGE_ERROR: &str = "ErrImagePull";

/// The image unpacked into the runtime's rootfs cache.
async fn unpack_image(layout: PathBuf) -> Result<Unpacked> {
    tokio::task::spawn_blocking(move || unpack(&layout, &cache_dir()))
        .await
        .map_err(|e| Error::Config(format!("unpacking {e}")))?
}

/// The container with the image's user as `runAsUser`/`runAsGroup` where
/// neither it nor the pod sets one (the kubelet's order).
fn with_image_user(
    pod: Option<&k8s_openapi::api::core::v1::PodSecurityContext>,
    c: &Container,
    image: Option<&Unpacked>,
) -> Result<Container> {
    let mut c = c.clone();
    let Some(u) = image else { return Ok(c) };
    let user = oci::image_user(&u.config).map_err(Error::Config)?;
    let ctx = c.security_context.get_or_insert_with(Default::default);
    if let Some((uid, gid)) = user
        && ctx.run_as_user.is_none()
        && pod.and_then(|p| p.run_as_user).is_none()
    {
        ctx.run_as_user = Some(i64::from(uid));
        if ctx.run_as_group.is_none() && pod.and_then(|p| p.run_as_group).is_none() {
            ctx.run_as_group = Some(i64::from(gid));
        }
    }
    Ok(c)
}

/// The program, arguments and root of a container running `image`.
fn image_argv(
    image: &Unpacked,
    c: &Container,
    env: &[(String, String)],
    pod_dir: &std::path::Path,
) -> Result<(PathBuf, Vec<String>, RootFs)> {
    let expand_all = |v: Option<&Vec<String>>| -> Vec<String> {
        v.map(|v| v.iter().map(|a| expand(a, env)).collect())
            .unwrap_or_default()
    };
    let bad = |why: String| Error::Config(format!("image {}: {why}", image.digest));
    let spec = oci::process(
        &image.config,
        &expand_all(c.command.as_ref()),
        &expand_all(c.args.as_ref()),
    )
    .map_err(bad)?;
    let (first, rest) = spec
        .argv
        .split_first()
        .ok_or_else(|| bad("no program".into()))?;
    let in_image = |p: &str| image.rootfs.join(p.trim_start_matches('/')).exists();
    let program = oci::resolve_program(first, env, in_image)
        .ok_or_else(|| bad(format!("{first} is not in the image")))?;
    let root = RootFs {
        lower: image.rootfs.clone(),
        dir: pod_dir.join(format!("rootfs-{}", c.name)),
        workdir: spec.workdir,
    };
    Ok((PathBuf::from(program), rest.to_vec(), root))
}

/// The container waiting reason for an image the runtime does not know.
pub const UNKNOWN_IMAGE: &str = "UnknownImage";

/// The container waiting reason for a `securityContext` the runtime cannot
/// apply (as the kubelet's `CreateContainerConfigError`).
pub const UNSUPPORTED_SECURITY_CONTEXT: &str = "CreateContainerConfigError";

type StartError = (Option<Sandbox>, String, String);

async fn start(shared: &Arc<NodeShared>, pod: &Pod) -> Result<(Sandbox, Vec<Running>), StartError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let fail = |s: Option<Sandbox>, reason: &str, e: Error| (s, reason.to_string(), e.to_string());
    // Resolve every image and security context first: an unknown image or
    // a context the runtime cannot apply is a clear pod error.
    let mut programs = Vec::new();
    for c in &spec.containers {
        let image = c.image.clone().unwrap_or_default();
        let Some(p) = shared.images.resolve(&image) else {
            return Err((
                None,
                UNKNOWN_IMAGE.into(),
                format!("image {image:?} is not known to the switchyard lab runtime"),
            ));
        };
        let image = match p {
            ImageProgram::Image(layout) => match unpack_image(layout.clone()).await {
                Ok(u) => Some(u),
                Err(e) => return Err((None, IMAGE_ERROR.into(), e.to_string())),
            },
            _ => None,
        };
        let c = match with_image_user(spec.security_context.as_ref(), c, image.as_ref()) {
            Ok(c) => c,
            Err(e) => return Err((None, IMAGE_ERROR.into(), e.to_string())),
        };
        match confinement(spec.security_context.as_ref(), &c) {
            Ok(conf) => programs.push((p.clone(), conf, image)),
            Err(why) => {
                let message = format!("container {}: securityContext: {why}", c.name);
                return Err((None, UNSUPPORTED_SECURITY_CONTEXT.into(), message));
            }
        }
    }
    let sandbox = sandbox(shared, pod, spec.host_network.unwrap_or(false))
        .map_err(|e| fail(None, "SandboxFailed", e))?;
    let ctx = PodContext {
        client: &shared.client,
        pod,
        dir: &sandbox.dir,
        pod_ip: sandbox.ip.to_string(),
        host_ip: shared.node.ip.to_string(),
        view: &shared.view,
    };
    let volumes = match materialize(&ctx).await {
        Ok(v) => v,
        Err(e) => return Err(fail(Some(sandbox), "VolumeFailed", e)),
    };
    let hostname = if spec.host_network.unwrap_or(false) {
        shared.node.name.clone()
    } else {
        pod.metadata.name.clone().unwrap_or_default()
    };
    let mut containers = Vec::new();
    for (c, (program, conf, image)) in spec.containers.iter().zip(programs) {
        let placement = Placement {
            netns: Some(sandbox.netns.clone()),
            hostname: Some(hostname.clone()),
            confinement: Some(conf),
            ..Default::default()
        };
        let run = (&program, image.as_ref());
        match container(shared, &ctx, &sandbox, c, run, &volumes, placement).await {
            Ok(r) => containers.push(r),
            Err(e) => return Err(fail(Some(sandbox), "CreateContainerError", e)),
        }
    }
    for r in &mut containers {
        if let Err(e) = spawn(r) {
            return Err(fail(Some(sandbox), "StartError", e));
        }
    }
    Ok((sandbox, containers))
}

fn sandbox(shared: &Arc<NodeShared>, pod: &Pod, host_network: bool) -> Result<Sandbox> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    let dir = shared.pods_dir.join(&uid);
    std::fs::create_dir_all(&dir).map_err(Error::io("creating pod dir", &dir))?;
    let cgroup = shared.cgroup.child(&format!("pod-{uid}"))?;
    let (netns, own_netns, ip) = if host_network {
        (sys::netns_path(&shared.node.netns), None, shared.node.ip)
    } else {
        let ip = shared
            .ips
            .lock()
            .ok()
            .and_then(|mut a| a.allocate())
            .ok_or_else(|| {
                Error::Config(format!("node {} has no free pod IP", shared.node.name))
            })?;
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
        let ns_name = format!("{}-n{}p{seq}", shared.cluster, shared.node.index);
        let veth = format!("vp{seq}");
        if let Err(e) = network::create_pod(&shared.node, &ns_name, &veth, ip) {
            sys::netns_del(&ns_name);
            if let Ok(mut a) = shared.ips.lock() {
                a.release(ip);
            }
            return Err(e);
        }
        (sys::netns_path(&ns_name), Some(ns_name), ip)
    };
    let record = PodRecord {
        namespace: ns,
        name,
        node: shared.node.name.clone(),
        netns: netns.clone(),
        cgroup: cgroup.path.clone(),
        ip,
    };
    // For `switchyard-lab exec --pod` from another process.
    let _ = std::fs::write(
        shared
            .pods_dir
            .join(format!("{}_{}", record.namespace, record.name)),
        format!("{}\n{}\n", netns.display(), cgroup.path.display()),
    );
    if let Ok(mut r) = shared.registry.lock() {
        r.insert(key.clone(), record);
    }
    Ok(Sandbox {
        key,
        netns,
        own_netns,
        ip,
        cgroup,
        dir,
        started: now(),
    })
}

#[allow(clippy::too_many_arguments)]
async fn container(
    shared: &Arc<NodeShared>,
    ctx: &PodContext<'_>,
    sandbox: &Sandbox,
    c: &Container,
    (program, image): (&ImageProgram, Option<&Unpacked>),
    volumes: &std::collections::BTreeMap<String, PathBuf>,
    mut placement: Placement,
) -> Result<Running> {
    let image_env = image.map(|u| oci::image_env(&u.config)).unwrap_or_default();
    let env = environment(ctx, c, &image_env).await?;
    let binds = mounts(c, volumes)?;
    if image.is_none() {
        for (src, dst) in &binds {
            ensure_mountpoint(shared, src, dst)?;
        }
    }
    let ports: Vec<(String, u16)> = c
        .ports
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter_map(|p| {
            Some((
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                u16::try_from(p.container_port).ok()?,
            ))
        })
        .collect();
    let tcp_ports = ports
        .iter()
        .filter(|(p, _)| p == "TCP")
        .map(|(_, n)| *n)
        .collect();
    let (program, args) = match image {
        Some(u) => {
            let (program, args, root) = image_argv(u, c, &env, &sandbox.dir)?;
            placement.root = Some(root);
            (program, args)
        }
        None => argv(
            program,
            &shared.bins.k8s("kube-proxy"),
            &shared.bins.testserver,
            c.command.as_deref().unwrap_or(&[]),
            c.args.as_deref().unwrap_or(&[]),
            &ports,
            &env,
        ),
    };
    let cgroup = Cgroup::create(sandbox.cgroup.path.join(format!("c-{}", c.name)))?;
    placement.cgroup = Some(cgroup.path);
    placement.mounts = binds;
    Ok(Running {
        report: ContainerReport {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last: None,
            ready: false,
            restart_count: 0,
            container_id: None,
        },
        program,
        args,
        env,
        placement,
        log: sandbox.dir.join(format!("{}.log", c.name)),
        tcp_ports,
        process: None,
    })
}

/// Creates a missing mount target on the host (an empty directory, or an
/// empty file for a file source), remembering it for teardown.
fn ensure_mountpoint(
    shared: &NodeShared,
    src: &std::path::Path,
    dst: &std::path::Path,
) -> Result<()> {
    if dst.exists() {
        return Ok(());
    }
    let mut first_missing = dst.to_path_buf();
    while let Some(parent) = first_missing.parent() {
        if parent.exists() {
            break;
        }
        first_missing = parent.to_path_buf();
    }
    if src.is_dir() {
        std::fs::create_dir_all(dst).map_err(Error::io("creating mount point", dst))?;
    } else {
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(Error::io("creating mount point", p))?;
        }
        std::fs::write(dst, b"").map_err(Error::io("creating mount point", dst))?;
    }
    // Recorded at once, so even a killed run's leftovers can be removed.
    let list = shared.mountpoints_file();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&list)
        .map_err(Error::io("opening", &list))?;
    std::io::Write::write_all(&mut f, format!("{}\n", first_missing.display()).as_bytes())
        .map_err(Error::io("writing", &list))?;
    Ok(())
}

pub(super) fn spawn(r: &mut Running) -> Result<()> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&r.log)
        .map_err(Error::io("opening", &r.log))?;
    let err = out.try_clone().map_err(Error::io("cloning", &r.log))?;
    // A non-root user may not be able to reach the binary's path (the
    // build directory under /root): it executes the file opened here,
    // through its own /proc/self/fd, as a runtime executes an image's file.
    let non_root = r.placement.root.is_none()
        && r.placement
            .confinement
            .as_ref()
            .is_some_and(|c| c.non_root());
    let binary = if non_root {
        Some(std::fs::File::open(&r.program).map_err(Error::io("opening", &r.program))?)
    } else {
        None
    };
    let mut cmd = match &binary {
        Some(f) => {
            let mut cmd = tokio::process::Command::new(format!("/proc/self/fd/{}", f.as_raw_fd()));
            cmd.arg0(&r.program);
            cmd
        }
        None => tokio::process::Command::new(&r.program),
    };
    cmd.args(&r.args)
        .env_clear()
        .envs(r.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    sys::place(&mut cmd, &r.placement)?;
    let child = cmd.spawn().map_err(Error::io("spawning", &r.program))?;
    drop(binary);
    let pid = child.id().unwrap_or(0);
    r.report.container_id = Some(format!("switchyard-lab://{pid}"));
    r.report.state = ContainerState::Running { started_at: now() };
    r.report.ready = r.tcp_ports.is_empty();
    r.process = Some(Process {
        name: r.report.name.clone(),
        child,
        log: r.log.clone(),
    });
    Ok(())
}

pub(super) async fn patch_status(
    shared: &NodeShared,
    pod: &Pod,
    containers: &[ContainerReport],
    pod_ip: Option<String>,
    started: &str,
) {
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let body = pod_status(
        containers,
        pod_ip.as_deref(),
        &shared.node.ip.to_string(),
        started,
        &now(),
    );
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        tracing::debug!(pod = %name, error = %e, "status patch");
    }
}

async fn report_failure(shared: &NodeShared, pod: &Pod, reason: &str, message: &str) {
    let spec = pod.spec.clone().unwrap_or_default();
    let reports: Vec<ContainerReport> = spec
        .containers
        .iter()
        .map(|c| ContainerReport {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: ContainerState::Waiting {
                reason: reason.into(),
                message: message.into(),
            },
            last: None,
            ready: false,
            restart_count: 0,
            container_id: None,
        })
        .collect();
    patch_status(shared, pod, &reports, None, &now()).await;
}

/// SIGTERM to every container, SIGKILL (via the cgroup) after the grace
/// period (capped at 10 s).
pub(super) async fn stop(pod: &Pod, containers: &mut [Running]) {
    for c in containers.iter() {
        if let Some(p) = &c.process {
            sys::signal_group(p.pid(), Signal::SIGTERM);
        }
    }
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or(1)
        .clamp(0, 10) as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
    for c in containers.iter_mut() {
        if let Some(p) = &mut c.process {
            let _ = tokio::time::timeout_at(deadline, p.child.wait()).await;
            let _ = p.child.start_kill();
        }
    }
}

/// Removes the pod object for good (what the kubelet does once its
/// containers are gone), guarded by the pod's uid.
async fn finish_deletion(shared: &NodeShared, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(
        shared.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if let Err(e) = api.delete(name, &dp).await {
        tracing::debug!(pod = %name, error = %e, "final delete");
    }
}
