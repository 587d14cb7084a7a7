//! A running pod's supervision on its node: every 250 ms (or when the pod
//! changes) each container's readiness (its declared TCP ports accept
//! connections), exits and restarts per `restartPolicy` with backoff, and
//! the status patched when it changed; the containers stopped once the pod
//! is terminating.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::NodeShared;
use super::PodUpdate;
use super::pod::{Running, Sandbox, now, patch_status, spawn, stop, terminating};
use super::status::ContainerState;
use crate::sys;

/// Supervises the pod's `containers` until it is terminating, then stops
/// them.
pub(super) async fn supervise(
    shared: &NodeShared,
    pod: &Pod,
    sandbox: &Sandbox,
    mut containers: Vec<Running>,
    rx: &mut watch::Receiver<PodUpdate>,
) {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let ip = Some(sandbox.ip.to_string());
    let reports = |cs: &[Running]| cs.iter().map(|c| c.report.clone()).collect::<Vec<_>>();
    patch_status(
        shared,
        pod,
        &reports(&containers),
        ip.clone(),
        &sandbox.started,
    )
    .await;
    let mut backoff: Vec<Option<tokio::time::Instant>> = vec![None; containers.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        if terminating(&rx.borrow()) {
            break;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = tick.tick() => {}
        }
        let mut dirty = false;
        for (c, at) in containers.iter_mut().zip(backoff.iter_mut()) {
            dirty |= check_container(sandbox, c, &policy, at).await;
        }
        if dirty {
            patch_status(
                shared,
                pod,
                &reports(&containers),
                ip.clone(),
                &sandbox.started,
            )
            .await;
        }
    }
    stop(pod, &mut containers).await;
}

/// One supervision tick of container `c`: readiness, an exit (and the
/// restart `policy`'s backoff until `restart_at`), a due restart. Whether
/// its status changed.
async fn check_container(
    sandbox: &Sandbox,
    c: &mut Running,
    policy: &str,
    restart_at: &mut Option<tokio::time::Instant>,
) -> bool {
    let mut dirty = false;
    // Readiness: declared TCP ports accept connections.
    if matches!(c.report.state, ContainerState::Running { .. })
        && !c.report.ready
        && ports_ready(sandbox.netns.clone(), sandbox.ip, c.tcp_ports.clone()).await
    {
        c.report.ready = true;
        dirty = true;
    }
    // Exits and restarts.
    let exited = c
        .process
        .as_mut()
        .and_then(|p| p.child.try_wait().ok().flatten());
    if let Some(status) = exited {
        if let Some(at) = exited_container(c, status, policy) {
            *restart_at = Some(at);
        }
        dirty = true;
    }
    if let Some(at) = *restart_at
        && tokio::time::Instant::now() >= at
    {
        *restart_at = None;
        c.report.restart_count += 1;
        if let Err(e) = spawn(c) {
            c.report.state = ContainerState::Waiting {
                reason: "StartError".into(),
                message: e.to_string(),
            };
        }
        dirty = true;
    }
    dirty
}

/// Records that `c` exited with `status`: Terminated, or waiting in
/// CrashLoopBackOff when the restart `policy` restarts it; then returns
/// when to restart it.
fn exited_container(
    c: &mut Running,
    status: std::process::ExitStatus,
    policy: &str,
) -> Option<tokio::time::Instant> {
    c.process = None;
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    let started_at = match &c.report.state {
        ContainerState::Running { started_at } => started_at.clone(),
        _ => now(),
    };
    let term = ContainerState::Terminated {
        exit_code: code,
        reason: if code == 0 {
            "Completed".into()
        } else {
            "Error".into()
        },
        started_at,
        finished_at: now(),
    };
    tracing::info!(container = %c.report.name, code, "container exited");
    c.report.ready = false;
    let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
    if !restart {
        c.report.state = term;
        return None;
    }
    c.report.last = Some(term);
    c.report.state = ContainerState::Waiting {
        reason: "CrashLoopBackOff".into(),
        message: String::new(),
    };
    let delay = Duration::from_secs(1 << c.report.restart_count.clamp(0, 3));
    Some(tokio::time::Instant::now() + delay)
}

/// Whether every declared TCP port of the container accepts a connection
/// inside the pod's namespace.
async fn ports_ready(netns: PathBuf, ip: Ipv4Addr, ports: Vec<u16>) -> bool {
    tokio::task::spawn_blocking(move || {
        sys::in_netns(&netns, move || {
            ports.iter().all(|p| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::from((ip, *p)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
        })
        .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}
