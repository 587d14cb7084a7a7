//! The north-south workload: Services that receive traffic from outside the
//! cluster, backed by the nginx pods [`crate::scenario::deploy_workload`]
//! runs (2 replicas on different nodes, TCP 80, UDP 5353):
//!
//! - `web-nodeport`: NodePort, `externalTrafficPolicy: Cluster`, TCP 80;
//! - `web-udp`: NodePort, UDP 5353;
//! - `web-lb`: LoadBalancer, `externalTrafficPolicy: Local` (it gets a
//!   `healthCheckNodePort`; only the two backend nodes pass it), TCP 80;
//! - `web-lb-cluster`: LoadBalancer, `externalTrafficPolicy: Cluster`
//!   (health-checked on kube-proxy's `:10256/healthz`), TCP 80.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::cluster::{Cluster, wait_for};
use crate::error::{Error, Result};
use crate::outside::model::LbService;

/// A LoadBalancer Service's frontends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbFrontend {
    /// `namespace/name`.
    pub service: String,
    /// Its LoadBalancer IP.
    pub ip: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// `healthCheckNodePort` (eTP=Local only).
    pub health_check_node_port: Option<u16>,
}

/// The deployed north-south workload.
#[derive(Debug, Clone)]
pub struct Ingress {
    /// `web-nodeport`'s TCP NodePort.
    pub node_port: u16,
    /// `web-udp`'s UDP NodePort.
    pub udp_node_port: u16,
    /// `web-lb` (eTP=Local).
    pub lb_local: LbFrontend,
    /// `web-lb-cluster` (eTP=Cluster).
    pub lb_cluster: LbFrontend,
    /// Nodes running a backend pod.
    pub backend_nodes: BTreeSet<String>,
    /// Every node and its address.
    pub nodes: Vec<(String, Ipv4Addr)>,
}

impl Ingress {
    /// The external load's targets: the TCP and the UDP NodePort on every
    /// node, and both LoadBalancer IPs.
    pub fn load_targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .nodes
            .iter()
            .map(|(_, ip)| format!("tcp://{ip}:{}", self.node_port))
            .collect();
        t.extend(
            self.nodes
                .iter()
                .map(|(_, ip)| format!("udp://{ip}:{}", self.udp_node_port)),
        );
        for lb in [&self.lb_local, &self.lb_cluster] {
            t.push(format!("tcp://{}:{}", lb.ip, lb.port));
        }
        t
    }

    /// A node's address.
    pub fn node_ip(&self, node: &str) -> Result<Ipv4Addr> {
        self.nodes
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, ip)| *ip)
            .ok_or_else(|| Error::NotFound(format!("node {node}")))
    }

    /// A node's address with `port`.
    pub fn on_node(&self, node: &str, port: u16) -> Result<SocketAddr> {
        Ok(SocketAddr::from((self.node_ip(node)?, port)))
    }

    /// A node without a backend pod, if there is one (its NodePort traffic
    /// is forwarded to another node), else the first node.
    pub fn node_without_backend(&self) -> String {
        self.nodes
            .iter()
            .map(|(n, _)| n)
            .find(|n| !self.backend_nodes.contains(*n))
            .or(self.nodes.first().map(|(n, _)| n))
            .cloned()
            .unwrap_or_default()
    }
}

fn service(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut s = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": "nginx"}}});
    if let (Some(to), Some(from)) = (s["spec"].as_object_mut(), spec.as_object()) {
        to.extend(from.clone());
    }
    s
}

/// Deploys the north-south Services on the nginx pods (deploy those first
/// with [`crate::scenario::deploy_workload`]) and waits until kube-proxy
/// serves every frontend on every node and the LoadBalancer sends each
/// LoadBalancer IP to the nodes that pass its health checks.
pub async fn deploy_ingress(c: &Cluster) -> Result<Ingress> {
    let tcp = json!([{"name": "p", "port": 80, "targetPort": 80, "protocol": "TCP"}]);
    for obj in [
        service(
            "web-nodeport",
            json!({"type": "NodePort", "externalTrafficPolicy": "Cluster", "ports": tcp}),
        ),
        service(
            "web-udp",
            json!({"type": "NodePort", "ports": [{"name": "p", "port": 5353, "targetPort": 5353, "protocol": "UDP"}]}),
        ),
        service(
            "web-lb",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": tcp}),
        ),
        service(
            "web-lb-cluster",
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "ports": tcp}),
        ),
    ] {
        crate::addons::apply(&c.client(), &obj).await?;
    }
    let ingress = Ingress {
        node_port: node_port(c, "web-nodeport").await?,
        udp_node_port: node_port(c, "web-udp").await?,
        lb_local: lb_frontend(c, "web-lb").await?,
        lb_cluster: lb_frontend(c, "web-lb-cluster").await?,
        backend_nodes: backend_nodes(c).await?,
        nodes: c
            .plan()
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.ip))
            .collect(),
    };
    wait_kube_proxy_serves(c, &ingress).await?;
    wait_lb_rotation(c, &ingress).await?;
    Ok(ingress)
}

