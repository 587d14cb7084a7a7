/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * switchyard ingress load balancer (IPv4), part of datapath.c: the tc
 * program on the node's external interfaces that serves what arrives from
 * outside the node for a NodePort (on the node's addresses), an ExternalIP,
 * a LoadBalancer ingress IP or a ClusterIP — the traffic kube-proxy's
 * KUBE-NODEPORTS, KUBE-EXT-* and KUBE-SERVICES rules served.
 *
 * It decides, per new flow, which backend serves it, and leaves the
 * translation to the kernel's own connection tracking and NAT: for the
 * first packet of a flow it creates the conntrack entry with its NAT
 * bindings (DNAT to the backend; for externalTrafficPolicy: Cluster also
 * SNAT to the node's address on the route to the backend, with a source
 * port the kernel makes unique, as kube-proxy's MASQUERADE does) and
 * inserts it; netfilter then translates that packet, every later one and
 * every reply, ICMP errors included (their embedded headers too, so path
 * MTU discovery keeps working).
 *
 * A packet of a flow conntrack already tracks is passed untouched. That
 * single rule is what makes the switch lossless in both directions:
 * connections kube-proxy's rules translated keep their conntrack NAT
 * binding after the rules are gone, and connections this program
 * translated keep theirs after it is detached (rollback). The exception is
 * a TCP SYN: it opens a new connection even on a tuple conntrack still
 * holds (a client reusing a port whose last connection is in TIME_WAIT),
 * so that entry is expired and the connection translated anew. All this
 * needs the netns to have conntrack and NAT hooks registered, which the
 * agent keeps (the keepalive nftables table) while this program is
 * attached.
 *
 * A ClusterIP reached from outside (a router that sends the Service
 * network to the node, as BGP-advertised Service IPs do) is served too,
 * always masqueraded: kube-proxy masquerades traffic to a ClusterIP from
 * outside the cluster, and with internalTrafficPolicy: Local still picks
 * a local endpoint. Pods' own connections never arrive here untranslated
 * (the socket programs translate them at connect()).
 *
 * A new flow to a LoadBalancer IP with loadBalancerSourceRanges is admitted
 * only from those networks (dropped and counted otherwise, as kube-proxy
 * does); NodePorts of the same Service are not filtered, as in kube-proxy.
 *
 * Everything else passes: packets that are not IPv4 TCP/UDP to a frontend,
 * and a mid-flow TCP packet no one tracks (the kernel answers it as it would
 * without kube-proxy).
 *
 * IPv4 fragments: conntrack reassembles a datagram only after this hook,
 * and looks the whole datagram up. The first fragment carries the ports,
 * so it is decided like any packet (its flow's entry is in the table
 * before reassembly can complete, whatever order the fragments arrive
 * in); the later ones carry no ports and pass (counted) to be reassembled
 * with it and translated by that entry.
 */
#ifndef SWITCHYARD_NODEPORT_H
#define SWITCHYARD_NODEPORT_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>

#include "kfunc.h"
#include "maps.h"
#include "sock_lb.h"

/* Passes the packet on to the next program or filter on the interface
 * (a CNI's), and to the stack after the last: tcx's TCX_NEXT, and
 * cls_bpf's "no verdict" in direct-action mode. */
#define SY_TC_NEXT TC_ACT_UNSPEC

#define SY_ETH_P_IP 0x0008 /* htons(ETH_P_IP) */
#define SY_IP_OFFSET 0xff1f /* htons(IP_OFFSET) */
#define SY_TCP_FLAGS_OFF 13
#define SY_TCP_SYN 0x02
#define SY_TCP_ACK 0x10
#define SY_AF_INET_FIB 2
#define SY_FIB_LOOKUP_SKIP_NEIGH (1U << 2)
#define SY_FIB_LOOKUP_SRC (1U << 4)

#define SY_INGRESS_FRONTEND                                                                  \
	(SY_SVC_F_CLUSTER_IP | SY_SVC_F_NODEPORT | SY_SVC_F_EXTERNAL_IP | SY_SVC_F_LOADBALANCER)

/* The parts of a packet the ingress program decides on. */
struct sy_pkt {
	struct bpf_sock_tuple tuple; /* ipv4: saddr, daddr, sport, dport */
	__u8 proto;
	__u8 new_flow; /* may open a flow: UDP, or TCP SYN without ACK */
};

/* Parses an IPv4 TCP/UDP packet; 0 when it is not one we look at, -1 for
 * a fragment after the first (no ports to decide on). */
static __always_inline int sy_parse(struct __sk_buff *skb, struct sy_pkt *p)
{
	struct iphdr ip;
	__u32 l4;
	__u8 flags = 0;

	if (skb->protocol != SY_ETH_P_IP)
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return 0;
	if (ip.frag_off & SY_IP_OFFSET)
		return -1;
	l4 = ETH_HLEN + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, l4, &p->tuple.ipv4.sport, 4) < 0)
		return 0;
	p->tuple.ipv4.saddr = ip.saddr;
	p->tuple.ipv4.daddr = ip.daddr;
	p->proto = ip.protocol;
	p->new_flow = 1;
	if (ip.protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4 + SY_TCP_FLAGS_OFF, &flags, 1) < 0)
			return 0;
		p->new_flow = (flags & (SY_TCP_SYN | SY_TCP_ACK)) == SY_TCP_SYN;
	}
	return 1;
}

