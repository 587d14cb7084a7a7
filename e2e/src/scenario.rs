//! Building blocks of the migration scenarios (end-to-end tests and
//! `make demo`): install switchyard from `config/` the way a user does
//! (`kubectl apply -k` of an overlay, or `helm install` of the chart),
//! deploy a workload, drive steady client traffic and read its totals,
//! apply and follow a `MigrationPlan`, read kube-proxy's rules on a node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use switchyard_api::{MigrationPlan, NodeDatapath, Phase};

use crate::cluster::{Cluster, wait_for};
use crate::error::{Error, Result};
use crate::runtime::images::{ImageProgram, ImageTable};

pub use crate::load::{Load, Target, Totals, start_load};

/// The lab's image table plus the project's images: the operator and
/// agent images `config/images/build.sh` builds from the binaries in
/// `project_bin` (cached: unchanged binaries are not built again), and the
/// load generator from `project_bin`.
pub fn images(project_bin: &Path) -> Result<ImageTable> {
    let mut t = ImageTable::with_defaults(project_bin);
    for (name, dir) in build_images(project_bin)? {
        t.insert(
            &format!("switchyard/{name}"),
            ImageProgram::Image(dir.join("oci")),
        );
    }
    t.insert(
        "switchyard/loadgen",
        ImageProgram::Binary(project_bin.join("switchyard-loadgen")),
    );
    Ok(t)
}

/// Runs `config/images/build.sh` for the profile of `project_bin`
/// (`<target>/debug`) and returns each image's directory by name.
pub fn build_images(project_bin: &Path) -> Result<Vec<(String, PathBuf)>> {
    let script = config_dir().join("images/build.sh");
    let profile = project_bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "debug".into());
    let target = project_bin.parent().unwrap_or(project_bin);
    let out = std::process::Command::new(&script)
        .args(["--profile", &profile])
        .env("CARGO_TARGET_DIR", target)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(Error::io("running", &script))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{} --profile {profile}", script.display()),
            detail: out.status.to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(name, dir)| (name.to_string(), PathBuf::from(dir)))
        .collect())
}

/// The repository's `config/` directory.
pub fn config_dir() -> PathBuf {
    crate::binaries::e2e_dir().join("../config")
}

