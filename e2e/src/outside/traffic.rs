//! External traffic: `switchyard-loadgen` (a new connection per request)
//! and `switchyard-flows` (long-lived TCP and UDP flows) as plain processes
//! in the external client's namespace, and their totals.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Outside;
use crate::cluster::{wait_for, wait_for_growth};
use crate::control_plane::Process;
use crate::error::{Error, Result};
use crate::load::{LoadReport, Totals, read_report};

/// A process writing a JSON report to `out` until `<out>.stop` appears.
#[derive(Debug)]
struct Reporter {
    process: Process,
    out: PathBuf,
}

impl Reporter {
    fn start(outside: &Outside, program: &Path, mut args: Vec<String>, name: &str) -> Result<Self> {
        let out = outside.dir().join(format!("{name}.json"));
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(out.with_extension("stop"));
        args.extend(["--out".into(), out.display().to_string()]);
        let process = outside.spawn(program, &args, name)?;
        Ok(Self { process, out })
    }

    fn read<T: DeserializeOwned>(&self) -> Result<T> {
        read_report(&self.out)
    }

    /// Fails (with its log) if the process has exited.
    fn check(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// Asks the process to stop and returns its final report.
    async fn stop<T: DeserializeOwned>(mut self, running: impl Fn(&T) -> bool) -> Result<T> {
        self.check()?;
        let stop = self.out.with_extension("stop");
        std::fs::write(&stop, "").map_err(Error::io("writing", &stop))?;
        wait_for(
            &format!("the final report in {}", self.out.display()),
            Duration::from_secs(30),
            || async { self.read::<T>().ok().filter(|r| !running(r)).map(drop) },
        )
        .await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.process.child.wait()).await;
        self.read()
    }
}

/// `switchyard-loadgen` in the external client's namespace.
#[derive(Debug)]
pub struct ExternalLoad {
    reporter: Reporter,
}

/// Starts the load generator against `targets` (`tcp://IP:PORT`,
/// `udp://IP:PORT`) at `rate` requests per second each, and waits until
/// every target answered once.
pub async fn start_load(
    outside: &Outside,
    loadgen: &Path,
    targets: &[String],
    rate: u32,
) -> Result<ExternalLoad> {
    let mut args: Vec<String> = targets
        .iter()
        .flat_map(|t| ["--target".to_string(), t.clone()])
        .collect();
    args.extend(["--rate".into(), rate.to_string()]);
    let mut load = ExternalLoad {
        reporter: Reporter::start(outside, loadgen, args, "external-load")?,
    };
    wait_for(
        "the external load generator to succeed once on every target",
        Duration::from_secs(60),
        || async {
            let all = load.totals().ok()?;
            (all.len() == targets.len() && all.iter().all(|t| t.ok > 0)).then_some(())
        },
    )
    .await?;
    load.reporter.check()?;
    Ok(load)
}

impl ExternalLoad {
    /// The current totals per target.
    pub fn totals(&self) -> Result<Vec<Totals>> {
        let r: LoadReport = self.reporter.read()?;
        Ok(r.targets
            .into_iter()
            .map(|t| Totals {
                pod: "external-client".into(),
                ..t
            })
            .collect())
    }

    /// Waits until every target has had `n` more requests than now.
    pub async fn wait_for_more(&self, n: u64) -> Result<()> {
        wait_for_growth(
            &format!("{n} more external requests to every target"),
            n,
            || self.totals(),
            |t: &Totals| t.ok + t.failed,
        )
        .await
    }

    /// Stops the generator and returns its final totals.
    pub async fn stop(self) -> Result<Vec<Totals>> {
        let r: LoadReport = self.reporter.stop(|r: &LoadReport| r.running).await?;
        Ok(r.targets
            .into_iter()
            .map(|t| Totals {
                pod: "external-client".into(),
                ..t
            })
            .collect())
    }
}

/// One long-lived flow's totals.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct FlowTotals {
    /// `tcp://IP:PORT` or `udp://IP:PORT`.
    pub target: String,
    /// Messages sent.
    pub sent: u64,
    /// Messages answered in time.
    pub answered: u64,
    /// Messages without an answer in time.
    pub lost: u64,
    /// Connections (TCP) or sockets (UDP) opened; 1 for an unbroken flow.
    pub connections: u64,
    /// Every backend pod that answered, in order of first answer.
    pub backends: Vec<String>,
    /// Answers from another backend than the answer before.
    pub backend_changes: u64,
    /// The last few errors.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct FlowReport {
    running: bool,
    flows: Vec<FlowTotals>,
}

/// `switchyard-flows` in the external client's namespace.
#[derive(Debug)]
pub struct Flows {
    reporter: Reporter,
}

/// Opens one TCP flow (HTTP keep-alive) to `tcp` and one UDP flow to `udp`,
/// a message every 100 ms each, and waits until both were answered.
pub async fn start_flows(
    outside: &Outside,
    program: &Path,
    tcp: SocketAddr,
    udp: SocketAddr,
) -> Result<Flows> {
    let args = vec![
        "--tcp".into(),
        tcp.to_string(),
        "--udp".into(),
        udp.to_string(),
        "--interval-ms".into(),
        "100".into(),
    ];
    let mut flows = Flows {
        reporter: Reporter::start(outside, program, args, "external-flows")?,
    };
    wait_for(
        "both long-lived flows to be answered",
        Duration::from_secs(30),
        || async {
            let all = flows.totals().ok()?;
            (all.len() == 2 && all.iter().all(|f| f.answered > 0)).then_some(())
        },
    )
    .await?;
    flows.reporter.check()?;
    Ok(flows)
}

impl Flows {
    /// The current totals per flow.
    pub fn totals(&self) -> Result<Vec<FlowTotals>> {
        Ok(self.reporter.read::<FlowReport>()?.flows)
    }

    /// Waits until every flow has sent `n` more messages than now.
    pub async fn wait_for_more(&self, n: u64) -> Result<()> {
        wait_for_growth(
            &format!("{n} more messages on every long-lived flow"),
            n,
            || self.totals(),
            |f: &FlowTotals| f.sent,
        )
        .await
    }

    /// Stops the flows and returns their final totals.
    pub async fn stop(self) -> Result<Vec<FlowTotals>> {
        Ok(self.reporter.stop(|r: &FlowReport| r.running).await?.flows)
    }
}
