//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while building, starting, using or tearing
/// down the local cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper program (ip, openssl, the build script, …) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The API server returned an error.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The admin kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A manifest or config could not be (de)serialized.
    #[error("serialization: {0}")]
    Serde(String),
    /// Something did not happen within its deadline.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// A started program exited while it was expected to run.
    #[error("{program} exited early ({status}); log: {log}")]
    Exited {
        /// Which program.
        program: String,
        /// Its exit status.
        status: String,
        /// Where its output went.
        log: PathBuf,
    },
    /// Another lab cluster with this name is already running.
    #[error("a lab cluster named {name} is already running (supervisor pid {pid})")]
    AlreadyRunning {
        /// The cluster name.
        name: String,
        /// Its supervisor.
        pid: i32,
    },
    /// A node or pod the caller named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A request made from inside a namespace failed or was malformed.
    #[error("request {what}: {detail}")]
    Request {
        /// The request.
        what: String,
        /// Why it failed.
        detail: String,
    },
    /// The caller passed an invalid option.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<switchyard_testkit::Timeout> for Error {
    fn from(t: switchyard_testkit::Timeout) -> Self {
        Error::Timeout {
            what: t.what,
            seconds: t.seconds,
        }
    }
}

impl Error {
    /// Wraps an I/O error with the operation and path.
    pub fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    /// Wraps an errno with a description.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }
}
