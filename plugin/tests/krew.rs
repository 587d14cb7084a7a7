//! `config/krew/switchyard.yaml` installs this crate's binary at this
//! crate's version.

const MANIFEST: &str = include_str!("../../config/krew/switchyard.yaml");

#[test]
fn the_krew_manifest_names_this_binary_and_version() -> Result<(), serde_yaml::Error> {
    let m: serde_yaml::Value = serde_yaml::from_str(MANIFEST)?;
    assert_eq!(m["kind"], "Plugin");
    // kubectl runs `kubectl-<name>` as `kubectl <name>`.
    assert_eq!(m["metadata"]["name"], "switchyard");
    assert_eq!(
        m["spec"]["version"].as_str(),
        Some(format!("v{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let platforms = m["spec"]["platforms"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-switchyard", "{p:?}");
        let sha = p["sha256"].as_str().unwrap_or_default();
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        let uri = p["uri"].as_str().unwrap_or_default();
        assert!(
            uri.contains(&format!("/v{}/", env!("CARGO_PKG_VERSION"))),
            "{uri}"
        );
    }
    Ok(())
}
