//! The trust boundary on the real API server (root): switchyard installed
//! from `config/`, each node's agent running with the token the lab's node
//! runtime minted for its pod as the kubelet does (TokenRequest bound to the
//! pod, so the API server adds the pod's node). With node1's agent's token,
//! only node1's NodeDatapath status may be written (`config/admission/`);
//! the operator's identity is unaffected.

#![allow(clippy::unwrap_used)] // helpers of tests, not only #[test] fns

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodTemplateSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use switchyard_api::{AGENT_LEASE_NAMESPACE, DatapathMode, NodeDatapath, NodeDatapathSpec};
use switchyard_e2e::identity::{client_with_token, jwt_claims, pod_token};
use switchyard_e2e::{Cluster, ClusterConfig, ProxyMode, scenario, skip_unless_root, wait_for};

const NS: &str = "switchyard-system";
const POLICY: &str = "switchyard-agent-own-node";
const LEASE_POLICY: &str = "switchyard-agent-own-lease";

/// A 2-node cluster with switchyard installed; `install` returns once every
/// node's agent has reported in its NodeDatapath status, i.e. written its
/// own status under the policy.
async fn setup() -> Cluster {
    let started = Instant::now();
    let bins = switchyard_e2e::binaries::Binaries::locate().unwrap();
    for b in ["switchyard-operator", "switchyard-agent"] {
        assert!(
            bins.project_bin.join(b).exists(),
            "{b} not built: run `make e2e` (it builds the project's binaries first)"
        );
    }
    let c = Cluster::start(ClusterConfig {
        nodes: 2,
        proxy_mode: ProxyMode::Iptables,
        images: Some(scenario::images(&bins.project_bin).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap();
    scenario::install(&c).await.unwrap();
    eprintln!(
        "[{}] cluster and switchyard ready in {:.1}s",
        c.name(),
        started.elapsed().as_secs_f64()
    );
    c
}

/// The running pod of `app` (`app.kubernetes.io/name`), on `node` if given.
async fn pod_of(c: &Cluster, app: &str, node: Option<&str>) -> Pod {
    let mut lp = ListParams::default().labels(&format!("app.kubernetes.io/name={app}"));
    if let Some(n) = node {
        lp = lp.fields(&format!("spec.nodeName={n}"));
    }
    let pods: Api<Pod> = Api::namespaced(c.client(), NS);
    let list = pods.list(&lp).await.unwrap().items;
    list.into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .unwrap_or_else(|| panic!("no running {app} pod (node {node:?})"))
}

/// A client acting as `pod`'s ServiceAccount with the token the runtime
/// wrote into the pod, after checking that token is bound to the pod and
/// its node as the kubelet's would be.
async fn client_of(c: &Cluster, pod: &Pod) -> kube::Client {
    let name = pod.metadata.name.as_deref().unwrap();
    let token = pod_token(c, NS, name).await.unwrap();
    let claims = jwt_claims(&token).unwrap();
    let k8s = &claims["kubernetes.io"];
    let spec = pod.spec.as_ref().unwrap();
    let sa = spec.service_account_name.as_deref().unwrap();
    assert_eq!(claims["sub"], format!("system:serviceaccount:{NS}:{sa}"));
    assert_eq!(
        claims["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"]),
        "the API server's own audience, as for a kubelet-mounted token"
    );
    assert_eq!(k8s["pod"]["name"], name, "bound to its pod: {claims}");
    assert_eq!(k8s["pod"]["uid"], pod.metadata.uid.clone().unwrap());
    let node = spec.node_name.as_deref().unwrap();
    assert_eq!(k8s["node"]["name"], node, "carries its node: {claims}");
    assert!(k8s["node"]["uid"].is_string(), "the Node's uid: {claims}");
    client_with_token(c, &token).await.unwrap()
}

/// Asserts `result` is the NodeDatapath policy's denial (403) saying `want`.
fn assert_denied<T: std::fmt::Debug>(what: &str, result: kube::Result<T>, want: &str) {
    assert_denied_by(POLICY, what, result, want);
}

/// Asserts `result` is `policy`'s denial (403) saying `want`.
fn assert_denied_by<T: std::fmt::Debug>(
    policy: &str,
    what: &str,
    result: kube::Result<T>,
    want: &str,
) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            assert!(
                s.message
                    .contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                    && s.message.contains(want),
                "{what}: denied, but not by the policy saying {want:?}: {}",
                s.message
            );
            eprintln!("  {what}: denied: {}", s.message);
        }
        other => panic!("{what}: expected the policy's denial, got {other:?}"),
    }
}

