//! The control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler as processes in the control-plane network namespace and
//! the cluster's `cp` cgroup. Flags are rendered by pure functions.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::error::{Error, Result};
use crate::pki::Pki;
use crate::sys::{Placement, place};
use crate::topology::{API_PORT, CONTROL_PLANE_IP, POD_CIDR, SERVICE_CIDR};

/// A supervised child process with its log file.
#[derive(Debug)]
pub struct Process {
    /// Program name, for messages.
    pub name: String,
    /// The child.
    pub child: tokio::process::Child,
    /// Where stdout and stderr go.
    pub log: PathBuf,
}

impl Process {
    /// Spawns `program args` placed as `placement`, logging to `log`.
    pub fn spawn(
        program: &Path,
        args: &[String],
        placement: &Placement,
        log: PathBuf,
    ) -> Result<Self> {
        let out = std::fs::File::create(&log).map_err(Error::io("creating log", &log))?;
        let err = out.try_clone().map_err(Error::io("cloning log", &log))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        place(&mut cmd, placement)?;
        let child = cmd.spawn().map_err(Error::io("spawning", program))?;
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self { name, child, log })
    }

    /// Fails with the log path if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                program: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
            }),
            Err(e) => Err(Error::io("waiting for", &self.log)(e)),
        }
    }

    /// The process id (0 once reaped).
    pub fn pid(&self) -> i32 {
        self.child.id().map(|p| p as i32).unwrap_or(0)
    }
}

/// etcd's arguments: loopback only (inside the control-plane namespace),
/// data in `data`, no fsync (tmpfs anyway), 3.6 progress-notify spelling.
pub fn etcd_args(data: &Path) -> Vec<String> {
    [
        "--name=lab".to_string(),
        format!("--data-dir={}", data.display()),
        "--listen-client-urls=http://127.0.0.1:2379".into(),
        "--advertise-client-urls=http://127.0.0.1:2379".into(),
        "--listen-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
        "--initial-cluster=lab=http://127.0.0.1:2380".into(),
        "--listen-metrics-urls=http://127.0.0.1:2381".into(),
        "--unsafe-no-fsync".into(),
        "--watch-progress-notify-interval=5s".into(),
        "--log-level=warn".into(),
    ]
    .into()
}

/// kube-apiserver's arguments: RBAC, service-account keys, serving cert
/// covering every address clients dial, advertise address on the underlay.
pub fn apiserver_args(pki: &Pki, cert_dir: &Path) -> Vec<String> {
    let p = |n: &str| pki.path(n).display().to_string();
    vec![
        format!("--advertise-address={CONTROL_PLANE_IP}"),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={API_PORT}"),
        "--etcd-servers=http://127.0.0.1:2379".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".into(),
        format!("--client-ca-file={}", p("ca.crt")),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--cert-dir={}", cert_dir.display()),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// kube-controller-manager's arguments: every default controller except
/// node lifecycle (there is no kubelet heartbeating); podCIDRs are assigned
/// by the lab.
pub fn controller_manager_args(pki: &Pki, kubeconfig: &Path) -> Vec<String> {
    let p = |n: &str| pki.path(n).display().to_string();
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--controllers=*,-nodelifecycle,-nodeipam".into(),
        "--use-service-account-credentials=true".into(),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        format!("--cluster-cidr={POD_CIDR}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// kube-scheduler's arguments.
pub fn scheduler_args(kubeconfig: &Path) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

/// The running control-plane processes.
#[derive(Debug)]
pub struct ControlPlane {
    /// etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
    pub processes: Vec<Process>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver with `extra` flags appended (the
    /// controllers start later, once the API server answers, see
    /// [`ControlPlane::start_controllers`]).
    pub fn start_storage_and_api(
        bins: &Binaries,
        pki: &Pki,
        state: &Path,
        placement: &Placement,
        extra: &[String],
    ) -> Result<Self> {
        let logs = state.join("logs");
        std::fs::create_dir_all(&logs).map_err(Error::io("creating", &logs))?;
        let etcd = Process::spawn(
            &bins.k8s("etcd"),
            &etcd_args(&state.join("etcd")),
            placement,
            logs.join("etcd.log"),
        )?;
        let mut args = apiserver_args(pki, &state.join("apiserver"));
        args.extend_from_slice(extra);
        let api = Process::spawn(
            &bins.k8s("kube-apiserver"),
            &args,
            placement,
            logs.join("kube-apiserver.log"),
        )?;
        Ok(Self {
            processes: vec![etcd, api],
        })
    }

    /// Starts kube-controller-manager and kube-scheduler.
    pub fn start_controllers(
        &mut self,
        bins: &Binaries,
        pki: &Pki,
        state: &Path,
        placement: &Placement,
    ) -> Result<()> {
        let logs = state.join("logs");
        let local = format!("https://127.0.0.1:{API_PORT}");
        let kcm_kc = state.join("controller-manager.kubeconfig");
        pki.write_kubeconfig("controller-manager", &local, &kcm_kc)?;
        let sched_kc = state.join("scheduler.kubeconfig");
        pki.write_kubeconfig("scheduler", &local, &sched_kc)?;
        self.processes.push(Process::spawn(
            &bins.k8s("kube-controller-manager"),
            &controller_manager_args(pki, &kcm_kc),
            placement,
            logs.join("kube-controller-manager.log"),
        )?);
        self.processes.push(Process::spawn(
            &bins.k8s("kube-scheduler"),
            &scheduler_args(&sched_kc),
            placement,
            logs.join("kube-scheduler.log"),
        )?);
        Ok(())
    }

    /// Fails if any control-plane process has exited.
    pub fn check(&mut self) -> Result<()> {
        self.processes
            .iter_mut()
            .try_for_each(Process::check_running)
    }
}

/// Waits until kube-apiserver answers `/readyz` with `ok` (or a control-plane
/// process dies).
pub(crate) async fn wait_ready(client: &kube::Client, cp: &mut ControlPlane) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        cp.check()?;
        let req = http_request("/readyz");
        if let Ok(body) = client.request_text(req).await
            && body.trim() == "ok"
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: "kube-apiserver /readyz".into(),
                seconds: 90,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn http_request(path: &str) -> http::Request<Vec<u8>> {
    let mut req = http::Request::new(Vec::new());
    *req.uri_mut() = path.parse().unwrap_or_default();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_advertises_a_non_loopback_address_with_rbac() {
        let pki = Pki {
            dir: PathBuf::from("/pki"),
        };
        let a = apiserver_args(&pki, Path::new("/certs"));
        assert!(a.contains(&"--advertise-address=172.31.255.1".to_string()));
        assert!(
            a.iter()
                .any(|f| f.starts_with("--authorization-mode=") && f.contains("RBAC"))
        );
        assert!(a.contains(&"--service-account-key-file=/pki/sa.pub".to_string()));
    }

    #[test]
    fn controller_manager_runs_without_node_lifecycle() {
        let pki = Pki {
            dir: PathBuf::from("/pki"),
        };
        let a = controller_manager_args(&pki, Path::new("/kc"));
        assert!(
            a.iter()
                .any(|f| f == "--controllers=*,-nodelifecycle,-nodeipam")
        );
    }
}
