/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * switchyard load balancer: map layouts shared by the BPF programs and the
 * agent. THIS FILE IS THE SOURCE OF TRUTH for every key/value layout; the
 * Rust mirror lives in node-datapath/abi/src/lib.rs and asserts the sizes.
 *
 * Design (after Cilium's lb4 maps): a service frontend (VIP, port, proto) owns
 * slot 0, the master entry, holding the backend count and the rev-NAT id;
 * slots 1..=count map to backend ids. Writers update backends, then slots,
 * then the master, then delete orphans, so a reader never sees a
 * half-written service. All addresses and ports are in network byte order.
 *
 * A ClusterIP also gets a VIP marker entry {address, dport 0, slot 0, proto 0}
 * (value all zero): a lookup miss on a port that is not a service port then
 * finds the marker, counts SY_CNT_DROP_UNKNOWN_PORT and is refused.
 *
 * How the programs read these maps:
 * - scope SY_SCOPE_NODE holds every frontend with the backends that apply
 *   to clients on this node (node-local ones for internalTrafficPolicy:
 *   Local); the socket programs (sock_lb.h) look up nothing else;
 * - the ingress program (nodeport.h) serves packets that arrive from
 *   outside the node for a NodePort, ExternalIP or LoadBalancer frontend.
 *   It reads the same SY_SCOPE_NODE master; where external clients get
 *   other backends than local ones (externalTrafficPolicy: Local, which
 *   kube-proxy does not apply to traffic from the node itself) the master
 *   carries SY_SVC_F_INGRESS_SCOPE and the external clients' master and
 *   slots live under SY_SCOPE_INGRESS;
 * - a LoadBalancer frontend with loadBalancerSourceRanges carries
 *   SY_SVC_F_SOURCE_RANGES on its SY_SCOPE_NODE master, and its ranges
 *   sit at slots 1..=n of the same frontend under SY_SCOPE_SOURCE_RANGE,
 *   one a slot, in the value: backend_id = the network (network byte
 *   order), count = the prefix length, the end marked by a missing slot;
 *   the ingress program admits an external client only from one of them
 *   (at most SY_SOURCE_RANGES_MAX are looked at);
 * - every frontend needs its rev-NAT entry (sy_revnat_v4[rev_nat_index] =
 *   frontend address and port): recvmsg4/getpeername4 restore the frontend
 *   only while it matches, so stale socket entries are never applied;
 * - sessionAffinity is keyed by the client's network-namespace cookie (all
 *   host-network processes share one) and checked against the frontend's
 *   slots (the first 256) before reuse.
 */
#ifndef SWITCHYARD_LB_H
#define SWITCHYARD_LB_H

#include <linux/types.h>

#define SY_SVC_MAP_NAME "sy_svc_v4"
#define SY_BACKEND_MAP_NAME "sy_backend_v4"
#define SY_REVNAT_MAP_NAME "sy_revnat_v4"
#define SY_SOCK_REVNAT_MAP_NAME "sy_sock_rnat4"
#define SY_AFFINITY_MAP_NAME "sy_affinity4"
#define SY_COUNTERS_MAP_NAME "sy_counters"
#define SY_HEALTH_SOCKS_MAP_NAME "sy_health_socks"
#define SY_EVENTS_MAP_NAME "sy_events"
#define SY_EVENTS_LOST_MAP_NAME "sy_events_lost"
#define SY_CONFIG_MAP_NAME "sy_config"
#define SY_EVENTS_RATE_MAP_NAME "sy_events_rate"

/* Default capacities; the loader may override max_entries. */
#define SY_SVC_MAP_MAX 524288
#define SY_BACKEND_MAP_MAX 524288
#define SY_REVNAT_MAP_MAX 65536
#define SY_SOCK_REVNAT_MAP_MAX 262144
#define SY_AFFINITY_MAP_MAX 65536
#define SY_HEALTH_SOCKS_MAX 1024 /* :10256 and every healthCheckNodePort */
#define SY_EVENTS_RING_BYTES 262144 /* sy_events: a power of 2, whole pages */

/* sy_svc_key.scope */
#define SY_SCOPE_NODE 0    /* clients on this node: every frontend */
#define SY_SCOPE_INGRESS 1 /* clients outside it, where they differ */
#define SY_SCOPE_SOURCE_RANGE 2 /* loadBalancerSourceRanges of a frontend */