/// Asserts `result` is RBAC's refusal (403 from the authorizer, before any
/// admission policy) of `verb` on NodeDatapaths: `config/rbac` grants the
/// agent no write of any NodeDatapath's spec.
fn assert_refused_by_rbac<T: std::fmt::Debug>(what: &str, result: kube::Result<T>, verb: &str) {
    let want = format!("cannot {verb} resource \"nodedatapaths\"");
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(&want) => {
            eprintln!("  {what}: refused by RBAC: {}", s.message);
        }
        other => panic!("{what}: expected RBAC's refusal ({want}), got {other:?}"),
    }
}

fn merge(v: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(v)
}

/// Policies take effect when the API server's informers see them: waits
/// (with dry-run requests) until node1's agent is refused node2's status.
async fn wait_policy_in_force(agent: &Api<NodeDatapath>) {
    let dry = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let patch = merge(json!({"status": {"heartbeat": "2000-01-01T00:00:00Z"}}));
    wait_for(
        "the agent policy to be in force",
        Duration::from_secs(30),
        || async {
            match agent.patch_status("node2", &dry, &patch).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
                _ => None,
            }
        },
    )
    .await
    .unwrap();
}

/// node1's agent may not touch node2's NodeDatapath, nor create others.
async fn assert_other_nodes_refused(agent: &Api<NodeDatapath>) {
    let pp = PatchParams::default();
    let not_node2 =
        "the switchyard agent on node node1 may write only NodeDatapath node1, not node2";
    let forged = json!({"status": {"heartbeat": "2000-01-01T00:00:00Z", "activeMode": "Active"}});
    let r = agent.patch_status("node2", &pp, &merge(forged)).await;
    assert_denied("node2's status", r, not_node2);
    let r = agent
        .patch("node2", &pp, &merge(json!({"spec": {"mode": "Active"}})))
        .await;
    assert_refused_by_rbac("node2's spec", r, "patch");
    let dry_create = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let r = agent
        .create(&dry_create, &NodeDatapath::new("node9", Default::default()))
        .await;
    assert_denied(
        "creating node9's",
        r,
        "may write only NodeDatapath node1, not node9",
    );
}

/// node1's agent may write its own status, create its own object with the
/// default spec only, and never its spec.
async fn assert_own_node_status_only(agent: &Api<NodeDatapath>) {
    let pp = PatchParams::default();
    let now = chrono::Utc::now();
    let heartbeat = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let own = agent
        .patch_status(
            "node1",
            &pp,
            &merge(json!({"status": {"heartbeat": heartbeat}})),
        )
        .await
        .expect("node1's agent writes node1's status");
    let written = own.status.unwrap().heartbeat.unwrap();
    assert_eq!(written.0.as_second(), now.timestamp());
    eprintln!("  node1's status: accepted");
    let r = agent
        .patch(
            "node1",
            &pp,
            &merge(json!({"spec": {"cleanup": {"generation": 99}}})),
        )
        .await;
    // The admission policy would refuse it too ("may write only the
    // status"); RBAC does first.
    assert_refused_by_rbac("node1's own spec", r, "patch");
    let dry_create = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let active = NodeDatapath::new(
        "node1",
        NodeDatapathSpec {
            mode: DatapathMode::Active,
            ..Default::default()
        },
    );
    let r = agent.create(&dry_create, &active).await;
    assert_denied(
        "creating node1's with mode Active",
        r,
        "only with the default spec",
    );
    // With the default spec the policy admits the create; storage then
    // finds node1's object there already.
    let plain = NodeDatapath::new("node1", Default::default());
    match agent.create(&dry_create, &plain).await {
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        other => panic!("creating node1's with the default spec: expected 409, got {other:?}"),
    }
}

