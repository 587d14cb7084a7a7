//! `make demo`: a live migration off kube-proxy on the local real cluster.
//!
//! Starts 3 nodes with kube-proxy (iptables mode) and the outside of the
//! cluster (an external client behind a router, the lab's LoadBalancer),
//! deploys the classic nginx Services with client traffic from every node,
//! and NodePort and LoadBalancer Services with external traffic from the
//! external client (every node's NodePort, the LoadBalancer IPs), installs
//! switchyard from `config/`, applies a MigrationPlan and shows its
//! progress live (per-node steps, requests ok/failed inside and from
//! outside), prints each node's `iptables -t nat -L KUBE-SERVICES` before
//! and after, the flows, and the operator's web view as a real browser
//! shows it (a screenshot); then a machine joins the cluster, now off kube-proxy: the
//! plan migrates it before any pod may run there, and a pod scheduled
//! there at once fails no request. Tears everything down.

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::Taint;
use serde_json::json;
use switchyard_api::{MigrationPlan, Phase, STARTUP_TAINT};
use switchyard_e2e::browser::{Browser, KubectlProxy, WEB_VIEW};
use switchyard_e2e::ingress;
use switchyard_e2e::load;
use switchyard_e2e::outside::traffic::{self, ExternalLoad};
use switchyard_e2e::scenario::{self, Load, Target, Totals};
use switchyard_e2e::{Cluster, ClusterConfig, ProxyMode};

#[derive(Debug, Parser)]
struct Args {
    /// kube-proxy mode to migrate from.
    #[arg(long, default_value = "iptables")]
    proxy_mode: ProxyMode,
    /// Requests per second per Service from each node.
    #[arg(long, default_value_t = 25)]
    rate: u32,
}

fn step(n: u32, what: &str) {
    println!("\n\x1b[1m[{n}/7] {what}\x1b[0m");
}

async fn show_rules(c: &Cluster, when: &str) {
    for n in &c.plan().nodes {
        println!(
            "--- {}: iptables -t nat -L KUBE-SERVICES -n ({when})",
            n.name
        );
        let out = c
            .exec_on_node(
                &n.name,
                &["iptables", "-t", "nat", "-L", "KUBE-SERVICES", "-n"],
            )
            .await;
        match out {
            Ok(out) if out.status.success() => {
                for line in String::from_utf8_lossy(&out.stdout).lines().take(12) {
                    println!("    {line}");
                }
            }
            // iptables 1.8.9 (nft) reports a chain that does not exist as
            // "incompatible"; say what it means.
            Ok(_) => match c.iptables_save(&n.name, "nat").await {
                Ok(save) if !save.contains(":KUBE-SERVICES") => println!(
                    "    (no KUBE-SERVICES chain: kube-proxy's rules are gone; the eBPF datapath serves every Service)"
                ),
                Ok(save) => println!("    {save}"),
                Err(e) => println!("    ({e})"),
            },
            Err(e) => println!("    ({e})"),
        }
    }
}

fn sums(totals: &[Totals]) -> (u64, u64) {
    (
        totals.iter().map(|x| x.ok).sum(),
        totals.iter().map(|x| x.failed).sum(),
    )
}

fn table(p: &MigrationPlan, load: &Load, external: &ExternalLoad) {
    let Some(s) = &p.status else { return };
    let (ok, failed) = load.totals().map(|t| sums(&t)).unwrap_or_default();
    let (ext_ok, ext_failed) = external.totals().map(|t| sums(&t)).unwrap_or_default();
    println!(
        "  phase {:<11} migrated {:<5} requests ok {ok:<6} failed {failed:<4} external ok {ext_ok:<6} failed {ext_failed}",
        format!("{:?}", s.phase),
        s.summary.progress
    );
    for n in &s.expanded().nodes {
        println!(
            "    {:<8} wave {}  {:<20} {}",
            n.name,
            n.wave,
            format!("{:?}", n.step),
            n.message.as_deref().unwrap_or("")
        );
    }
}

/// The client traffic inside the cluster and from outside it.
struct Traffic {
    targets: Vec<Target>,
    load: Load,
    external: ExternalLoad,
}

async fn run(args: Args) -> Result<(), String> {
    let started = Instant::now();
    let bins = switchyard_e2e::binaries::Binaries::locate().map_err(|e| e.to_string())?;
    let mut c = start_cluster(&args, &bins, started).await?;
    let traffic = start_traffic(&c, &args, &bins).await?;
    install(&c).await?;
    let (plan, secs) = migrate(&c, &traffic).await?;
    let targets = traffic.targets.clone();
    let mut failed = result(&c, traffic, secs).await?;
    if plan.status.as_ref().is_some_and(|s| s.kube_proxy_deleted) {
        failed += join(&mut c, &targets, args.rate).await?;
    }

    step(7, "tearing down");
    let phase = plan.status.map(|s| s.phase);
    c.teardown();
    println!("  done in {:.1}s total", started.elapsed().as_secs_f64());
    if phase != Some(Phase::Succeeded) || failed > 0 {
        return Err(format!(
            "the migration ended {phase:?} with {failed} failed requests"
        ));
    }
    Ok(())
}