/* sy_svc_value.flags */
#define SY_SVC_F_CLUSTER_IP (1 << 0)
#define SY_SVC_F_NODEPORT (1 << 1)
#define SY_SVC_F_EXTERNAL_IP (1 << 2)
#define SY_SVC_F_LOADBALANCER (1 << 3)
#define SY_SVC_F_AFFINITY (1 << 4)  /* sessionAffinity: ClientIP */
#define SY_SVC_F_LOCAL_ONLY (1 << 5) /* slots hold node-local endpoints only */
#define SY_SVC_F_INGRESS_SCOPE (1 << 6) /* external clients: see SY_SCOPE_INGRESS */
#define SY_SVC_F_SOURCE_RANGES (1 << 7) /* external clients: see SY_SCOPE_SOURCE_RANGE */

/* The most loadBalancerSourceRanges of one frontend the datapath enforces. */
#define SY_SOURCE_RANGES_MAX 64

/* sy_backend.flags */
#define SY_BACKEND_F_TERMINATING (1 << 0) /* serving but terminating */

struct sy_svc_key {
	__be32 address;       /* frontend IPv4 address */
	__be16 dport;         /* frontend port */
	__u16 backend_slot;   /* 0 = master entry, 1..=count = backends */
	__u8 proto;           /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 scope;           /* SY_SCOPE_* */
	__u8 pad[2];
};                            /* 12 bytes */

struct sy_svc_value {
	__u32 backend_id;      /* slot > 0: the backend; master: 0 */
	__u16 count;           /* master: number of backend slots */
	__u16 rev_nat_index;   /* rev-NAT id of this frontend */
	__u8 flags;            /* SY_SVC_F_* (master) */
	__u8 pad;
	__u16 pad2;
	__u32 affinity_timeout; /* master, SY_SVC_F_AFFINITY: seconds */
};                             /* 16 bytes */

struct sy_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;            /* SY_BACKEND_F_* */
};                             /* 8 bytes; key: __u32 backend id */

struct sy_rev_nat {
	__be32 address;        /* frontend address to restore */
	__be16 port;           /* frontend port to restore */
	__u16 pad;
};                             /* 8 bytes; key: __u16 rev-NAT id */

struct sy_sock_key {
	__u64 cookie;          /* socket cookie */
	__be32 address;        /* backend address */
	__be16 port;           /* backend port */
	__u16 pad;
};                             /* 16 bytes */

struct sy_sock_rev_nat {
	__be32 address;        /* frontend address */
	__be16 port;           /* frontend port */
	__u16 rev_nat_index;
};                             /* 8 bytes */

struct sy_affinity_key {
	__u64 client_cookie;   /* netns cookie of a local client; for an external
	                        * one SY_AFFINITY_EXTERNAL | its IPv4 address */
	__u16 rev_nat_index;   /* the frontend */
	__u16 pad;
	__u32 pad2;
};                             /* 16 bytes */

/* Marks an external client's address in sy_affinity_key.client_cookie (netns
 * cookies are small counters, never this large). */
#define SY_AFFINITY_EXTERNAL (1ULL << 63)

struct sy_affinity_value {
	__u64 last_used_ns;    /* bpf_ktime_get_ns() of the last use */
	__u32 backend_id;
	__u32 pad;
};                             /* 16 bytes */

