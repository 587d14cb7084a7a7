//! Shared by the privileged test binaries: root and tool checks, and a network
//! namespace guard deleted on drop (also on panic).

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]
// Test helpers unwrap (clippy.toml only covers #[test] functions).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard_cleanup::Options;
use switchyard_testkit::netns::NetNs;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub use switchyard_testkit::{have, is_root};

/// Skips (with a printed reason) unless root and every tool is installed.
pub fn preconditions(test: &str, tools: &[&str]) -> bool {
    if !is_root() {
        switchyard_testkit::skip(test, "needs root (network namespaces, iptables)");
        return false;
    }
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        let why = format!("{t} is not installed (e2e/hack/install-deps.sh installs it)");
        switchyard_testkit::skip(test, &why);
        return false;
    }
    true
}

/// A network namespace that exists for the guard's lifetime.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME`).
    pub name: String,
    _guard: NetNs,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "sy-cl-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let guard = NetNs::add(&name).unwrap();
        Netns {
            name,
            _guard: guard,
        }
    }

    /// Runs a command in the namespace; panics with its stderr unless it succeeds.
    pub fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn options(&self) -> Options {
        Options {
            command_prefix: vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                self.name.clone(),
            ],
            ..Options::default()
        }
    }
}
