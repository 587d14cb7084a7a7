//! The node agent: BPF socket load balancer, map sync, kube-proxy cleanup, probes.