/// A token of the agent's ServiceAccount that is not bound to a pod carries
/// no node: every write with it is refused.
async fn assert_unbound_token_refused(c: &Cluster) {
    let sas: Api<ServiceAccount> = Api::namespaced(c.client(), NS);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = sas
        .create_token_request("switchyard-agent", &PostParams::default(), &req)
        .await
        .unwrap();
    let token = out.status.unwrap().token;
    assert!(jwt_claims(&token).unwrap()["kubernetes.io"]["node"].is_null());
    let unbound: Api<NodeDatapath> = Api::all(client_with_token(c, &token).await.unwrap());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = unbound
        .patch_status(
            "node1",
            &PatchParams::default(),
            &merge(json!({"status": {"heartbeat": now}})),
        )
        .await;
    assert_denied(
        "node1's status with an unbound token",
        r,
        "must use a ServiceAccount token bound to its pod",
    );
}

/// The operator, with its own pod's token, still writes any node's spec.
async fn assert_operator_unaffected(c: &Cluster) {
    let operator = pod_of(c, "switchyard-operator", None).await;
    let api: Api<NodeDatapath> = Api::all(client_of(c, &operator).await);
    let patch = merge(json!({"spec": {"nodePortAddresses": {"localhost": true}}}));
    let out = api
        .patch("node2", &PatchParams::default(), &patch)
        .await
        .expect("the operator writes node2's spec");
    assert!(out.spec.node_port_addresses.unwrap().localhost);
    eprintln!("  the operator on node2's spec: accepted");
}

/// A cleanup request that reaches an agent whose datapath is off (a stale
/// spec, a new machine under a migrated node's name, a mistaken write) is
/// answered as refused and removes none of kube-proxy's rules.
async fn assert_cleanup_refused_while_off(c: &Cluster) {
    let api: Api<NodeDatapath> = Api::all(c.client());
    let patch = merge(json!({"spec": {"mode": "Off", "cleanup": {"generation": 41}}}));
    api.patch("node2", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let answer = wait_for(
        "node2's agent to answer the cleanup request",
        Duration::from_secs(30),
        || async {
            let d = api.get("node2").await.ok()?;
            d.status?.cleanup.filter(|r| r.observed_generation == 41)
        },
    )
    .await
    .unwrap();
    assert!(!answer.succeeded && answer.removed == 0, "{answer:?}");
    let message = answer.message.unwrap_or_default();
    assert!(message.contains("refused"), "{message}");
    let nat = c.iptables_save("node2", "nat").await.unwrap();
    assert!(nat.contains("KUBE-SERVICES"), "kube-proxy's rules stay");
    eprintln!("  a cleanup request with the datapath off: refused ({message})");
}

/// A line of a `/proc/<pid>/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
}

/// The `/proc/<pid>/status` and `/proc/<pid>/mountinfo` of `pod`'s
/// container, whose id is `switchyard-lab://<pid>`.
fn container_proc(pod: &Pod) -> (String, String) {
    let id = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let pid = id.trim_start_matches("switchyard-lab://");
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap();
    (read("status"), read("mountinfo"))
}

/// The lab runtime applied `config/`'s securityContexts: the agent holds
/// exactly CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW (bounding set included),
/// the operator none and runs as 65532 on a read-only root; both have
/// no-new-privileges and the RuntimeDefault seccomp filter.
async fn assert_pods_confined(c: &Cluster) {
    let agent = container_proc(&pod_of(c, "switchyard-agent", Some("node1")).await).0;
    let want: u64 = (1 << 39) | (1 << 12) | (1 << 13);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            status_field(&agent, set),
            format!("{want:016x}"),
            "agent {set}"
        );
    }
    let (operator, mounts) = container_proc(&pod_of(c, "switchyard-operator", None).await);
    for set in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&operator, set),
            "0000000000000000",
            "operator {set}"
        );
    }
    assert!(
        status_field(&operator, "Uid").starts_with("65532\t"),
        "{operator}"
    );
    for status in [&agent, &operator] {
        assert_eq!(status_field(status, "NoNewPrivs"), "1");
        assert_eq!(status_field(status, "Seccomp"), "2");
    }
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap();
    assert!(root.split(' ').nth(5).unwrap().starts_with("ro"), "{root}");
    // The root is the image's (the runtime's overlay of its layers).
    assert!(root.contains(" - overlay "), "{root}");
    eprintln!("  agent and operator confined as config/ says, in their images");
}

