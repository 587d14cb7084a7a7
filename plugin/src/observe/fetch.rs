//! `observe`'s I/O: the agent pods (the DaemonSet's label in its
//! namespace), and each one's `/v1/flows` through the API server's pod
//! proxy (`…/pods/<pod>:<port>/proxy/v1/flows?…`), so the plugin needs no
//! route to the nodes, only `get` on `pods/proxy` there.

use std::io::Write;

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span};

use super::{lost_warning, parse_line};
use crate::cli::ObserveArgs;
use crate::error::{Error, Result};

/// Where the agents run, and their pods' label (config/agent/daemonset.yaml).
pub const AGENT_NAMESPACE: &str = "switchyard-system";
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=switchyard-agent";
/// The agent's HTTP port when its pod does not name one `metrics`.
const DEFAULT_PORT: i32 = 9964;

/// One agent pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub pod: String,
    pub node: String,
    pub port: i32,
}

/// The running agents among `pods`, on `node` if given, by node name.
pub fn agents_of(pods: &[Pod], node: Option<&str>) -> Vec<Agent> {
    let mut out: Vec<Agent> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            let port = spec
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|cp| cp.name.as_deref() == Some("metrics"))
                .map_or(DEFAULT_PORT, |cp| cp.container_port);
            Some(Agent {
                pod: p.metadata.name.clone()?,
                node: spec.node_name.clone()?,
                port,
            })
        })
        .filter(|a| node.is_none_or(|n| n == a.node))
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// The agents to ask; an error when there is none.
pub async fn agents(client: &Client, node: Option<&str>) -> Result<Vec<Agent>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), AGENT_NAMESPACE);
    let pods = api
        .list(&ListParams::default().labels(AGENT_SELECTOR))
        .await?;
    let agents = agents_of(&pods.items, node);
    if agents.is_empty() {
        let on = node.map(|n| format!(" on node {n}")).unwrap_or_default();
        return Err(Error::NoAgents(on));
    }
    Ok(agents)
}

fn request(a: &Agent, query: &str) -> Result<http::Request<Vec<u8>>> {
    let path = format!(
        "/api/v1/namespaces/{AGENT_NAMESPACE}/pods/{}:{}/proxy/v1/flows?{query}",
        a.pod, a.port
    );
    http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| Error::Request(e.to_string()))
}

fn agent_error(a: &Agent, source: kube::Error) -> Error {
    Error::Agent {
        node: a.node.clone(),
        pod: a.pod.clone(),
        source,
    }
}

/// Every line of one agent's answer.
async fn flows_of(client: &Client, a: &Agent, query: &str) -> Result<Vec<Value>> {
    let text = client
        .request_text(request(a, query)?)
        .await
        .map_err(|e| agent_error(a, e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let v = parse_line(line).map_err(|e| Error::BadLine {
            node: a.node.clone(),
            source: e,
        })?;
        out.extend(v);
    }
    Ok(out)
}

/// Every agent's flows, asked at once (one answer a node, node order).
pub async fn once(
    client: &Client,
    agents: &[Agent],
    args: &ObserveArgs,
) -> Result<Vec<Vec<Value>>> {
    let q = super::query(args, Timestamp::now());
    let asks = agents.iter().map(|a| {
        let span = info_span!("flows", node = %a.node, pod = %a.pod);
        flows_of(client, a, &q).instrument(span)
    });
    futures::future::try_join_all(asks).await
}

/// Streams one agent's lines into `tx` until it or the receiver ends.
async fn stream(client: Client, a: Agent, query: String, tx: mpsc::Sender<Result<Value>>) {
    let req = match request(&a, &query) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let body = match client.request_stream(req).await {
        Ok(b) => b,
        Err(e) => {
            let _ = tx.send(Err(agent_error(&a, e))).await;
            return;
        }
    };
    let mut lines = Box::pin(body).lines();
    while let Some(line) = lines.next().await {
        let item = match line {
            Ok(l) => match parse_line(&l) {
                Ok(None) => continue,
                Ok(Some(v)) => Ok(v),
                Err(e) => Err(Error::BadLine {
                    node: a.node.clone(),
                    source: e,
                }),
            },
            Err(e) => Err(Error::Stream {
                node: a.node.clone(),
                source: e,
            }),
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
    debug!("the agent ended its answer");
}

/// Prints every agent's flows as they come (`print`: one parsed line)
/// until every agent's answer ends; an agent that fails is reported on
/// stderr and the others go on; the result is the first such failure.
/// `since`: when the command started (without `--last`, the flows from
/// then on are printed).
pub async fn follow(
    client: &Client,
    agents: &[Agent],
    args: &ObserveArgs,
    since: Timestamp,
    mut print: impl FnMut(&Value) -> std::io::Result<()>,
) -> Result<()> {
    let q = super::query(args, since);
    let (tx, mut rx) = mpsc::channel(256);
    for a in agents {
        let span = info_span!("follow", node = %a.node, pod = %a.pod);
        let task = stream(client.clone(), a.clone(), q.clone(), tx.clone());
        tokio::spawn(task.instrument(span));
    }
    drop(tx);
    let mut failed = None;
    while let Some(item) = rx.recv().await {
        match item {
            Ok(v) => {
                if let Some(w) = lost_warning(&v) {
                    eprintln!("{w}");
                }
                // A closed stdout (`| head`) ends the command quietly.
                if print(&v).is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Writes and flushes `text` on stdout.
pub fn write_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
