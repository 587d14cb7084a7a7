//! The lab's audit log of the switchyard identities, and the record files
//! an e2e run shares: each cluster, at teardown, writes its identities'
//! requests (compact, deduplicated [`Request`]s, one JSON per line) to
//! `<dir>/<scenario>.<cluster>.jsonl`, where `<scenario>` is the test
//! binary (`e2e/tests/<scenario>.rs`) and `<dir>` is [`dir`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Request, policy, requests};
use crate::error::{Error, Result};

/// The audit log in a cluster's state directory.
pub fn log_path(state: &Path) -> PathBuf {
    state.join("audit.log")
}

/// Writes the audit policy into `state` and returns the kube-apiserver
/// flags that log to [`log_path`] (JSON lines, written before each
/// response: blocking mode, the default; never rotated).
pub fn apiserver_args(state: &Path) -> Result<Vec<String>> {
    let policy_file = state.join("audit-policy.yaml");
    std::fs::write(&policy_file, policy()).map_err(Error::io("writing", &policy_file))?;
    Ok(vec![
        format!("--audit-policy-file={}", policy_file.display()),
        format!("--audit-log-path={}", log_path(state).display()),
        "--audit-log-format=json".into(),
        "--audit-log-mode=blocking".into(),
        "--audit-log-maxsize=0".into(),
    ])
}

/// Where the run's records go: `$SWITCHYARD_E2E_AUDIT_DIR`, else
/// `e2e-audit` next to the binaries (`$CARGO_TARGET_DIR/debug/e2e-audit`).
pub fn dir() -> PathBuf {
    match std::env::var_os("SWITCHYARD_E2E_AUDIT_DIR") {
        Some(d) => PathBuf::from(d),
        None => crate::binaries::project_bin_dir().join("e2e-audit"),
    }
}

/// The scenario a test binary runs: its file stem without cargo's
/// `-<hash>` (`target/debug/deps/migration-0123abcd` → `migration`).
pub fn scenario_of(exe: &Path) -> String {
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// Reads cluster `name`'s audit log from `state` and writes its records
/// into [`dir`]; returns them.
pub fn record(state: &Path, name: &str) -> Result<Vec<Request>> {
    let log = log_path(state);
    let text = match std::fs::read_to_string(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("reading", &log)(e)),
    };
    let reqs = requests(text.lines());
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = dir();
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let file = dir.join(format!("{}.{name}.jsonl", scenario_of(&exe)));
    let mut body = String::new();
    for r in &reqs {
        let line = serde_json::to_string(r).map_err(|e| Error::Serde(e.to_string()))?;
        body.push_str(&line);
        body.push('\n');
    }
    std::fs::write(&file, body).map_err(Error::io("writing", &file))?;
    Ok(reqs)
}

/// Every record in `dir`, and the scenarios that wrote them.
pub fn read(dir: &Path) -> Result<(BTreeSet<String>, Vec<Request>)> {
    let mut scenarios = BTreeSet::new();
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((scenarios, out)),
        Err(e) => return Err(Error::io("reading", dir)(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some((scenario, _)) = file.strip_suffix(".jsonl").and_then(|f| f.split_once('.'))
        else {
            continue;
        };
        scenarios.insert(scenario.to_string());
        let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r = serde_json::from_str(line)
                .map_err(|e| Error::Serde(format!("{}: {e}", path.display())))?;
            out.push(r);
        }
    }
    out.sort();
    out.dedup();
    Ok((scenarios, out))
}