/// A relative path from `from` to `to` (both absolute).
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Runs the cluster's kubectl with its admin kubeconfig.
pub async fn kubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(c.binaries().k8s("kubectl"))
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(args)
        .output()
        .await
        .map_err(Error::io("running", &c.binaries().k8s("kubectl")))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs switchyard with `kubectl apply -k config/`, unedited (the
/// agents find the API server by themselves; the lab runtime maps the
/// agent's `/sys/fs/cgroup` and `/sys/fs/bpf` hostPaths to the node's own
/// cgroup and pin directory), then waits until the operator runs and every
/// node's agent reports.
pub async fn install(c: &Cluster) -> Result<()> {
    // RBAC first, applied before the agents start (see
    // `audit::authorizer`); the whole of `config/` then, as a user does.
    let config = config_dir();
    let dir_s = config.to_string_lossy().into_owned();
    let (namespaces, rbac) = (config.join("namespace.yaml"), config.join("rbac"));
    let ns = namespaces.to_string_lossy();
    kubectl(c, &["apply", "--server-side", "-f", &ns]).await?;
    kubectl(
        c,
        &["apply", "--server-side", "-k", &rbac.to_string_lossy()],
    )
    .await?;
    crate::audit::authorizer::wait_effective(&c.client(), &rbac).await?;
    kubectl(c, &["apply", "--server-side", "-k", &dir_s]).await?;
    wait_crds_established(c).await?;
    wait_agents_report(c).await?;
    wait_operator_available(c).await
}

/// Installs switchyard as a user of the chart does: `helm install` of
/// `config/helm/switchyard` with its default values and `values` (`--set
/// k=v` arguments) on top (the chart's default
/// images are the ones the lab maps to the project's binaries), then waits
/// as [`install`] does. The release lives in `default`: the chart creates
/// switchyard's own namespaces, and Helm records a release before it
/// creates anything.
pub async fn install_with_helm(c: &Cluster, values: &[&str]) -> Result<()> {
    // Cached after the first build: a warm run only prints the path.
    let helm = crate::binaries::build_helm()?;
    let chart = config_dir().join("helm/switchyard");
    let out = tokio::process::Command::new(&helm)
        .arg("install")
        .arg("switchyard")
        .arg(&chart)
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .arg("--namespace=default")
        .args(values)
        .output()
        .await
        .map_err(Error::io("running", &helm))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "helm install {}: {}",
            chart.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    wait_crds_established(c).await?;
    wait_agents_report(c).await?;
    wait_operator_available(c).await
}

async fn wait_crds_established(c: &Cluster) -> Result<()> {
    wait_for(
        "the switchyard CRDs to be established",
        Duration::from_secs(30),
        || async {
            kubectl(
                c,
                &[
                    "wait",
                    "--for=condition=Established",
                    "crd/migrationplans.switchyard.dev",
                    "crd/nodedatapaths.switchyard.dev",
                    "--timeout=5s",
                ],
            )
            .await
            .ok()
        },
    )
    .await?;
    Ok(())
}

/// Until every node's agent has reported its heartbeat and capabilities.
async fn wait_agents_report(c: &Cluster) -> Result<()> {
    let nodes: Vec<String> = c.plan().nodes.iter().map(|n| n.name.clone()).collect();
    let ndp: Api<NodeDatapath> = Api::all(c.client());
    wait_for(
        "every node's agent to report in its NodeDatapath",
        Duration::from_secs(90),
        || {
            let ndp = ndp.clone();
            let nodes = nodes.clone();
            async move {
                let list = ndp.list(&ListParams::default()).await.ok()?;
                let reporting = list
                    .items
                    .iter()
                    .filter(|d| {
                        d.status
                            .as_ref()
                            .is_some_and(|s| s.heartbeat.is_some() && s.capabilities.is_some())
                    })
                    .count();
                (reporting == nodes.len()).then_some(())
            }
        },
    )
    .await
}

async fn wait_operator_available(c: &Cluster) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(c.client(), "switchyard-system");
    wait_for(
        "the operator Deployment to be available",
        Duration::from_secs(60),
        || {
            let d = deployments.clone();
            async move {
                let s = d.get_opt("switchyard-operator").await.ok()??.status?;
                (s.available_replicas.unwrap_or(0) >= 1).then_some(())
            }
        },
    )
    .await
}

/// Deploys the classic `nginx` Deployment (2 replicas on different nodes,
/// TCP 80 and 8080, UDP 5353) and three Services: `nginx` (TCP 80),
/// `nginx-alt` (TCP 8080), `nginx-udp` (UDP 5353). Returns them once both
/// endpoints are ready.
pub async fn deploy_workload(c: &Cluster) -> Result<Vec<Target>> {
    let apply = |v: serde_json::Value| async move { crate::addons::apply(&c.client(), &v).await };
    apply(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "nginx"}},
          "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "nginx"}}, "topologyKey": "kubernetes.io/hostname"}]}},
            "containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [
                {"containerPort": 80}, {"containerPort": 8080}, {"containerPort": 5353, "protocol": "UDP"}]}]}}}}))
    .await?;
    let mut targets = Vec::new();
    for (name, port, proto) in [
        ("nginx", 80, "TCP"),
        ("nginx-alt", 8080, "TCP"),
        ("nginx-udp", 5353, "UDP"),
    ] {
        apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"app": "nginx"}, "ports": [{"name": "p", "port": port, "targetPort": port, "protocol": proto}]}}))
        .await?;
        let svc: Api<Service> = Api::namespaced(c.client(), "default");
        let ip = wait_for(
            &format!("a ClusterIP for Service {name}"),
            Duration::from_secs(30),
            || {
                let svc = svc.clone();
                async move {
                    svc.get_opt(name)
                        .await
                        .ok()??
                        .spec?
                        .cluster_ip?
                        .parse::<Ipv4Addr>()
                        .ok()
                }
            },
        )
        .await?;
        targets.push(Target {
            service: name.into(),
            ip,
            port,
            udp: proto == "UDP",
        });
    }
    let pods: Api<Pod> = Api::namespaced(c.client(), "default");
    wait_for("2 ready nginx pods", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=nginx"))
                .await
                .ok()?;
            let ready = list.items.iter().filter(|p| pod_ready(p)).count();
            (ready == 2).then_some(())
        }
    })
    .await?;
    wait_kube_proxy_programmed(c, &targets).await?;
    Ok(targets)
}

