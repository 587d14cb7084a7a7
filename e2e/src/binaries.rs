//! Locating the upstream programs and the crate's own helper binaries.
//!
//! The upstream programs come from `e2e/hack/build-k8s.sh`, which builds them
//! once per version into `~/.cache/switchyard/k8s/…/bin` and prints that
//! directory; a warm run only prints it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The Kubernetes version the tools module pins (kept in step with
/// `e2e/tools/go.mod` by `e2e/hack/gen-tools-mod.sh`).
pub const K8S_VERSION: &str = "v1.34.4";

/// Paths of every program the cluster runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Directory holding etcd, kube-apiserver, … , kubectl.
    pub k8s_bin: PathBuf,
    /// The test server behind the web server images.
    pub testserver: PathBuf,
    /// Where the project's own binaries are (`$CARGO_TARGET_DIR/debug`).
    pub project_bin: PathBuf,
}

impl Binaries {
    /// Finds (building if needed) every program. Honours
    /// `SWITCHYARD_K8S_BIN` (a ready bin dir) and `SWITCHYARD_TESTSERVER`.
    pub fn locate() -> Result<Self> {
        let k8s_bin = match std::env::var_os("SWITCHYARD_K8S_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => build_k8s()?,
        };
        let project_bin = project_bin_dir();
        let testserver = match std::env::var_os("SWITCHYARD_TESTSERVER") {
            Some(p) => PathBuf::from(p),
            None => project_bin.join("switchyard-testserver"),
        };
        if !testserver.is_file() {
            return Err(Error::Config(format!(
                "test server binary {} missing (cargo build -p switchyard-e2e)",
                testserver.display()
            )));
        }
        Ok(Self {
            k8s_bin,
            testserver,
            project_bin,
        })
    }

    /// Path of one upstream program.
    pub fn k8s(&self, name: &str) -> PathBuf {
        self.k8s_bin.join(name)
    }
}

/// The directory of the running executable's cargo profile (`target/debug`),
/// also when running from `target/debug/deps` (integration tests).
pub(crate) fn project_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWITCHYARD_PROJECT_BIN") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// This checkout's `e2e/` directory: `$SWITCHYARD_SOURCE/e2e` (the Makefile
/// sets it), else what `cargo test`/`cargo run` name at run time, else where
/// the binary was built. The shared target dir may hold a binary built from
/// another checkout, whose compile-time path can be gone. The crates built
/// on the lab (`e2e/scale`) run with their own manifest directory, below
/// this one: the nearest ancestor holding `e2e/hack` is the checkout.
pub fn e2e_dir() -> PathBuf {
    if let Some(root) = std::env::var_os("SWITCHYARD_SOURCE") {
        return PathBuf::from(root).join("e2e");
    }
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .ancestors()
        .find(|d| d.join("e2e/hack").is_dir())
        .map_or(manifest.clone(), |root| root.join("e2e"))
}

/// Runs `e2e/hack/host-setup.sh` (idempotent: mounts a cgroup v2
/// hierarchy and bpffs if missing) when no cgroup2 is mounted.
pub fn ensure_host_setup() -> Result<()> {
    if crate::sys::cgroup2_root().is_ok() {
        return Ok(());
    }
    let script = e2e_dir().join("hack/host-setup.sh");
    crate::sys::run(&script.display().to_string(), &[] as &[&str])?;
    crate::sys::cgroup2_root().map(|_| ())
}

/// Runs `e2e/hack/build-k8s.sh`, streaming its progress to stderr, and
/// returns the bin dir it prints.
pub fn build_k8s() -> Result<PathBuf> {
    run_build_script("build-k8s.sh")
}

/// Runs `e2e/hack/build-helm.sh` (Helm from its Go module, cached like the
/// Kubernetes programs) and returns the path of the `helm` binary.
pub fn build_helm() -> Result<PathBuf> {
    run_build_script("build-helm.sh")
}

/// Runs `e2e/hack/build-hubble.sh` (the Hubble CLI and relay from Cilium's
/// Go module, cached) and returns the directory holding both.
pub fn build_hubble() -> Result<PathBuf> {
    run_build_script("build-hubble.sh")
}

/// Runs `e2e/hack/build-prometheus.sh prometheus` (the Prometheus server
/// from its Go module, cached) and returns the path of the binary.
pub fn build_prometheus() -> Result<PathBuf> {
    run_build_script_with("build-prometheus.sh", &["prometheus"])
}

/// Runs one of `e2e/hack`'s build scripts, streaming its progress to
/// stderr, and returns the path it prints.
fn run_build_script(name: &str) -> Result<PathBuf> {
    run_build_script_with(name, &[])
}

/// [`run_build_script`] with arguments.
fn run_build_script_with(name: &str, args: &[&str]) -> Result<PathBuf> {
    let script = e2e_dir().join("hack").join(name);
    let out = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(Error::io("running", &script))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: script.display().to_string(),
            detail: format!("{}", out.status),
        });
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constant_matches_the_tools_module() {
        let gomod = std::fs::read_to_string(e2e_dir().join("tools/go.mod")).unwrap();
        let pinned = gomod
            .lines()
            .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes "))
            .map(str::trim)
            .unwrap();
        assert_eq!(
            pinned, K8S_VERSION,
            "regenerate with e2e/hack/gen-tools-mod.sh and update K8S_VERSION"
        );
    }
}
