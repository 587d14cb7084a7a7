//! The outside of the cluster: what sends north-south traffic to the nodes.
//!
//! - an external router namespace with a leg on the underlay bridge and one
//!   on the external clients' subnet (created by
//!   [`crate::network::create_outside`]);
//! - an external client namespace behind it, where external traffic runs as
//!   plain processes (not pods): [`traffic`] starts the load generator and
//!   the long-lived flows there;
//! - the lab's LoadBalancer implementation ([`lb`], pure core in
//!   [`model`]), a task of the lab torn down with it.

pub mod lb;
pub mod model;
pub mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::control_plane::Process;
use crate::error::{Error, Result};
use crate::request::{self, HttpResponse};
use crate::sys::{self, Cgroup, Placement};
use crate::topology::Plan;
use lb::LoadBalancer;

/// The running outside of a cluster.
#[derive(Debug)]
pub struct Outside {
    router_netns: String,
    client_netns: String,
    cgroup: Cgroup,
    dir: PathBuf,
    lb: LoadBalancer,
}

impl Outside {
    /// Starts the LoadBalancer over the namespaces [`crate::network::create_outside`]
    /// made; external processes go to `cgroup`, their files under
    /// `state/outside`.
    pub(crate) fn start(
        plan: &Plan,
        client: kube::Client,
        cgroup: Cgroup,
        state: &Path,
    ) -> Result<Self> {
        let dir = state.join("outside");
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        Ok(Self {
            router_netns: plan.router_netns.clone(),
            client_netns: plan.client_netns.clone(),
            cgroup,
            dir,
            lb: LoadBalancer::start(client, plan.router_netns.clone()),
        })
    }

    /// The lab's LoadBalancer.
    pub fn load_balancer(&self) -> &LoadBalancer {
        &self.lb
    }

    /// The external client's network namespace.
    pub fn client_netns(&self) -> PathBuf {
        sys::netns_path(&self.client_netns)
    }

    /// The router's network namespace.
    pub fn router_netns(&self) -> PathBuf {
        sys::netns_path(&self.router_netns)
    }

    /// Where external processes write their reports.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// HTTP GET from the external client.
    pub async fn http_get(&self, target: SocketAddr, path: &str) -> Result<HttpResponse> {
        request::http_get(self.client_netns(), target, path.to_string()).await
    }

    /// One UDP exchange from the external client.
    pub async fn udp_exchange(&self, target: SocketAddr, payload: &str) -> Result<String> {
        request::udp_exchange(self.client_netns(), target, payload.to_string()).await
    }

    /// Starts `program args` as a plain process in the external client's
    /// namespace (and the outside's cgroup, so teardown ends it), logging to
    /// `<dir>/<name>.log`.
    pub fn spawn(&self, program: &Path, args: &[String], name: &str) -> Result<Process> {
        let place = Placement {
            netns: Some(self.client_netns()),
            cgroup: Some(self.cgroup.path.clone()),
            ..Default::default()
        };
        Process::spawn(program, args, &place, self.dir.join(format!("{name}.log")))
    }
}