/* Whether conntrack already tracks the packet's flow (in either direction). */
static __always_inline int sy_ct_tracked(struct __sk_buff *skb, struct sy_pkt *p)
{
	struct sy_ct_opts opts = { .netns_id = -1, .l4proto = p->proto };
	struct sy_ct *ct = sy_ct_lookup(skb, &p->tuple, &opts);

	if (!ct)
		return 0;
	sy_ct_release(ct);
	return 1;
}

/*
 * Whether the packet belongs to a flow conntrack tracks and must be left
 * to it. A TCP SYN never does: a tracked tuple it opens is one whose last
 * connection is closing or closed (TIME_WAIT: a client reusing its port,
 * which conntrack would reopen without any NAT binding) or a handshake
 * being retried; its entry is expired now, and the flow translated anew.
 */
static __always_inline int sy_ct_keeps(struct __sk_buff *skb, struct sy_pkt *p)
{
	struct sy_ct_opts opts = { .netns_id = -1, .l4proto = p->proto };
	struct sy_ct *ct = sy_ct_lookup(skb, &p->tuple, &opts);

	if (!ct)
		return 0;
	if (p->proto == IPPROTO_TCP && p->new_flow) {
		sy_ct_expire(ct);
		sy_ct_release(ct);
		sy_count(SY_CNT_INGRESS_REOPENED);
		/* The lookup removes the expired entry from the table. */
		return sy_ct_tracked(skb, p);
	}
	sy_ct_release(ct);
	return 1;
}

/* The backend for an external client of the frontend `key` (its master
 * `svc`): affinity by client address, else a random slot. None: *why is
 * the drop counter it counted. */
static __always_inline struct sy_backend *sy_ingress_backend(struct sy_svc_key *key,
							     const struct sy_svc_value *svc,
							     __be32 client, __u32 *why)
{
	struct sy_affinity_key ak = {};
	struct sy_svc_value *slot;
	__u32 backend_id = 0;
	__u64 now = 0;
	struct sy_backend *backend;

	if (svc->flags & SY_SVC_F_AFFINITY) {
		now = bpf_ktime_get_ns();
		ak.client_cookie = SY_AFFINITY_EXTERNAL | client;
		ak.rev_nat_index = svc->rev_nat_index;
		backend_id = sy_affinity_backend(&ak, key, svc->count, svc->affinity_timeout, now);
		if (backend_id)
			sy_count(SY_CNT_AFFINITY_HIT);
	}
	if (!backend_id) {
		key->backend_slot = (__u16)(bpf_get_prandom_u32() % svc->count) + 1;
		slot = bpf_map_lookup_elem(&sy_svc_v4, key);
		if (!slot) {
			*why = SY_CNT_DROP_SLOT_MISSING;
			sy_count(*why);
			return 0;
		}
		backend_id = slot->backend_id;
	}
	backend = bpf_map_lookup_elem(&sy_backend_v4, &backend_id);
	if (!backend) {
		*why = SY_CNT_DROP_BACKEND_MISSING;
		sy_count(*why);
		return 0;
	}
	if (svc->flags & SY_SVC_F_AFFINITY) {
		struct sy_affinity_value av = { .last_used_ns = now, .backend_id = backend_id };

		bpf_map_update_elem(&sy_affinity4, &ak, &av, BPF_ANY);
	}
	return backend;
}

/* The node's source address on the route to `dst`, as MASQUERADE picks it:
 * the preferred source of the forwarding route the packet will take. */
static __always_inline __be32 sy_masquerade_addr(struct __sk_buff *skb, __be32 dst)
{
	struct bpf_fib_lookup fib = {};

	fib.family = SY_AF_INET_FIB;
	fib.ipv4_dst = dst;
	fib.ifindex = skb->ingress_ifindex;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib),
			   SY_FIB_LOOKUP_SKIP_NEIGH | SY_FIB_LOOKUP_SRC) != 0)
		return 0;
	return fib.ipv4_src;
}

