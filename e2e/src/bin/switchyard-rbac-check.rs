//! `switchyard-rbac-check`: after the e2e scenarios (`make e2e` runs it),
//! compares what `config/rbac` grants switchyard's identities with the
//! requests they made in every scenario (the records each cluster wrote
//! from its API server's audit log, see `switchyard_e2e::audit`). Fails on
//! a request RBAC refused (`403`) and on a granted rule no request
//! exercised. Needs the records of every scenario (`e2e/tests/*.rs`): with
//! fewer (a single test run by hand) it says so and checks only the 403s.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use switchyard_e2e::audit::authorizer::read_yaml_dir;
use switchyard_e2e::audit::{Request, rbac, records};
use switchyard_e2e::binaries::e2e_dir;
use switchyard_e2e::{Error, Result};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("switchyard-rbac-check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The scenarios: the files of `e2e/tests`.
fn scenarios(tests: &Path) -> Result<BTreeSet<String>> {
    let entries = std::fs::read_dir(tests).map_err(Error::io("reading", tests))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect())
}

fn run() -> Result<bool> {
    let e2e = e2e_dir();
    let dir = records::dir();
    let (seen, reqs) = records::read(&dir)?;
    let forbidden: Vec<&Request> = reqs.iter().filter(|r| r.forbidden()).collect();
    for r in &forbidden {
        println!("refused: {r}");
    }
    let expected = scenarios(&e2e.join("tests"))?;
    let missing: Vec<_> = expected.difference(&seen).collect();
    if !missing.is_empty() {
        println!(
            "rbac check: no records of {missing:?} in {} (run every e2e scenario, `make e2e`): \
             unused grants not checked; {} refused request(s)",
            dir.display(),
            forbidden.len()
        );
        return Ok(forbidden.is_empty());
    }
    let root = e2e.parent().unwrap_or(&e2e).to_path_buf();
    let grants = rbac::grants(&read_yaml_dir(&root.join("config/rbac"))?)?;
    let unused = rbac::unused(&grants, &reqs);
    let (allowed, unused): (Vec<_>, Vec<_>) = unused
        .into_iter()
        .partition(|g| rbac::allowed_unused(g).is_some());
    for g in &allowed {
        println!(
            "unused, allowed: {g} ({})",
            rbac::allowed_unused(g).unwrap_or_default()
        );
    }
    for g in &unused {
        println!("unused grant: {g}");
    }
    // Informational: another role (a default one) may allow these.
    for r in rbac::ungranted(&grants, &reqs) {
        println!("allowed, but by no rule of config/rbac: {r}");
    }
    println!(
        "rbac check over {} scenario(s): {} grant(s), {} request record(s), {} unused, {} refused",
        seen.len(),
        grants.len(),
        reqs.len(),
        unused.len(),
        forbidden.len()
    );
    Ok(unused.is_empty() && forbidden.is_empty())
}
