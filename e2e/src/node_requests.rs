//! `switchyard-lab node add|remove`: a node joins or leaves the running
//! cluster that a supervisor process owns. The command writes a request file
//! in the cluster's state directory (`node-requests/<id>.json`: the taints a
//! new node registers with, or the node to remove) and wakes the supervisor
//! with `SIGUSR1`; the supervisor acts and answers in `<id>.done` (`ok
//! <node>` or `error <why>`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// Effects a taint may have (as `kubectl taint` accepts them).
const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Parses `KEY[=VALUE]:EFFECT`, the form `kubectl taint` takes.
pub fn parse_taint(s: &str) -> Result<Taint> {
    let bad = |why: &str| Error::Config(format!("taint {s:?}: {why} (want KEY[=VALUE]:EFFECT)"));
    let (kv, effect) = s.rsplit_once(':').ok_or_else(|| bad("no effect"))?;
    if !EFFECTS.contains(&effect) {
        return Err(bad(&format!(
            "effect must be one of {}",
            EFFECTS.join(", ")
        )));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(bad("empty key"));
    }
    Ok(Taint {
        key: key.to_string(),
        value,
        effect: effect.to_string(),
        time_added: None,
    })
}

/// What the supervisor is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    /// A new machine joins, registering with these taints.
    Add { taints: Vec<Taint> },
    /// The machine of this node leaves.
    Remove { node: String },
}

fn requests_dir(state: &Path) -> PathBuf {
    state.join("node-requests")
}

fn answer_path(request: &Path) -> PathBuf {
    request.with_extension("done")
}

/// Writes `request`; returns where the answer will be.
pub fn submit(state: &Path, request: &Request) -> Result<PathBuf> {
    let dir = requests_dir(state);
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let id = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let file = dir.join(format!("{id}.json"));
    let partial = dir.join(format!("{id}.partial"));
    let body = serde_json::to_vec(request).map_err(|e| Error::Serde(e.to_string()))?;
    std::fs::write(&partial, body).map_err(Error::io("writing", &partial))?;
    std::fs::rename(&partial, &file).map_err(Error::io("writing", &file))?;
    Ok(answer_path(&file))
}

/// Waits for the supervisor's answer: the node's name.
pub fn wait_answer(answer: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(answer) {
            return match text.trim().split_once(' ') {
                Some(("ok", node)) => Ok(node.to_string()),
                _ => Err(Error::Config(text.trim().to_string())),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Error::Timeout {
        what: format!("the cluster's supervisor to answer ({})", answer.display()),
        seconds: timeout.as_secs(),
    })
}

/// Carries out every request not answered yet (the supervisor's side).
pub async fn serve(cluster: &mut Cluster) {
    let dir = requests_dir(cluster.state_dir());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let mut requests: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !answer_path(p).exists())
        .collect();
    requests.sort();
    for request in requests {
        let answer = match carry_out(cluster, &request).await {
            Ok(node) => format!("ok {node}\n"),
            Err(e) => format!("error {e}\n"),
        };
        if let Err(e) = std::fs::write(answer_path(&request), answer) {
            tracing::warn!(error = %e, request = %request.display(), "answering a node request");
        }
    }
}

async fn carry_out(cluster: &mut Cluster, request: &Path) -> Result<String> {
    let body = std::fs::read(request).map_err(Error::io("reading", request))?;
    let parsed: Request = serde_json::from_slice(&body)
        .map_err(|e| Error::Serde(format!("{}: {e}", request.display())))?;
    match parsed {
        Request::Add { taints } => Ok(cluster.add_node(&taints).await?.name),
        Request::Remove { node } => {
            cluster.remove_node(&node).await?;
            Ok(node)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_as_kubectl_writes_them() {
        let t = parse_taint("switchyard.dev/datapath-not-ready:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("switchyard.dev/datapath-not-ready", None, "NoSchedule")
        );
        let t = parse_taint("dedicated=infra:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref()),
            ("dedicated", Some("infra"))
        );
        for bad in ["nokey", "k:Sometimes", "=v:NoSchedule", ""] {
            assert!(parse_taint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_is_answered_once_and_the_answer_read_back() {
        let dir = std::env::temp_dir().join(format!("sy-node-req-{}", std::process::id()));
        let taints = vec![parse_taint("a:NoSchedule").unwrap()];
        let answer = submit(&dir, &Request::Add { taints }).unwrap();
        assert!(wait_answer(&answer, Duration::from_millis(200)).is_err());
        std::fs::write(&answer, "ok node4\n").unwrap();
        assert_eq!(
            wait_answer(&answer, Duration::from_secs(1)).unwrap(),
            "node4"
        );
        std::fs::write(&answer, "error at most 200 nodes\n").unwrap();
        let e = wait_answer(&answer, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("at most 200 nodes"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn requests_are_written_as_the_supervisor_reads_them() {
        let remove = Request::Remove {
            node: "node4".into(),
        };
        let text = serde_json::to_string(&remove).unwrap();
        assert_eq!(text, r#"{"remove":{"node":"node4"}}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), remove);
        assert!(serde_json::from_str::<Request>(r#"{"reboot":{}}"#).is_err());
    }
}
