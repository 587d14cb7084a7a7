//! North-south: which of the node's interfaces run the ingress program,
//! and the kernel state that program relies on.
//!
//! The ingress program serves NodePort, ExternalIP, LoadBalancer and
//! ClusterIP traffic that arrives from outside the node. It attaches to the
//! interfaces that hold the Node's InternalIP/ExternalIP or a NodePort
//! address (where that traffic arrives), unless `--ingress-interfaces` names
//! them. It hands each new flow to the kernel's conntrack NAT, which
//! translates only while the network namespace has connection tracking and
//! NAT hooks registered:
//! [`ensure_conntrack_hooks`] keeps them (the cleanup's keepalive table),
//! whatever kube-proxy's rules held before.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The interfaces among `local` (name, IPv4 address) that hold one of the
/// node's `addresses`, in `local`'s order, each once. Never the loopback
/// interface (also when it holds a node address, as BGP setups do): what
/// arrives there comes from the node itself, which the socket programs
/// serve.
pub fn interfaces_of(addresses: &[Ipv4Addr], local: &[(String, Ipv4Addr)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, addr) in local {
        if name != "lo" && addresses.contains(addr) && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// This network namespace's IPv4 addresses by interface (`getifaddrs`).
pub fn local_addresses() -> std::io::Result<Vec<(String, Ipv4Addr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: a non-null ifa_addr points at a sockaddr of its family.
        let family = (!ifa.ifa_addr.is_null()).then(|| unsafe { (*ifa.ifa_addr).sa_family });
        if family != Some(libc::AF_INET as libc::sa_family_t) {
            continue;
        }
        // SAFETY: AF_INET addresses are sockaddr_in; ifa_name is a C string.
        let (sin, name) = unsafe {
            (
                &*(ifa.ifa_addr as *const libc::sockaddr_in),
                std::ffi::CStr::from_ptr(ifa.ifa_name),
            )
        };
        let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        out.push((name.to_string_lossy().into_owned(), addr));
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Keeps connection tracking and the NAT hooks registered in this network
/// namespace (idempotent `nft -f -` of the keepalive table).
pub fn ensure_conntrack_hooks() -> Result<()> {
    let script = switchyard_cleanup::nft::keepalive_script();
    let err = |detail: String| Error::Config(format!("nft -f - (conntrack keepalive): {detail}"));
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interfaces_holding_node_addresses_are_chosen_once_each() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED);
        let local = vec![
            ("lo".to_string(), ip("127.0.0.1")),
            ("eth0".to_string(), ip("172.31.255.11")),
            ("cbr0".to_string(), ip("10.244.1.1")),
            ("eth1".to_string(), ip("203.0.113.9")),
            ("eth0".to_string(), ip("172.31.255.99")),
            ("lo".to_string(), ip("198.51.100.7")),
        ];
        let node = [
            ip("172.31.255.11"),
            ip("203.0.113.9"),
            ip("172.31.255.99"),
            ip("198.51.100.7"),
            ip("127.0.0.1"),
        ];
        assert_eq!(interfaces_of(&node, &local), ["eth0", "eth1"]);
        assert!(interfaces_of(&[ip("192.0.2.1")], &local).is_empty());
    }

    #[test]
    fn this_namespace_lists_its_loopback() {
        let local = local_addresses().unwrap_or_default();
        assert!(
            local
                .iter()
                .any(|(n, a)| n == "lo" && *a == Ipv4Addr::LOCALHOST),
            "{local:?}"
        );
    }
}