async fn get_service(c: &Cluster, name: &str) -> Option<Service> {
    let api: Api<Service> = Api::namespaced(c.client(), "default");
    api.get_opt(name).await.ok()?
}

async fn node_port(c: &Cluster, name: &str) -> Result<u16> {
    wait_for(
        &format!("a NodePort for Service {name}"),
        Duration::from_secs(30),
        || async {
            let spec = get_service(c, name).await?.spec?;
            let port = spec.ports?.first()?.node_port?;
            u16::try_from(port).ok()
        },
    )
    .await
}

/// Waits until the lab's LoadBalancer gave the Service an IP.
async fn lb_frontend(c: &Cluster, name: &str) -> Result<LbFrontend> {
    wait_for(
        &format!("a LoadBalancer IP for Service {name}"),
        Duration::from_secs(30),
        || async {
            let svc = get_service(c, name).await?;
            let lb = LbService::from_service(&svc)?;
            let port = svc.spec?.ports?.first()?.port;
            Some(LbFrontend {
                service: lb.key,
                ip: lb.ip?,
                port: u16::try_from(port).ok()?,
                health_check_node_port: lb.local.then_some(lb.health_port),
            })
        },
    )
    .await
}

/// The nodes of the two ready nginx pods.
async fn backend_nodes(c: &Cluster) -> Result<BTreeSet<String>> {
    let pods: Api<Pod> = Api::namespaced(c.client(), "default");
    wait_for("2 ready nginx pods", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=nginx"))
            .await
            .ok()?;
        let nodes: BTreeSet<String> = list
            .items
            .iter()
            .filter(|p| crate::scenario::pod_ready(p))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (nodes.len() == 2).then_some(nodes)
    })
    .await
}

/// What kube-proxy's rules for a frontend contain, in iptables and in
/// nftables mode: `(iptables, nftables)`.
fn rule_marks(ingress: &Ingress) -> Vec<(String, String)> {
    let mut marks = vec![
        (
            format!("--dport {} ", ingress.node_port),
            format!("tcp . {} :", ingress.node_port),
        ),
        (
            format!("--dport {} ", ingress.udp_node_port),
            format!("udp . {} :", ingress.udp_node_port),
        ),
    ];
    for lb in [&ingress.lb_local, &ingress.lb_cluster] {
        marks.push((
            format!("-d {}/32 ", lb.ip),
            format!("{} . tcp . {} :", lb.ip, lb.port),
        ));
    }
    marks
}

/// Waits until kube-proxy on every node has programmed every NodePort and
/// LoadBalancer IP (iptables or nftables), so traffic started next does not
/// race kube-proxy's sync.
pub async fn wait_kube_proxy_serves(c: &Cluster, ingress: &Ingress) -> Result<()> {
    let marks = rule_marks(ingress);
    for n in &c.plan().nodes {
        wait_for(
            &format!("kube-proxy to program the external frontends on {}", n.name),
            Duration::from_secs(60),
            || async {
                let ipt = c.iptables_save(&n.name, "nat").await.ok()?;
                let nft = c.nft_ruleset(&n.name).await.unwrap_or_default();
                marks
                    .iter()
                    .all(|(i, f)| ipt.contains(i.as_str()) || nft.contains(f.as_str()))
                    .then_some(())
            },
        )
        .await?;
    }
    Ok(())
}

/// Waits until the LoadBalancer sends `web-lb` (eTP=Local) to exactly the
/// backend nodes and `web-lb-cluster` to every node.
pub async fn wait_lb_rotation(c: &Cluster, ingress: &Ingress) -> Result<()> {
    let lb = c.outside()?.load_balancer();
    let all: BTreeSet<String> = ingress.nodes.iter().map(|(n, _)| n.clone()).collect();
    wait_for(
        "the LoadBalancer to route to every healthy node",
        Duration::from_secs(60),
        || async {
            let local = lb.service(&ingress.lb_local.service)?;
            let cluster = lb.service(&ingress.lb_cluster.service)?;
            (local.in_rotation == ingress.backend_nodes && cluster.in_rotation == all).then_some(())
        },
    )
    .await
}
