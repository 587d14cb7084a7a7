//! Finding the API server without the `kubernetes` ClusterIP (which the
//! agent's own datapath serves once kube-proxy is gone).
//!
//! In order: an explicit address (`SWITCHYARD_API_SERVER`, e.g. a
//! node-local proxy such as Talos KubePrism), then the endpoints the
//! operator keeps in the ConfigMap `switchyard-api-endpoints`, which the
//! DaemonSet mounts (the kubelet delivers it without the agent asking the
//! API), then the in-cluster environment (the ClusterIP: works while
//! kube-proxy still serves it, i.e. on a brand-new install before the
//! operator has written the list). Each is tried in turn; TLS and the token
//! are the ServiceAccount's, as in-cluster. Once connected, the client
//! follows the endpoints ([`failover`]).

mod failover;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
use switchyard_lb::SliceView;
use tracing::{info, warn};

use crate::error::Error;

pub use failover::{Failover, Learned};

/// Where the DaemonSet mounts the ConfigMap `switchyard-api-endpoints`.
pub const ENDPOINTS_FILE: &str = "/etc/switchyard/api-endpoints/endpoints";

/// The endpoints in the mounted file: `host:port` one a line (blank lines
/// and `#` comments skipped), in their order, without repeats.
pub fn parse(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || out.iter().any(|e| e == line) {
            continue;
        }
        out.push(line.to_string());
    }
    out
}

/// The addresses to try, in order: the explicit one alone if set, else the
/// mounted endpoints, then the in-cluster address.
pub fn candidates(
    explicit: Option<&str>,
    mounted: &[String],
    in_cluster: Option<String>,
) -> Vec<String> {
    if let Some(addr) = explicit.map(str::trim).filter(|a| !a.is_empty()) {
        return vec![addr.to_string()];
    }
    let mut out = mounted.to_vec();
    if let Some(addr) = in_cluster.filter(|a| !out.contains(a)) {
        out.push(addr);
    }
    out
}

/// The endpoint to try after `current` failed: the next one in `list`
/// (wrapping) that has not failed; `None` when all have.
pub fn next_after<'a>(list: &'a [String], current: &str, failed: &[String]) -> Option<&'a str> {
    let start = list.iter().position(|e| e == current).map_or(0, |i| i + 1);
    (0..list.len())
        .map(|k| &list[(start + k) % list.len()])
        .find(|e| !failed.contains(e))
        .map(String::as_str)
}

/// `host:port` of the in-cluster environment, IPv6 hosts bracketed.
pub fn in_cluster(host: Option<String>, port: Option<String>) -> Option<String> {
    let host = host.filter(|h| !h.is_empty())?;
    let port = port
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "443".into());
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The in-cluster address from the environment the kubelet sets.
fn in_cluster_env() -> Option<String> {
    in_cluster(
        std::env::var("KUBERNETES_SERVICE_HOST").ok(),
        std::env::var("KUBERNETES_SERVICE_PORT").ok(),
    )
}

