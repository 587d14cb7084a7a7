//! How commands run: a small trait so the shell can be pointed at another network
//! namespace (a prefix such as `ip netns exec NS`) or replaced by a fake in tests.

use crate::Error;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The result of a finished command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

/// Runs the node's networking tools.
pub trait CommandRunner: std::fmt::Debug {
    /// Whether `program` is installed (looked up like a shell would).
    fn has_program(&self, program: &str) -> bool;

    /// Runs `program args…`, feeding `stdin` if given, and waits for it.
    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, Error>;

    /// Runs and turns a non-zero exit into [`Error::CommandFailed`].
    fn run_ok(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, Error> {
        let out = self.run(program, args, stdin)?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(Error::CommandFailed {
                command: format!("{program} {}", args.join(" ")),
                status: out
                    .code
                    .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}")),
                stderr: out.stderr.trim().to_string(),
            })
        }
    }
}

/// Runs commands on this machine, optionally behind a prefix such as
/// `["ip", "netns", "exec", "node-1"]` (the commands then act in that namespace).
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    prefix: Vec<String>,
}

/// Directories searched besides `$PATH` (the iptables tools live in sbin).
const EXTRA_PATH: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

impl SystemRunner {
    /// Runs commands in the current network namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every command as `prefix… program args…`.
    pub fn with_prefix(prefix: Vec<String>) -> Self {
        SystemRunner { prefix }
    }

    /// Runs every command inside the named network namespace (`ip netns exec NAME`).
    pub fn in_netns(name: &str) -> Self {
        Self::with_prefix(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            name.into(),
        ])
    }
}

fn find_program(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(EXTRA_PATH.iter().copied())
        .filter(|d| !d.is_empty())
        .any(|d| Path::new(d).join(program).is_file())
}

impl CommandRunner for SystemRunner {
    fn has_program(&self, program: &str) -> bool {
        find_program(program) && self.prefix.first().is_none_or(|p| find_program(p))
    }

    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, Error> {
        let (exe, rest): (&str, Vec<&str>) = match self.prefix.split_first() {
            Some((first, more)) => {
                let mut v: Vec<&str> = more.iter().map(String::as_str).collect();
                v.push(program);
                v.extend(args.iter().map(String::as_str));
                (first.as_str(), v)
            }
            None => (program, args.iter().map(String::as_str).collect()),
        };
        tracing::debug!(program = exe, args = ?rest, "running");
        let spawn_err = |source| Error::Spawn {
            program: program.to_string(),
            source,
        };
        let mut child = Command::new(exe)
            .args(&rest)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(input.as_bytes()).map_err(spawn_err)?;
        }
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(CommandOutput {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_stdin_and_reports_failure() {
        let r = SystemRunner::new();
        assert!(r.has_program("sh"));
        assert!(!r.has_program("definitely-not-a-tool-xyz"));
        let out = r
            .run("sh", &["-c".into(), "cat; echo err >&2".into()], Some("hi"))
            .unwrap();
        assert!(out.success);
        assert_eq!(out.stdout, "hi");
        assert_eq!(out.stderr, "err\n");
        let e = r
            .run_ok("sh", &["-c".into(), "exit 3".into()], None)
            .unwrap_err();
        assert!(matches!(e, Error::CommandFailed { ref status, .. } if status == "exit 3"));
        let missing = r.run("definitely-not-a-tool-xyz", &[], None).unwrap_err();
        assert!(matches!(missing, Error::Spawn { .. }));
    }

    #[test]
    fn prefix_is_prepended() {
        let r = SystemRunner::with_prefix(vec!["env".into(), "FOO=bar".into()]);
        let out = r
            .run("sh", &["-c".into(), "echo $FOO".into()], None)
            .unwrap();
        assert_eq!(out.stdout, "bar\n");
    }
}