/// A pod of `template` (a workload's, as installed) named `name` in `ns`,
/// without its priority class (not what Pod Security judges).
fn pod_from(template: PodTemplateSpec, ns: &str, name: &str) -> Pod {
    let mut spec = template.spec.unwrap();
    spec.priority_class_name = None;
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

/// The API server's PodSecurity admission, in a namespace enforcing
/// `restricted`, admits the operator's pod as installed and refuses the
/// agent's (which is why `switchyard-system` enforces `privileged`).
async fn assert_pod_security_levels(c: &Cluster) {
    const CHECK: &str = "pod-security-check";
    let namespaces: Api<Namespace> = Api::all(c.client());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHECK,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}});
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let installed = namespaces.get(NS).await.unwrap().metadata.labels.unwrap();
    assert_eq!(
        installed["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let sas: Api<ServiceAccount> = Api::namespaced(c.client(), CHECK);
    for sa in ["switchyard-operator", "switchyard-agent"] {
        let obj = serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap();
        sas.create(&PostParams::default(), &obj).await.unwrap();
    }
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(c.client(), CHECK);
    let deployments: Api<Deployment> = Api::namespaced(c.client(), NS);
    let operator = deployments.get("switchyard-operator").await.unwrap();
    let pod = pod_from(operator.spec.unwrap().template, CHECK, "operator");
    pods.create(&dry, &pod)
        .await
        .expect("restricted admits the operator");
    let daemonsets: Api<DaemonSet> = Api::namespaced(c.client(), NS);
    let agent = daemonsets.get("switchyard-agent").await.unwrap();
    let pod = pod_from(agent.spec.unwrap().template, CHECK, "agent");
    match pods.create(&dry, &pod).await {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("violates PodSecurity") => {
            eprintln!("  the agent's pod under restricted: denied: {}", s.message);
        }
        other => panic!("the agent's pod under restricted: expected a denial, got {other:?}"),
    }
    eprintln!("  Pod Security: the operator meets restricted, the agent needs privileged");
}

/// node1's agent renews node1's Lease and no other node's (its RBAC grants
/// get and update; the admission policy narrows update to its own node).
async fn assert_own_lease_only(c: &Cluster, agent_pod: &Pod) {
    let leases: Api<Lease> = Api::namespaced(client_of(c, agent_pod).await, AGENT_LEASE_NAMESPACE);
    let r = renew(&leases, "node2").await;
    assert_denied_by(
        LEASE_POLICY,
        "renewing node2's Lease",
        r,
        "may create and renew only Lease node1, not node2",
    );
    // The agent renews its own Lease meanwhile: a conflict is retried.
    let mut own = renew(&leases, "node1").await;
    for _ in 0..3 {
        match &own {
            Err(kube::Error::Api(e)) if e.code == 409 => own = renew(&leases, "node1").await,
            _ => break,
        }
    }
    own.expect("node1's agent renews node1's Lease");
    eprintln!("  node1's Lease: renewed; node2's: denied");
}

/// Sets `renewTime` of Lease `name` to now, as the agent's update does.
async fn renew(leases: &Api<Lease>, name: &str) -> kube::Result<Lease> {
    let mut lease = leases.get(name).await?;
    if let Some(spec) = lease.spec.as_mut() {
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    }
    leases.replace(name, &PostParams::default(), &lease).await
}

#[tokio::test]
async fn an_agent_writes_only_its_own_node_datapath_status() {
    if skip_unless_root() {
        return;
    }
    let c = setup().await;
    let agent_pod = pod_of(&c, "switchyard-agent", Some("node1")).await;
    let agent: Api<NodeDatapath> = Api::all(client_of(&c, &agent_pod).await);
    wait_policy_in_force(&agent).await;
    assert_other_nodes_refused(&agent).await;
    assert_own_node_status_only(&agent).await;
    assert_own_lease_only(&c, &agent_pod).await;
    assert_unbound_token_refused(&c).await;
    assert_operator_unaffected(&c).await;
    assert_cleanup_refused_while_off(&c).await;
    assert_pods_confined(&c).await;
    assert_pod_security_levels(&c).await;
    c.teardown();
}
