//! Finds and removes exactly what kube-proxy leaves behind (iptables nft/legacy, nftables, ipvs).
