//! `kubectl switchyard` run as users run it: the lab's real kubectl finds
//! `kubectl-switchyard` on `PATH` (the workspace's build dir) and hands it
//! the rest of the line.

use std::time::Instant;

use switchyard_api::{MigrationPlan, Phase};
use switchyard_e2e::Cluster;

/// `kubectl switchyard <args> --kubeconfig <admin>`. The kubeconfig flag
/// comes after the plugin's name: kubectl only looks for a plugin named by
/// the words before the first flag.
pub fn kubectl_switchyard_command(c: &Cluster, args: &[&str]) -> tokio::process::Command {
    let bins = c.binaries();
    let path = std::env::join_paths(
        [bins.project_bin.clone(), bins.k8s_bin.clone()]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(bins.k8s("kubectl"));
    cmd.arg("switchyard")
        .args(args)
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .env("PATH", path)
        .kill_on_drop(true);
    cmd
}

/// Runs `kubectl switchyard <args>`; returns the exit status's success,
/// stdout and stderr.
pub async fn kubectl_switchyard(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = kubectl_switchyard_command(c, args).output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// After a plan succeeded: `status` shows every node Done, `-o json` is the
/// plan as the API has it, `nodes` lists every node with its datapath
/// active and its agent alive, and a missing plan exits non-zero.
pub async fn assert_plugin_reports_success(c: &Cluster, plan: &str, api: &MigrationPlan) {
    let started = Instant::now();
    let (ok, table, err) = kubectl_switchyard(c, &["status", plan]).await;
    assert!(ok, "kubectl switchyard status {plan}: {err}");
    eprintln!("  kubectl switchyard status {plan}:\n{table}");
    assert!(
        table.starts_with(&format!("{plan}: Succeeded, 3/3 migrated")),
        "{table}"
    );
    for n in &c.plan().nodes {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(n.name.as_str()))
            .unwrap_or_else(|| panic!("{} missing from\n{table}", n.name));
        assert_eq!(line.split_whitespace().nth(2), Some("Done"), "{line}");
    }

    let (ok, json, err) = kubectl_switchyard(c, &["status", plan, "-o", "json"]).await;
    assert!(ok, "{err}");
    let shown: MigrationPlan = serde_json::from_str(&json).unwrap();
    let phase = |p: &MigrationPlan| p.status.as_ref().map(|s| s.phase);
    assert_eq!(phase(&shown), Some(Phase::Succeeded));
    assert_eq!(phase(&shown), phase(api));
    assert_eq!(shown.metadata.uid, api.metadata.uid);

    let (ok, nodes, err) = kubectl_switchyard(c, &["nodes"]).await;
    assert!(ok, "kubectl switchyard nodes: {err}");
    eprintln!("  kubectl switchyard nodes:\n{nodes}");
    let (ok, json, err) = kubectl_switchyard(c, &["nodes", "-o", "json"]).await;
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(rows.len(), c.plan().nodes.len(), "{json}");
    for row in &rows {
        assert_eq!(row["mode"], "Active", "{row}");
        assert_eq!(row["activeMode"], "Active", "{row}");
        assert_eq!(row["agentAlive"], true, "{row}");
        assert_eq!(row["servicesProgrammed"], row["servicesSeen"], "{row}");
        assert!(
            nodes.contains(row["name"].as_str().unwrap_or("?")),
            "{nodes}"
        );
    }

    let (ok, _, err) = kubectl_switchyard(c, &["status", "no-such-plan"]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: migrationplan \"no-such-plan\" not found"
    );
    eprintln!(
        "  kubectl switchyard: 5 runs in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}