enum sy_ct_result {
	SY_CT_INSERTED = 0, /* the flow is ours to translate (or another CPU's) */
	SY_CT_FAILED = 1,   /* no entry: allocation or a NAT binding failed */
	SY_CT_CLASH = 2,    /* its reply tuple clashes with a tracked flow */
};

/* First SNAT port tried again after a clash (the ephemeral range). */
#define SY_SNAT_PORT_MIN 32768
#define SY_SNAT_PORT_SPAN 28232

/* Creates the conntrack entry that translates the flow to `backend`,
 * masqueraded to `snat` unless that is 0, from `snat_port` (0: the kernel
 * chooses, keeping the client's port where it is free). */
static __always_inline enum sy_ct_result sy_ct_translate(struct __sk_buff *skb, struct sy_pkt *p,
							 const struct sy_backend *backend,
							 __be32 snat, int snat_port)
{
	struct sy_ct_opts opts = { .netns_id = -1, .l4proto = p->proto };
	union sy_inet_addr addr = {};
	struct sy_ct_init *init;
	struct sy_ct *ct;
	int err;

	init = sy_ct_alloc(skb, &p->tuple, &opts);
	if (!init)
		return SY_CT_FAILED;
	addr.ip = backend->address;
	err = sy_ct_set_nat(init, &addr, bpf_ntohs(backend->port), SY_NAT_MANIP_DST);
	if (!err && snat) {
		addr.ip = snat;
		err = sy_ct_set_nat(init, &addr, snat_port, SY_NAT_MANIP_SRC);
	}
	/* The kernel offers no way to free an allocated entry but to insert
	 * it. After a failed binding (out of memory only) the entry translates
	 * nothing; the packet is dropped and the client's retry finds it. */
	ct = sy_ct_insert(init);
	if (ct) {
		sy_ct_release(ct);
		return err ? SY_CT_FAILED : SY_CT_INSERTED;
	}
	/* Not inserted: either another CPU inserted this very flow first
	 * (conntrack finds it), or the translated reply tuple is taken by a
	 * flow the NAT binding did not see as taken (one being torn down). */
	return sy_ct_tracked(skb, p) ? SY_CT_INSERTED : SY_CT_CLASH;
}

/* Translates the flow; after a clash of a masqueraded flow once more
 * from a random source port. 0 on success. */
static __always_inline int sy_ct_translate_flow(struct __sk_buff *skb, struct sy_pkt *p,
						const struct sy_backend *backend, __be32 snat)
{
	enum sy_ct_result r = sy_ct_translate(skb, p, backend, snat, 0);

	if (r == SY_CT_CLASH && snat) {
		int port = SY_SNAT_PORT_MIN + bpf_get_prandom_u32() % SY_SNAT_PORT_SPAN;

		sy_count(SY_CNT_INGRESS_CT_CLASH);
		r = sy_ct_translate(skb, p, backend, snat, port);
	}
	return r == SY_CT_INSERTED ? 0 : -1;
}

/* Whether `client` may reach the frontend `key` (its node-scope master
 * `svc`): always, unless the frontend lists loadBalancerSourceRanges. */
static __always_inline int sy_source_allowed(const struct sy_svc_key *key,
					     const struct sy_svc_value *svc, __be32 client)
{
	struct sy_svc_key rk = *key;
	__u32 i;

	if (!(svc->flags & SY_SVC_F_SOURCE_RANGES))
		return 1;
	rk.scope = SY_SCOPE_SOURCE_RANGE;
#pragma clang loop unroll(disable)
	for (i = 1; i <= SY_SOURCE_RANGES_MAX; i++) {
		const struct sy_svc_value *r;
		__u32 bits;

		rk.backend_slot = (__u16)i;
		r = bpf_map_lookup_elem(&sy_svc_v4, &rk);
		if (!r)
			break;
		bits = r->count > 32 ? 32 : r->count;
		if (!bits || !((client ^ r->backend_id) & bpf_htonl(~0U << (32 - bits))))
			return 1;
	}
	sy_count(SY_CNT_DROP_SOURCE_RANGE);
	return 0;
}

/* The master external clients of frontend `key` use, switching `key` to
 * its scope. */