/// Step 1: the 3-node cluster with kube-proxy and the outside.
async fn start_cluster(
    args: &Args,
    bins: &switchyard_e2e::binaries::Binaries,
    started: Instant,
) -> Result<Cluster, String> {
    step(
        1,
        &format!(
            "starting the local cluster: 3 nodes, kube-proxy in {} mode",
            args.proxy_mode.as_str()
        ),
    );
    let c = Cluster::start(ClusterConfig {
        nodes: 3,
        proxy_mode: args.proxy_mode,
        images: Some(scenario::images(&bins.project_bin).map_err(|e| e.to_string())?),
        outside: true,
        rbac_audit: false,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "  ready in {:.1}s; kubeconfig {}",
        started.elapsed().as_secs_f64(),
        c.kubeconfig().display()
    );
    Ok(c)
}

/// Step 2: the workload and its Services, traffic from every node and from
/// the external client; the rules before.
async fn start_traffic(
    c: &Cluster,
    args: &Args,
    bins: &switchyard_e2e::binaries::Binaries,
) -> Result<Traffic, String> {
    step(
        2,
        "deploying nginx (2 replicas), its Services and NodePort/LoadBalancer Services; starting client traffic from every node and from outside",
    );
    let targets = scenario::deploy_workload(c)
        .await
        .map_err(|e| e.to_string())?;
    for t in &targets {
        println!("  {:<10} {}", t.service, t.url());
    }
    let load = scenario::start_load(c, &targets, args.rate)
        .await
        .map_err(|e| e.to_string())?;
    println!("  {} req/s to each Service from each of 3 nodes", args.rate);
    let ingress = ingress::deploy_ingress(c)
        .await
        .map_err(|e| e.to_string())?;
    let outside = c.outside().map_err(|e| e.to_string())?;
    let external = traffic::start_load(
        outside,
        &bins.project_bin.join("switchyard-loadgen"),
        &ingress.load_targets(),
        args.rate,
    )
    .await
    .map_err(|e| e.to_string())?;
    println!(
        "  from the external client ({}): NodePort {} (TCP) and {} (UDP) on every node, LoadBalancer IPs {} (eTP=Local) and {} (eTP=Cluster), {} req/s each",
        switchyard_e2e::topology::CLIENT_IP,
        ingress.node_port,
        ingress.udp_node_port,
        ingress.lb_local.ip,
        ingress.lb_cluster.ip,
        args.rate
    );
    show_rules(c, "before").await;
    Ok(Traffic {
        targets,
        load,
        external,
    })
}

/// Step 3: switchyard from `config/`.
async fn install(c: &Cluster) -> Result<(), String> {
    step(
        3,
        "installing switchyard: kubectl apply -k config/ (operator + agents)",
    );
    scenario::install(c).await.map_err(|e| e.to_string())?;
    println!(
        "{}",
        scenario::kubectl(c, &["get", "nodedatapaths"])
            .await
            .map_err(|e| e.to_string())?
    );
    Ok(())
}

/// Step 4: the MigrationPlan, followed live until it settles; returns it
/// and the seconds it took.
async fn migrate(c: &Cluster, traffic: &Traffic) -> Result<(MigrationPlan, f64), String> {
    step(
        4,
        "applying MigrationPlan leave-kube-proxy (canary 1 node, then waves of 1)",
    );
    scenario::apply_plan(c, json!({"apiVersion": "switchyard.dev/v1alpha1", "kind": "MigrationPlan",
        "metadata": {"name": "leave-kube-proxy"},
        "spec": {"strategy": {"canaryNodes": 1, "waveSize": 1},
          "verification": {"probes": [{"name": "nginx", "service": {"namespace": "default", "name": "nginx"}, "port": 80, "protocol": "TCP", "httpPath": "/"}]},
          "failurePolicy": {"action": "Rollback"}}}))
    .await
    .map_err(|e| e.to_string())?;
    let migration = Instant::now();
    let plan = scenario::follow_plan(
        c,
        "leave-kube-proxy",
        Duration::from_secs(600),
        |p| table(p, &traffic.load, &traffic.external),
        scenario::settled,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok((plan, migration.elapsed().as_secs_f64()))
}

/// Step 5: the plan, the traffic's totals, the rules after; returns the
/// failed requests inside and from outside.
async fn result(c: &Cluster, traffic: Traffic, secs: f64) -> Result<u64, String> {
    step(5, "result");
    println!(
        "{}",
        scenario::kubectl(c, &["get", "migrationplan"])
            .await
            .map_err(|e| e.to_string())?
    );
    let totals = traffic.load.stop(c).await.map_err(|e| e.to_string())?;
    let external = traffic.external.stop().await.map_err(|e| e.to_string())?;
    for t in totals.iter().chain(&external) {
        println!("  {:<24} ok {:<6} failed {}", t.target, t.ok, t.failed);
    }
    let (ok, failed) = sums(&totals);
    let (ext_ok, ext_failed) = sums(&external);
    let outside = c.outside().map_err(|e| e.to_string())?;
    let take_outs = outside.load_balancer().take_outs().len();
    println!(
        "  migration took {secs:.1}s; {} requests in all, {failed} failed; from outside {} requests, {ext_failed} failed; the LoadBalancer's health checks took {take_outs} node(s) out",
        ok + failed,
        ext_ok + ext_failed
    );
    show_rules(c, "after").await;
    show_flows(c).await;
    show_web_view(c).await;
    println!(
        "{}",
        scenario::kubectl(c, &["-n", "kube-system", "get", "daemonsets,configmaps"])
            .await
            .map_err(|e| e.to_string())?
    );
    Ok(failed + ext_failed)
}

/// The connections each node's datapath reported as flows (the agent's
/// `/metrics`; the flows themselves are served through the Hubble Observer
/// API on the node's 127.0.0.1:4244).
async fn show_flows(c: &Cluster) {
    println!(
        "--- flows the eBPF datapath reported (Hubble Observer API on each node's 127.0.0.1:4244)"
    );
    for n in &c.plan().nodes {
        let got = c.http_get_from_node(&n.name, n.ip, 9964, "/metrics").await;
        let text = got.map(|r| r.body).unwrap_or_default();
        let count = |verdict: &str| {
            let key = format!("switchyard_agent_flows_total{{verdict=\"{verdict}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&key))
                .map_or_else(|| "?".to_string(), str::to_string)
        };
        println!(
            "    {}: {} forwarded, {} dropped",
            n.name,
            count("forwarded"),
            count("dropped")
        );
    }
    println!(
        "--- kubectl switchyard observe --last 5 (every node's agent, through the API server)"
    );
    let plugin = c.binaries().project_bin.join("kubectl-switchyard");
    let out = tokio::process::Command::new(&plugin)
        .args(["observe", "--last", "5", "--kubeconfig"])
        .arg(c.kubeconfig())
        .output()
        .await;
    match out {
        Ok(o) => print!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("    {}: {e}", plugin.display()),
    }
}

/// The operator's web view as a browser shows it now: a real headless
/// Chromium through `kubectl proxy`, saved as a PNG (nothing else of the
/// demo depends on it).
async fn show_web_view(c: &Cluster) {
    let png = std::env::temp_dir().join("switchyard-demo-web-view.png");
    println!("--- the web view: kubectl proxy, then open http://127.0.0.1:8001{WEB_VIEW}");
    match screenshot_web_view(c, &png).await {
        Ok(()) => println!("    as a browser shows it now: {}", png.display()),
        Err(e) => println!("    (no screenshot: {e})"),
    }
}

async fn screenshot_web_view(c: &Cluster, png: &std::path::Path) -> switchyard_e2e::Result<()> {
    let proxy = KubectlProxy::start(c).await?;
    let mut browser = Browser::launch(&c.state_dir().join("chromium")).await?;
    let tab = browser.open(&format!("{}{WEB_VIEW}", proxy.url)).await?;
    // A few rounds of asking: the flows and the nodes' step timings are in.
    let polled = "Number(document.body.dataset.polls || 0) >= 3";
    browser
        .wait_until(&tab, polled, Duration::from_secs(30))
        .await?;
    browser.screenshot(&tab, png).await
}

/// Step 6: a machine joins the cluster now off kube-proxy, registered with
/// the startup taint; a client pod the scheduler puts there at once runs
/// when the succeeded plan has migrated the node. Returns its failed
/// requests.
async fn join(c: &mut Cluster, targets: &[Target], rate: u32) -> Result<u64, String> {
    step(
        6,
        "a machine joins: node4 registers with the taint switchyard.dev/datapath-not-ready:NoSchedule, a client pod is created for it at once",
    );
    let registered = Instant::now();
    let taint = Taint {
        key: STARTUP_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    let node = c.add_node(&[taint]).await.map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(240);
    let load = load::start_load_scheduled(c, targets, rate, &node.name, timeout)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "  {}: migrated by the succeeded plan, taint lifted, its pod's first requests served {:.1}s after it registered",
        node.name,
        registered.elapsed().as_secs_f64()
    );
    load.wait_for_more(u64::from(rate) * 2)
        .await
        .map_err(|e| e.to_string())?;
    let totals = load.stop(c).await.map_err(|e| e.to_string())?;
    for t in &totals {
        println!("  {:<24} ok {:<6} failed {}", t.target, t.ok, t.failed);
    }
    println!(
        "{}",
        scenario::kubectl(c, &["get", "nodes,nodedatapaths"])
            .await
            .map_err(|e| e.to_string())?
    );
    Ok(sums(&totals).1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