/// Waits until kube-proxy on every node has programmed every target's
/// ClusterIP (iptables or nftables), so traffic started next does not race
/// kube-proxy's first sync of the new Services.
pub async fn wait_kube_proxy_programmed(c: &Cluster, targets: &[Target]) -> Result<()> {
    for n in &c.plan().nodes {
        wait_for(
            &format!("kube-proxy to program the Services on {}", n.name),
            Duration::from_secs(60),
            || async {
                let mut rules = c.iptables_save(&n.name, "nat").await.ok()?;
                rules.push_str(&c.nft_ruleset(&n.name).await.unwrap_or_default());
                targets
                    .iter()
                    .all(|t| {
                        rules.contains(&format!("{}/32", t.ip))
                            || rules.contains(&format!("{} . ", t.ip))
                    })
                    .then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

/// Whether the pod reports the Ready condition.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The scenarios' MigrationPlan `name`: canary 1 node, then waves of 1,
/// probes of `nginx` (HTTP) and `nginx-udp`, rollback of a failed node;
/// `extra` replaces top-level `spec` fields.
pub fn migration_plan(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut p = json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationPlan", "metadata": {"name": name},
        "spec": {"strategy": {"canaryNodes": 1, "waveSize": 1, "stepTimeoutSeconds": 120},
            "verification": {"consecutiveSuccesses": 3, "timeoutSeconds": 2, "probes": [
                {"name": "nginx", "service": {"namespace": "default", "name": "nginx"}, "port": 80, "protocol": "TCP", "httpPath": "/"},
                {"name": "nginx-udp", "service": {"namespace": "default", "name": "nginx-udp"}, "port": 5353, "protocol": "UDP"}]},
            "failurePolicy": {"action": "Rollback"}}});
    if let (Some(spec), Some(extra)) = (p["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    p
}

/// Applies a MigrationPlan.
pub async fn apply_plan(c: &Cluster, plan: serde_json::Value) -> Result<()> {
    crate::addons::apply(&c.client(), &plan).await
}

/// Follows plan `name` until `done` says so, calling `progress` on each
/// change of its status; fails after `timeout`.
pub async fn follow_plan(
    c: &Cluster,
    name: &str,
    timeout: Duration,
    mut progress: impl FnMut(&MigrationPlan),
    done: impl Fn(&MigrationPlan) -> bool,
) -> Result<MigrationPlan> {
    let api: Api<MigrationPlan> = Api::all(c.client());
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(p) = api.get_opt(name).await? {
            if last.as_ref() != Some(&p.status) {
                progress(&p);
                last = Some(p.status.clone());
            }
            if done(&p) {
                return Ok(p);
            }
        }
        if std::time::Instant::now() > deadline {
            let phase = last
                .flatten()
                .map(|s| format!("{:?}: {}", s.phase, s.message.unwrap_or_default()));
            return Err(Error::Timeout {
                what: format!("MigrationPlan {name} to finish (last: {phase:?})"),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether a plan reached a phase it will not leave by itself.
pub fn settled(p: &MigrationPlan) -> bool {
    p.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            Phase::Succeeded | Phase::Failed | Phase::RolledBack | Phase::Planned | Phase::Paused
        )
    })
}

/// The published manual recipe, on every node at once: delete kube-proxy's
/// DaemonSet and ConfigMap, strip every `KUBE` rule with `iptables-save |
/// grep -v KUBE | iptables-restore`, then turn the datapath on; returns
/// once every node's datapath serves.
pub async fn manual_procedure(c: &Cluster) -> Result<()> {
    for kind in ["daemonset", "configmap"] {
        kubectl(c, &["-n", "kube-system", "delete", kind, "kube-proxy"]).await?;
    }
    let flush = "iptables-save | grep -v KUBE | iptables-restore";
    for n in &c.plan().nodes {
        let out = c.exec_on_node(&n.name, &["sh", "-c", flush]).await?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("{flush} on {}", n.name),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    let ndp: Api<NodeDatapath> = Api::all(c.client());
    for n in &c.plan().nodes {
        let body = json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "NodeDatapath",
            "metadata": {"name": n.name}, "spec": {"mode": "Active"}});
        ndp.patch(
            &n.name,
            &PatchParams::apply("manual").force(),
            &Patch::Apply(body),
        )
        .await?;
    }
    wait_for(
        "the datapath serving on every node",
        Duration::from_secs(60),
        || async {
            let list = ndp.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|d| {
                    d.status.as_ref().is_some_and(|s| {
                        s.active_mode == Some(switchyard_api::DatapathMode::Active)
                            && s.sync.services_programmed >= s.sync.services_seen
                            && s.sync.services_seen > 0
                    })
                })
                .then_some(())
        },
    )
    .await
}

/// kube-proxy's rules on a node, per table: lines of `iptables-save` that
/// mention a `KUBE-` chain, without the kubelet's own chains.
pub async fn kube_proxy_rules(c: &Cluster, node: &str) -> Result<BTreeMap<String, Vec<String>>> {
    const KUBELET: [&str; 3] = ["KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"];
    let mut out = BTreeMap::new();
    for table in ["nat", "filter", "mangle"] {
        let text = c.iptables_save(node, table).await?;
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("KUBE-") && !KUBELET.iter().any(|k| l.contains(k)))
            .map(str::to_string)
            .collect();
        out.insert(table.to_string(), lines);
    }
    let nft = c.nft_ruleset(node).await?;
    let tables: Vec<String> = nft
        .lines()
        .filter(|l| l.starts_with("table ") && l.contains("kube-proxy"))
        .map(str::to_string)
        .collect();
    out.insert("nftables".to_string(), tables);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_to_the_common_prefix() {
        assert_eq!(
            relative(
                Path::new("/dev/shm/lab/x/ovl"),
                Path::new("/work/main/config")
            ),
            PathBuf::from("../../../../../work/main/config")
        );
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/c/d")),
            PathBuf::from("../c/d")
        );
    }

    /// The admission policy matches the agent's ServiceAccount by name: it
    /// must name the one `config/rbac/` creates and the DaemonSet runs as.
    #[test]
    fn the_admission_policy_names_the_agents_service_account() {
        let read = |p: &str| std::fs::read_to_string(config_dir().join(p)).unwrap();
        let docs = |text: String| -> Vec<serde_yaml::Value> {
            serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde::Deserialize::deserialize(d).unwrap())
                .collect()
        };
        let sa = docs(read("rbac/agent.yaml"))
            .into_iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .unwrap();
        let (ns, name) = (
            sa["metadata"]["namespace"].as_str().unwrap(),
            sa["metadata"]["name"].as_str().unwrap(),
        );
        let ds = &docs(read("agent/daemonset.yaml"))[0];
        assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], name);
        let policies = docs(read("admission/agent-own-node.yaml"));
        let policy = &policies[0];
        assert_eq!(policy["kind"], "ValidatingAdmissionPolicy");
        let condition = policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap();
        assert!(
            condition.contains(&format!("'system:serviceaccount:{ns}:{name}'")),
            "{condition}"
        );
        let binding = &policies[1];
        assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
        assert!(read("kustomization.yaml").contains("  - admission\n"));
    }

    #[test]
    fn targets_render_as_urls() {
        let t = Target {
            service: "nginx-udp".into(),
            ip: Ipv4Addr::new(10, 96, 0, 9),
            port: 5353,
            udp: true,
        };
        assert_eq!(t.url(), "udp://10.96.0.9:5353");
    }
}