static __always_inline const struct sy_svc_value *sy_ingress_master(struct sy_svc_key *key,
								    const struct sy_svc_value *svc)
{
	if (!(svc->flags & SY_SVC_F_INGRESS_SCOPE))
		return svc;
	key->scope = SY_SCOPE_INGRESS;
	svc = bpf_map_lookup_elem(&sy_svc_v4, key);
	if (!svc)
		sy_count(SY_CNT_DROP_SLOT_MISSING);
	return svc;
}

/* Reports what the program did with a new flow from outside the node
 * (lb.h, "Flow events"): the client as its packet came, the frontend. */
static __always_inline void sy_emit_ingress(const struct sy_pkt *p, const struct sy_svc_key *key,
					    __u8 verdict, __u32 reason,
					    const struct sy_backend *backend)
{
	struct sy_flow_event *ev = sy_event_reserve();

	if (!ev)
		return;
	ev->cgroup_id = 0;
	ev->netns_cookie = 0;
	ev->sock_cookie = 0;
	ev->client_addr = p->tuple.ipv4.saddr;
	ev->client_port = p->tuple.ipv4.sport;
	sy_event_submit(ev, key, SY_EV_HOOK_INGRESS, verdict, (__u8)reason, backend);
}

/* Drops a new flow the counter `reason` already counted, and reports it. */
static __always_inline int sy_ingress_dropped(const struct sy_pkt *p,
					      const struct sy_svc_key *key, __u32 reason)
{
	sy_emit_ingress(p, key, SY_EV_DROPPED, reason, 0);
	return TC_ACT_SHOT;
}

SEC("classifier")
int sy_ingress(struct __sk_buff *skb)
{
	struct sy_pkt p = {};
	struct sy_svc_key key = {};
	const struct sy_svc_value *svc;
	struct sy_backend *backend;
	__u32 why = SY_CNT_DROP_BACKEND_MISSING;
	__be32 snat;
	int parsed;

	SY_VARIANT_MARK();
	parsed = sy_parse(skb, &p);
	if (parsed < 0)
		sy_count(SY_CNT_INGRESS_FRAGMENT);
	if (parsed <= 0)
		return SY_TC_NEXT;
	key.address = p.tuple.ipv4.daddr;
	key.dport = p.tuple.ipv4.dport;
	key.proto = p.proto;
	key.scope = SY_SCOPE_NODE;
	svc = bpf_map_lookup_elem(&sy_svc_v4, &key);
	if (!svc || !(svc->flags & SY_INGRESS_FRONTEND))
		return SY_TC_NEXT;
	if (sy_ct_keeps(skb, &p)) {
		sy_count(SY_CNT_INGRESS_TRACKED);
		return SY_TC_NEXT;
	}
	if (!p.new_flow) {
		sy_count(SY_CNT_INGRESS_UNTRACKED);
		return SY_TC_NEXT;
	}
	if (!sy_source_allowed(&key, svc, p.tuple.ipv4.saddr))
		return sy_ingress_dropped(&p, &key, SY_CNT_DROP_SOURCE_RANGE);
	svc = sy_ingress_master(&key, svc);
	if (!svc)
		return sy_ingress_dropped(&p, &key, SY_CNT_DROP_SLOT_MISSING);
	if (svc->count == 0) {
		why = svc->flags & SY_SVC_F_LOCAL_ONLY ? SY_CNT_DROP_NO_LOCAL_BACKEND
						       : SY_CNT_DROP_NO_BACKEND;
		sy_count(why);
		return sy_ingress_dropped(&p, &key, why);
	}
	backend = sy_ingress_backend(&key, svc, p.tuple.ipv4.saddr, &why);
	if (!backend)
		return sy_ingress_dropped(&p, &key, why);
	/* externalTrafficPolicy: Local keeps the client's address. */
	snat = 0;
	if (!(svc->flags & SY_SVC_F_LOCAL_ONLY) || (svc->flags & SY_SVC_F_CLUSTER_IP)) {
		snat = sy_masquerade_addr(skb, backend->address);
		if (!snat) {
			sy_count(SY_CNT_DROP_CT_FAILED);
			return sy_ingress_dropped(&p, &key, SY_CNT_DROP_CT_FAILED);
		}
	}
	if (sy_ct_translate_flow(skb, &p, backend, snat)) {
		sy_count(SY_CNT_DROP_CT_FAILED);
		return sy_ingress_dropped(&p, &key, SY_CNT_DROP_CT_FAILED);
	}
	sy_count(SY_CNT_INGRESS_TRANSLATED);
	sy_emit_ingress(&p, &key, SY_EV_FORWARDED, 0, backend);
	return SY_TC_NEXT;
}

#endif /* SWITCHYARD_NODEPORT_H */