/* Index into the per-CPU sy_counters array (__u64 values). */
enum sy_counter {
	SY_CNT_CONNECT_TRANSLATED = 0, /* connect4 rewrote to a backend */
	SY_CNT_SENDMSG_TRANSLATED = 1, /* sendmsg4 rewrote to a backend */
	SY_CNT_RECVMSG_REVNAT = 2,     /* recvmsg4 restored the frontend */
	SY_CNT_PEERNAME_REVNAT = 3,    /* getpeername4 restored the frontend */
	SY_CNT_DROP_NO_BACKEND = 4,    /* service has zero usable backends */
	SY_CNT_DROP_BACKEND_MISSING = 5, /* slot points at an absent backend */
	SY_CNT_DROP_SLOT_MISSING = 6,  /* master count > slots present */
	SY_CNT_SOCK_REVNAT_FULL = 7,   /* sock rev-NAT update failed */
	SY_CNT_AFFINITY_HIT = 8,       /* session affinity reused a backend */
	SY_CNT_DROP_UNKNOWN_PORT = 9,  /* known ClusterIP, port not a service port */
	SY_CNT_INGRESS_TRANSLATED = 10, /* ingress: new flow handed to conntrack NAT */
	SY_CNT_INGRESS_TRACKED = 11,   /* ingress: flow conntrack already tracks, passed */
	SY_CNT_INGRESS_UNTRACKED = 12, /* ingress: mid-flow TCP packet nobody tracks, passed */
	SY_CNT_DROP_NO_LOCAL_BACKEND = 13, /* ingress, eTP=Local: no endpoint on this node */
	SY_CNT_DROP_CT_FAILED = 14,    /* ingress: conntrack entry not created */
	SY_CNT_INGRESS_FRAGMENT = 15,  /* ingress: IPv4 fragment after the first, passed to reassembly */
	SY_CNT_INGRESS_CT_CLASH = 16,  /* ingress: reply tuple taken, SNAT port drawn anew */
	SY_CNT_INGRESS_REOPENED = 17,  /* ingress: SYN on a tracked tuple, entry expired */
	SY_CNT_DROP_SOURCE_RANGE = 18, /* ingress: source outside loadBalancerSourceRanges */
	SY_CNT_MAX = 19,
};

/*
 * Flow events. connect4 and sendmsg4 report what they did with a frontend
 * through the ring buffer sy_events, one struct sy_flow_event a record:
 * every translated connect(), an unconnected UDP socket's first sendto()
 * of a frontend to a backend (later datagrams of that pair are one flow:
 * its sy_sock_rnat4 entry already exists), and every refusal. The tc
 * ingress program reports each new flow from outside the node it
 * translates or drops, with the client's address instead of a socket. A record
 * that does not fit (the agent fell behind) is counted in the per-CPU
 * sy_events_lost[0] instead, so a loss is never silent. The sy_counters
 * counters do not depend on events. A record wakes the reader only once a
 * quarter of the ring waits; the reader also drains on a short timer.
 *
 * sy_config[0] switches them: SY_CFG_F_EVENTS_OFF set = no events. An
 * array map starts zeroed, so events are on unless the agent turns them
 * off. Its events_per_sec limits the events each CPU may emit: a token
 * bucket per CPU (sy_events_rate) holding at most one second's worth; an
 * event over the limit is counted there as shed (0: no limit), so a flood
 * of connects cannot flood the agent and no event goes uncounted.
 */
#define SY_CFG_F_EVENTS_OFF (1 << 0)

struct sy_config {
	__u32 flags;           /* SY_CFG_F_* */
	__u32 events_per_sec;  /* per CPU; 0: no limit */
};                             /* 8 bytes; key: __u32 0 */

struct sy_events_rate {
	__u64 last_ns;         /* when tokens were last added */
	__u64 tokens;          /* events this CPU may still emit */
	__u64 shed;            /* events over the limit, not emitted */
};                             /* 24 bytes; per-CPU array, key: __u32 0 */

/* sy_flow_event.verdict */
#define SY_EV_FORWARDED 1      /* translated to the backend in the event */
#define SY_EV_DROPPED 2        /* refused with ECONNREFUSED */

/* sy_flow_event.hook */
#define SY_EV_HOOK_CONNECT4 1  /* cgroup/connect4 */
#define SY_EV_HOOK_SENDMSG4 2  /* cgroup/sendmsg4 (unconnected UDP) */
#define SY_EV_HOOK_INGRESS 3   /* tc ingress: a new flow from outside the node */

struct sy_flow_event {
	__u64 ktime_ns;        /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 cgroup_id;       /* cgroup v2 id of the calling process; ingress: 0 */
	union {
		__u64 sock_cookie; /* the client socket's cookie */
		struct {           /* ingress: the client, as its packet came */
			__be32 client_addr;
			__be16 client_port;
			__u16 client_pad;
		};
	};
	__u64 netns_cookie;    /* the client's network namespace cookie; ingress: 0 */
	__be32 frontend_addr;  /* the address the client asked for */
	__be32 backend_addr;   /* forwarded: the backend; dropped: 0 */
	__be16 frontend_port;
	__be16 backend_port;   /* forwarded: the backend's; dropped: 0 */
	__u8 proto;            /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 verdict;          /* SY_EV_* */
	__u8 hook;             /* SY_EV_HOOK_* */
	__u8 drop_reason;      /* dropped: the enum sy_counter it counted */
};                             /* 48 bytes */

#endif /* SWITCHYARD_LB_H */
