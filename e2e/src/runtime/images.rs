//! Image → program mapping and command-line construction (pure).
//!
//! The runtime knows a fixed set of images; anything else is reported on
//! the pod as `UnknownImage`. Images are matched by repository (registry
//! and tag ignored, `docker.io/library/` normalised away). switchyard's own
//! images are real OCI images (`make images`) the runtime unpacks and runs
//! (see [`super::oci`] and [`super::rootfs`]); the others stand for host
//! programs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a container image runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageProgram {
    /// The built `kube-proxy`: the container's command and args are kept,
    /// with `command[0]` replaced by the binary.
    KubeProxy,
    /// The lab's test server, serving every declared container port; the
    /// container's command and args are ignored.
    WebServer,
    /// A binary of the project (`$CARGO_TARGET_DIR/debug/<name>`); the
    /// container's args are passed, `command[0]` is replaced.
    Binary(PathBuf),
    /// An OCI image layout: the container runs the image's own process in
    /// the image's root filesystem.
    Image(PathBuf),
}

/// The runtime's image table.
#[derive(Debug, Clone)]
pub struct ImageTable {
    entries: BTreeMap<String, ImageProgram>,
}

/// Web server images the demos and upstream e2e tests use.
pub const WEB_SERVER_IMAGES: [&str; 5] = [
    "nginx",
    "registry.k8s.io/e2e-test-images/agnhost",
    "httpd",
    "registry.k8s.io/echoserver",
    "hashicorp/http-echo",
];

impl ImageTable {
    /// The default table: kube-proxy, the web server images, and
    /// `switchyard/operator` / `switchyard/agent` mapped to
    /// `<project_bin>/switchyard-operator` and
    /// `<project_bin>/switchyard-agent`.
    pub fn with_defaults(project_bin: &Path) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            "registry.k8s.io/kube-proxy".to_string(),
            ImageProgram::KubeProxy,
        );
        for w in WEB_SERVER_IMAGES {
            entries.insert(w.to_string(), ImageProgram::WebServer);
        }
        entries.insert(
            "switchyard/operator".to_string(),
            ImageProgram::Binary(project_bin.join("switchyard-operator")),
        );
        entries.insert(
            "switchyard/agent".to_string(),
            ImageProgram::Binary(project_bin.join("switchyard-agent")),
        );
        Self { entries }
    }

    /// Adds or replaces the mapping for an image repository.
    pub fn insert(&mut self, repository: &str, program: ImageProgram) {
        self.entries.insert(normalize(repository), program);
    }

    /// The program for `image`, if known. `ghcr.io/x/switchyard/agent:v1`
    /// matches `switchyard/agent` (suffix match on path components).
    pub fn resolve(&self, image: &str) -> Option<&ImageProgram> {
        let repo = normalize(image);
        if let Some(p) = self.entries.get(&repo) {
            return Some(p);
        }
        self.entries
            .iter()
            .find(|(k, _)| repo.ends_with(&format!("/{k}")))
            .map(|(_, v)| v)
    }
}

/// Strips tag, digest and the Docker Hub default prefixes.
pub fn normalize(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' is a tag; one before it is a registry port.
    let repo = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    repo.trim_start_matches("docker.io/")
        .trim_start_matches("index.docker.io/")
        .trim_start_matches("library/")
        .to_string()
}

/// Expands `$(VAR)` references from `env` the way the kubelet does
/// (`$$(VAR)` escapes; unknown references stay as written).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Builds argv (program, args) for a container running a host program.
pub fn argv(
    program: &ImageProgram,
    kube_proxy: &Path,
    testserver: &Path,
    command: &[String],
    args: &[String],
    ports: &[(String, u16)],
    env: &[(String, String)],
) -> (PathBuf, Vec<String>) {
    let rest: Vec<String> = command
        .iter()
        .skip(1)
        .chain(args.iter())
        .map(|a| expand(a, env))
        .collect();
    match program {
        ImageProgram::KubeProxy => (kube_proxy.to_path_buf(), rest),
        ImageProgram::Binary(path) => (path.clone(), rest),
        // Not a host program: the image's config says what runs.
        ImageProgram::Image(_) => (PathBuf::new(), rest),
        ImageProgram::WebServer => {
            let mut a = Vec::new();
            for (proto, port) in ports {
                a.push(if proto == "UDP" {
                    "--udp".to_string()
                } else {
                    "--tcp".to_string()
                });
                a.push(port.to_string());
            }
            if ports.is_empty() {
                a.extend(["--tcp".to_string(), "80".to_string()]);
            }
            (testserver.to_path_buf(), a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ImageTable {
        ImageTable::with_defaults(Path::new("/t"))
    }

    #[test]
    fn resolves_by_repository_ignoring_registry_defaults_and_tags() {
        let t = table();
        assert_eq!(t.resolve("nginx:1.27"), Some(&ImageProgram::WebServer));
        assert_eq!(
            t.resolve("docker.io/library/nginx@sha256:abc"),
            Some(&ImageProgram::WebServer)
        );
        assert_eq!(
            t.resolve("registry.k8s.io/kube-proxy:v1.34.4"),
            Some(&ImageProgram::KubeProxy)
        );
        assert_eq!(
            t.resolve("ghcr.io/acme/switchyard/agent:dev"),
            Some(&ImageProgram::Binary(PathBuf::from("/t/switchyard-agent")))
        );
        assert_eq!(t.resolve("busybox"), None);
        assert_eq!(
            t.resolve("localhost:5000/nginx:1"),
            Some(&ImageProgram::WebServer)
        );
        assert_eq!(t.resolve("nginx-unprivileged"), None);
        assert_eq!(normalize("localhost:5000/nginx:1"), "localhost:5000/nginx");
    }

    #[test]
    fn expands_env_references_like_the_kubelet() {
        let env = vec![("NODE_NAME".to_string(), "node1".to_string())];
        assert_eq!(
            expand("--hostname-override=$(NODE_NAME)", &env),
            "--hostname-override=node1"
        );
        assert_eq!(
            expand("$$(NODE_NAME) $(MISSING) $x", &env),
            "$(NODE_NAME) $(MISSING) $x"
        );
    }

    #[test]
    fn kube_proxy_keeps_args_and_web_server_serves_ports() {
        let env = vec![("N".to_string(), "n1".to_string())];
        let (p, a) = argv(
            &ImageProgram::KubeProxy,
            Path::new("/bin/kp"),
            Path::new("/bin/ts"),
            &["/usr/local/bin/kube-proxy".into(), "--config=/c".into()],
            &["--hostname-override=$(N)".into()],
            &[],
            &env,
        );
        assert_eq!(p, PathBuf::from("/bin/kp"));
        assert_eq!(a, vec!["--config=/c", "--hostname-override=n1"]);
        let (p, a) = argv(
            &ImageProgram::WebServer,
            Path::new("/bin/kp"),
            Path::new("/bin/ts"),
            &["nginx".into()],
            &[],
            &[("TCP".into(), 80), ("UDP".into(), 5353)],
            &env,
        );
        assert_eq!(p, PathBuf::from("/bin/ts"));
        assert_eq!(a, vec!["--tcp", "80", "--udp", "5353"]);
    }
}
