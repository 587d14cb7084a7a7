//! What the lab installs into the API server: Node objects (with status, as
//! a kubelet would report it) and kube-proxy the way kubeadm installs it
//! (ServiceAccount, ClusterRoleBinding to `system:node-proxier`, ConfigMap
//! `kube-proxy` with `config.conf` and `kubeconfig.conf`, DaemonSet
//! `kube-proxy`). Rendering is pure; [`apply`] server-side-applies.

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::json;

use crate::binaries::K8S_VERSION;
use crate::error::{Error, Result};
use crate::topology::{NodePlan, POD_CIDR, Plan};

/// kube-proxy's data path mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// iptables (Debian's default nft backend).
    #[default]
    Iptables,
    /// nftables.
    Nftables,
}

impl ProxyMode {
    /// The `mode:` value in `KubeProxyConfiguration`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::Nftables => "nftables",
        }
    }
}

impl std::str::FromStr for ProxyMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "iptables" => Ok(Self::Iptables),
            "nftables" => Ok(Self::Nftables),
            other => Err(Error::Config(format!(
                "unknown proxy mode {other:?} (iptables|nftables)"
            ))),
        }
    }
}

/// The kube-proxy image name the DaemonSet uses.
pub fn kube_proxy_image() -> String {
    format!("registry.k8s.io/kube-proxy:{K8S_VERSION}")
}

/// `config.conf`: conntrack sizing disabled (global sysctls are not
/// writable from a namespace), cluster CIDR, mode.
pub fn kube_proxy_config(mode: ProxyMode) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\n\
         clientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nclusterCIDR: {POD_CIDR}\n\
         mode: {mode}\nconntrack:\n  maxPerCore: 0\n  min: 0\n  tcpEstablishedTimeout: 0s\n  tcpCloseWaitTimeout: 0s\n\
         metricsBindAddress: 127.0.0.1:10249\nhealthzBindAddress: 0.0.0.0:10256\n",
        mode = mode.as_str()
    )
}

/// `kubeconfig.conf`: kubeadm's, using the pod's ServiceAccount token.
pub fn kube_proxy_kubeconfig(api_url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: \
         /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: {api_url}\n  name: default\n\
         contexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\n\
         current-context: default\nusers:\n- name: default\n  user:\n    tokenFile: \
         /var/run/secrets/kubernetes.io/serviceaccount/token\n"
    )
}

/// Every kube-proxy object, in apply order.
pub fn kube_proxy_objects(plan: &Plan, mode: ProxyMode) -> Vec<serde_json::Value> {
    let labels = json!({"k8s-app": "kube-proxy"});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "kube-proxy", "namespace": "kube-system"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "kubeadm:node-proxier"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
               "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}},
               "data": {"config.conf": kube_proxy_config(mode), "kubeconfig.conf": kube_proxy_kubeconfig(&plan.api_url())}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels},
        "spec": {
          "selector": {"matchLabels": labels},
          "updateStrategy": {"type": "RollingUpdate"},
          "template": {
            "metadata": {"labels": labels},
            "spec": {
              "containers": [{
                "name": "kube-proxy",
                "image": kube_proxy_image(),
                "imagePullPolicy": "IfNotPresent",
                "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                            "--hostname-override=$(NODE_NAME)"],
                "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "securityContext": {"privileged": true},
                "volumeMounts": [
                  {"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"},
                  {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                  {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": true}
                ]
              }],
              "hostNetwork": true,
              "priorityClassName": "system-node-critical",
              "serviceAccountName": "kube-proxy",
              "nodeSelector": {"kubernetes.io/os": "linux"},
              "tolerations": [{"operator": "Exists"}],
              "volumes": [
                {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}}
              ]
            }
          }
        }}),
    ]
}

/// A Node object as the lab's runtime registers it (spec and labels).
pub fn node_object(node: &NodePlan) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": {
            "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            "switchyard.dev/lab-node": "true"}},
        "spec": {"podCIDR": node.pod_cidr(), "podCIDRs": [node.pod_cidr()]}
    })
}

/// The Node status a kubelet would report: addresses, capacity, Ready.
pub fn node_status(node: &NodePlan, now: &str) -> serde_json::Value {
    let cap = json!({"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"});
    json!({"status": {
        "addresses": [{"type": "InternalIP", "address": node.ip.to_string()},
                      {"type": "Hostname", "address": node.name}],
        "capacity": cap, "allocatable": cap,
        "conditions": [{"type": "Ready", "status": "True", "reason": "LabRuntimeReady",
                        "message": "switchyard lab node runtime is running",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                     "osImage": "switchyard lab", "containerRuntimeVersion": "switchyard-lab://0.1",
                     "kubeletVersion": format!("{K8S_VERSION}"), "kubeProxyVersion": "",
                     "operatingSystem": "linux", "architecture": "amd64"}
    }})
}

/// Server-side applies an arbitrary object (field manager `switchyard-lab`).
pub async fn apply(client: &kube::Client, obj: &serde_json::Value) -> Result<()> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply("switchyard-lab").force(),
        &Patch::Apply(obj),
    )
    .await?;
    Ok(())
}

/// Registers a node: applies the object, then its status.
pub async fn register_node(client: &kube::Client, node: &NodePlan, taints: &[Taint]) -> Result<()> {
    apply(client, &node_object(node)).await?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &node.name,
            &PatchParams::default(),
            &Patch::Merge(node_status(node, &now)),
        )
        .await?;
    // The TaintNodesByCondition admission plugin adds `not-ready` on create;
    // the node lifecycle controller (off: nothing heartbeats) would lift it
    // once Ready, so the lab does, leaving those the node registers with
    // (kubelet `--register-with-taints`).
    nodes
        .patch(
            &node.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": taints}})),
        )
        .await?;
    Ok(())
}

/// Deletes `node`'s Node (gone already is fine).
pub async fn deregister_node(client: &kube::Client, node: &NodePlan) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.delete(&node.name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_config_disables_conntrack_sizing_and_sets_mode() {
        let v: serde_yaml::Value =
            serde_yaml::from_str(&kube_proxy_config(ProxyMode::Nftables)).unwrap();
        assert_eq!(v["mode"].as_str(), Some("nftables"));
        assert_eq!(v["conntrack"]["maxPerCore"].as_i64(), Some(0));
        assert_eq!(v["clusterCIDR"].as_str(), Some(POD_CIDR));
    }

    #[test]
    fn daemonset_is_shaped_like_kubeadms() {
        let plan = Plan::new("t", 1);
        let objs = kube_proxy_objects(&plan, ProxyMode::Iptables);
        let ds = objs.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let spec = &ds["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["serviceAccountName"], "kube-proxy");
        assert_eq!(spec["containers"][0]["image"], kube_proxy_image());
        let cm = objs.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        assert!(
            cm["data"]["kubeconfig.conf"]
                .as_str()
                .unwrap()
                .contains("https://172.31.255.1:6443")
        );
    }

    #[test]
    fn node_status_reports_internal_ip_and_ready() {
        let plan = Plan::new("t", 2);
        let s = node_status(&plan.nodes[1], "2026-01-01T00:00:00Z");
        assert_eq!(s["status"]["addresses"][0]["address"], "172.31.255.12");
        assert_eq!(s["status"]["conditions"][0]["status"], "True");
    }
}