/// The API server endpoints in the `default/kubernetes` EndpointSlice:
/// `ip:port` of each ready endpoint, the port named `https` (else the
/// first), sorted.
pub fn slice_endpoints(slice: &SliceView) -> Vec<String> {
    let port = slice
        .ports
        .iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .or_else(|| slice.ports.first())
        .and_then(|p| p.port);
    let Some(port) = port else {
        return Vec::new();
    };
    let mut out: Vec<String> = slice
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .map(|e| format!("{}:{port}", e.ip))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn read_mounted(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// A client of the endpoint `addr` alone.
fn client_for(base: &kube::Config, addr: &str) -> Result<kube::Client, Error> {
    let mut config = base.clone();
    config.cluster_url = format!("https://{addr}")
        .parse()
        .map_err(|e| Error::Config(format!("API server address {addr}: {e}")))?;
    kube::Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

async fn try_endpoint(base: &kube::Config, addr: &str) -> Result<kube::Client, Error> {
    let client = client_for(base, addr)?;
    client
        .apiserver_version()
        .await
        .map_err(|e| Error::ApiUnreachable(format!("{addr}: {e}")))?;
    Ok(client)
}

/// The agent's client: on the first candidate that answers, then moving
/// between the endpoints as they fail ([`Failover`]), except with an
/// explicit address, which is the only one used.
pub async fn connect(
    base: &kube::Config,
    explicit: Option<&str>,
    file: &Path,
    learned: Learned,
    rounds: u32,
) -> Result<kube::Client, Error> {
    let explicit = explicit.map(str::trim).filter(|a| !a.is_empty());
    let (mut addr, mut client) = first_answering(base, explicit, file, rounds).await?;
    if explicit.is_some() {
        return Ok(client);
    }
    if Some(&addr) == in_cluster_env().as_ref()
        && let Some((direct, direct_client)) = direct_from(&client, base).await
    {
        (addr, client) = (direct, direct_client);
    }
    let failover = Failover::new(base.clone(), file.to_path_buf(), learned, addr, client);
    Ok(kube::Client::new(failover, base.default_namespace.clone()))
}

/// Connected through the in-cluster address (the ClusterIP): a direct
/// endpoint that answers, asked of the API now, before the agent's watches
/// open their long-lived connections through the ClusterIP.
async fn direct_from(client: &kube::Client, base: &kube::Config) -> Option<(String, kube::Client)> {
    let lp = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&lp)
        .await
        .inspect_err(|e| warn!(error = %e, "cannot read the API server's endpoints"))
        .ok()?;
    for addr in slices
        .items
        .iter()
        .flat_map(|s| slice_endpoints(&SliceView::from(s)))
    {
        match try_endpoint(base, &addr).await {
            Ok(direct) => {
                info!(api_server = %addr, "connected to the API server directly");
                return Some((addr, direct));
            }
            Err(e) => warn!(api_server = %addr, error = %e, "API server endpoint failed"),
        }
    }
    None
}

/// The first candidate that answers, and its client. The mounted file is
/// read again each round (the kubelet refreshes it once the operator
/// writes it); after `rounds` rounds without an answer, the last failure.
async fn first_answering(
    base: &kube::Config,
    explicit: Option<&str>,
    file: &Path,
    rounds: u32,
) -> Result<(String, kube::Client), Error> {
    let in_cluster = in_cluster_env();
    let mut last = Error::ApiUnreachable("no API server address known".into());
    for round in 0..rounds.max(1) {
        let list = candidates(explicit, &read_mounted(file), in_cluster.clone());
        if list.is_empty() {
            warn!(file = %file.display(), "no API server address yet: the operator has not published switchyard-api-endpoints and SWITCHYARD_API_SERVER is unset");
        }
        let mut failed: Vec<String> = Vec::new();
        let mut next = list.first().map(String::as_str);
        while let Some(addr) = next {
            match try_endpoint(base, addr).await {
                Ok(client) => {
                    info!(api_server = addr, "connected to the API server");
                    return Ok((addr.to_string(), client));
                }
                Err(e) => {
                    warn!(api_server = addr, error = %e, "API server endpoint failed; trying the next");
                    last = e;
                }
            }
            failed.push(addr.to_string());
            next = next_after(&list, addr, &failed);
        }
        if round + 1 < rounds {
            tokio::time::sleep(Duration::from_secs(2u64 << round.min(4))).await;
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_file_is_one_endpoint_a_line() {
        let text = "10.0.0.1:6443\n\n# comment\n 10.0.0.2:6443 \n10.0.0.1:6443\n";
        assert_eq!(parse(text), s(&["10.0.0.1:6443", "10.0.0.2:6443"]));
    }

    #[test]
    fn an_explicit_address_is_the_only_candidate() {
        let got = candidates(
            Some("127.0.0.1:7445"),
            &s(&["10.0.0.1:6443"]),
            Some("10.96.0.1:443".into()),
        );
        assert_eq!(got, s(&["127.0.0.1:7445"]));
    }

    #[test]
    fn the_mounted_endpoints_come_before_the_cluster_ip() {
        let got = candidates(
            Some(" "),
            &s(&["10.0.0.1:6443", "10.0.0.2:6443"]),
            Some("10.96.0.1:443".into()),
        );
        assert_eq!(got, s(&["10.0.0.1:6443", "10.0.0.2:6443", "10.96.0.1:443"]));
    }

    #[test]
    fn before_the_list_exists_the_cluster_ip_is_the_fallback() {
        assert_eq!(
            candidates(None, &[], Some("10.96.0.1:443".into())),
            s(&["10.96.0.1:443"])
        );
        assert!(candidates(None, &[], None).is_empty());
    }

    #[test]
    fn a_dead_endpoint_fails_over_to_the_next_live_one() {
        let list = s(&["a:1", "b:1", "c:1"]);
        assert_eq!(next_after(&list, "a:1", &s(&["a:1"])), Some("b:1"));
        assert_eq!(next_after(&list, "b:1", &s(&["a:1", "b:1"])), Some("c:1"));
        assert_eq!(next_after(&list, "c:1", &s(&["c:1"])), Some("a:1"));
        assert_eq!(next_after(&list, "b:1", &s(&["b:1", "c:1"])), Some("a:1"));
        assert_eq!(next_after(&list, "c:1", &list), None);
        assert_eq!(next_after(&list, "gone:1", &[]), Some("a:1"));
    }

    #[test]
    fn the_in_cluster_address_brackets_ipv6() {
        assert_eq!(
            in_cluster(Some("10.96.0.1".into()), Some("443".into())).as_deref(),
            Some("10.96.0.1:443")
        );
        assert_eq!(
            in_cluster(Some("fd00::1".into()), None).as_deref(),
            Some("[fd00::1]:443")
        );
        assert_eq!(in_cluster(None, Some("443".into())), None);
    }

    #[test]
    fn the_kubernetes_slice_gives_its_ready_endpoints_on_the_https_port() {
        use k8s_openapi::api::discovery::v1::{
            Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
        };
        let endpoint = |ip: &str, ready: bool| Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        };
        let port = |name: &str, port: i32| EndpointPort {
            name: Some(name.into()),
            port: Some(port),
            ..EndpointPort::default()
        };
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![
                endpoint("10.0.0.2", true),
                endpoint("10.0.0.9", false),
                endpoint("10.0.0.1", true),
            ],
            ports: Some(vec![port("metrics", 9000), port("https", 6443)]),
            ..EndpointSlice::default()
        };
        assert_eq!(
            slice_endpoints(&SliceView::from(&slice)),
            s(&["10.0.0.1:6443", "10.0.0.2:6443"])
        );
        let no_ports = EndpointSlice {
            ports: None,
            ..slice
        };
        assert!(slice_endpoints(&SliceView::from(&no_ports)).is_empty());
    }
}
