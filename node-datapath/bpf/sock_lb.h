/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * switchyard socket load balancer (IPv4), part of datapath.c.
 *
 * Four cgroup sock_addr programs translate service frontends to backends at
 * the socket layer, before netfilter sees a packet, and one cgroup sock
 * program forgets a socket's translation when it closes:
 *
 *   connect4      TCP/UDP connect(): frontend -> backend; records the
 *                 socket's rev-NAT entry (for getpeername and UDP replies).
 *   sendmsg4      unconnected UDP sendto(): frontend -> backend, same record.
 *   recvmsg4      UDP recvfrom(): backend source -> frontend.
 *   getpeername4  getpeername(): backend -> frontend.
 *   sock_release  close(): the socket's rev-NAT entry is deleted.
 *
 * A frontend with zero backends, or an unknown port on a known VIP, is
 * refused fast: the program sets the syscall's return value to
 * -ECONNREFUSED and returns 0, so connect()/sendto() fail like kube-proxy's
 * REJECT instead of hanging. Anything not a frontend passes untouched.
 *
 * connect4 and sendmsg4 also report each translation and refusal as a flow
 * event (lb.h, "Flow events").
 *
 * Every socket is on this node, so only scope SY_SCOPE_NODE is looked up
 * (see lb.h).
 */
#ifndef SWITCHYARD_SOCK_LB_H
#define SWITCHYARD_SOCK_LB_H

#include <linux/in.h>

#include "maps.h"

#define SY_ECONNREFUSED 111
#define SY_AF_INET 2
#define SY_NSEC_PER_SEC 1000000000ULL
/* Slots scanned to confirm an affine backend still serves the frontend. */
#define SY_AFFINITY_SCAN_MAX 256

enum sy_verdict {
	SY_PASS = 0,   /* not a frontend: leave the address alone */
	SY_XLATED = 1, /* rewritten to a backend */
	SY_REFUSE = 2, /* fail the syscall with ECONNREFUSED */
};

static __always_inline int sy_is_lb_proto(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/* Whether backend_id still occupies one of the frontend's slots. */
static __always_inline int sy_slot_holds(struct sy_svc_key *key, __u16 count, __u32 backend_id)
{
	struct sy_svc_key k = *key;
	__u32 i;

#pragma clang loop unroll(disable)
	for (i = 1; i <= SY_AFFINITY_SCAN_MAX; i++) {
		struct sy_svc_value *slot;

		if (i > count)
			break;
		k.backend_slot = (__u16)i;
		slot = bpf_map_lookup_elem(&sy_svc_v4, &k);
		if (slot && slot->backend_id == backend_id)
			return 1;
	}
	return 0;
}

/* The backend remembered for this client (netns) and frontend, if still valid. */
static __always_inline __u32 sy_affinity_backend(struct sy_affinity_key *ak,
						 struct sy_svc_key *key, __u16 count,
						 __u32 timeout_s, __u64 now)
{
	struct sy_affinity_value *av = bpf_map_lookup_elem(&sy_affinity4, ak);
	__u64 timeout = (__u64)timeout_s * SY_NSEC_PER_SEC;

	if (!av)
		return 0;
	if (now - av->last_used_ns > timeout)
		return 0;
	if (!sy_slot_holds(key, count, av->backend_id))
		return 0;
	return av->backend_id;
}

#define SY_NSEC_PER_SEC 1000000000ULL

/*
 * Whether this CPU may emit one more event under cfg->events_per_sec
 * (lb.h, "Flow events"); an event it may not is counted as shed. Whole
 * tokens are added for the time since the last addition, at most one
 * second's worth, so the remainder of a token carries over.
 */
static __always_inline int sy_events_admit(const struct sy_config *cfg)
{
	struct sy_events_rate *r;
	__u64 now, elapsed, add, rate;
	__u32 zero = 0;

	if (!cfg || !cfg->events_per_sec)
		return 1;
	r = bpf_map_lookup_elem(&sy_events_rate, &zero);
	if (!r)
		return 1;
	rate = cfg->events_per_sec;
	now = bpf_ktime_get_ns();
	elapsed = now - r->last_ns;
	if (elapsed > SY_NSEC_PER_SEC)
		elapsed = SY_NSEC_PER_SEC;
	add = elapsed * rate / SY_NSEC_PER_SEC;
	if (add) {
		r->tokens = r->tokens + add > rate ? rate : r->tokens + add;
		r->last_ns = now;
	}
	if (!r->tokens) {
		r->shed += 1;
		return 0;
	}
	r->tokens -= 1;
	return 1;
}

/*
 * The reader is woken only once a quarter of the ring waits: a wake-up per
 * record costs the connecting task more than writing the record does
 * (make bench, "Flow events"). The agent also drains on a short timer, so
 * a record that never fills the quarter waits at most one tick.
 */
static __always_inline __u64 sy_events_wakeup(void)
{
	__u64 waiting = bpf_ringbuf_query(&sy_events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&sy_events, BPF_RB_RING_SIZE);

	return waiting >= size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/*
 * A flow event record to fill, or NULL: events are off, the CPU is over its
 * rate limit (counted in sy_events_rate) or the ring is full (counted in
 * sy_events_lost). Submit it with sy_event_submit.
 */
static __always_inline struct sy_flow_event *sy_event_reserve(void)
{
	struct sy_flow_event *ev;
	struct sy_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&sy_config, &zero);
	if (cfg && (cfg->flags & SY_CFG_F_EVENTS_OFF))
		return 0;
	if (!sy_events_admit(cfg))
		return 0;
	ev = bpf_ringbuf_reserve(&sy_events, sizeof(*ev), 0);
	if (!ev) {
		__u64 *lost = bpf_map_lookup_elem(&sy_events_lost, &zero);

		if (lost)
			*lost += 1;
		return 0;
	}
	ev->ktime_ns = bpf_ktime_get_ns();
	return ev;
}

/* Fills what every event says of the frontend and the verdict, submits. */
static __always_inline void sy_event_submit(struct sy_flow_event *ev,
					    const struct sy_svc_key *key, __u8 hook,
					    __u8 verdict, __u8 reason,
					    const struct sy_backend *backend)
{
	ev->frontend_addr = key->address;
	ev->frontend_port = key->dport;
	ev->backend_addr = backend ? backend->address : 0;
	ev->backend_port = backend ? backend->port : 0;
	ev->proto = key->proto;
	ev->verdict = verdict;
	ev->hook = hook;
	ev->drop_reason = reason;
	bpf_ringbuf_submit(ev, sy_events_wakeup());
}

/* Reports what a socket program did with a client socket's frontend. */
static __always_inline void sy_emit(struct bpf_sock_addr *ctx, const struct sy_svc_key *key,
				    __u8 hook, __u8 verdict, __u8 reason,
				    const struct sy_backend *backend)
{
	struct sy_flow_event *ev = sy_event_reserve();

	if (!ev)
		return;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->sock_cookie = bpf_get_socket_cookie(ctx);
	ev->netns_cookie = bpf_get_netns_cookie(ctx);
	sy_event_submit(ev, key, hook, verdict, reason, backend);
}

/* Counts a refusal under `reason` (an enum sy_counter) and reports it. */
static __always_inline enum sy_verdict sy_drop(struct bpf_sock_addr *ctx,
					       const struct sy_svc_key *key, __u8 hook,
					       __u32 reason)
{
	sy_count(reason);
	sy_emit(ctx, key, hook, SY_EV_DROPPED, (__u8)reason, 0);
	return SY_REFUSE;
}

/*
 * Whether this socket already has exactly rn recorded for its backend, i.e.
 * an unconnected UDP socket sends another datagram of a flow it started.
 * Only sendmsg4 asks: a connect() is always a new flow, and the lookup
 * would cost every connect.
 */
static __always_inline int sy_same_flow(struct sy_sock_key *sk, struct sy_sock_rev_nat *rn)
{
	struct sy_sock_rev_nat *old = bpf_map_lookup_elem(&sy_sock_rnat4, sk);

	return old && old->address == rn->address && old->port == rn->port &&
	       old->rev_nat_index == rn->rev_nat_index;
}

/*
 * Forward translation shared by connect4 and sendmsg4 (hook: which one,
 * SY_EV_HOOK_*). Rewrites
 * ctx->user_ip4/user_port to a backend of the frontend (dst ip, dst port,
 * proto) and records the socket's rev-NAT entry.
 */
static __always_inline enum sy_verdict sy_xlate_fwd(struct bpf_sock_addr *ctx, __u8 hook)
{
	struct sy_svc_key key = {};
	const struct sy_svc_value *svc, *slot;
	struct sy_affinity_key ak = {};
	struct sy_backend *backend;
	struct sy_sock_key sk = {};
	struct sy_sock_rev_nat rn = {};
	__u32 backend_id = 0;
	__u16 count, rev_nat_index;
	__u32 affinity_timeout;
	__u8 flags;
	__u64 now = 0;
	__u32 proto = ctx->protocol;

	if (!sy_is_lb_proto(proto))
		return SY_PASS;

	key.address = ctx->user_ip4;
	key.dport = (__be16)ctx->user_port;
	key.proto = (__u8)proto;
	key.scope = SY_SCOPE_NODE;
	key.backend_slot = 0;

	svc = bpf_map_lookup_elem(&sy_svc_v4, &key);
	if (!svc) {
		struct sy_svc_key marker = {};

		marker.address = key.address;
		if (bpf_map_lookup_elem(&sy_svc_v4, &marker))
			return sy_drop(ctx, &key, hook, SY_CNT_DROP_UNKNOWN_PORT);
		return SY_PASS;
	}

	/* Read the master once: a writer replaces it as a whole. */
	count = svc->count;
	rev_nat_index = svc->rev_nat_index;
	flags = svc->flags;
	affinity_timeout = svc->affinity_timeout;
	if (count == 0)
		return sy_drop(ctx, &key, hook, SY_CNT_DROP_NO_BACKEND);

	if (flags & SY_SVC_F_AFFINITY) {
		now = bpf_ktime_get_ns();
		ak.client_cookie = bpf_get_netns_cookie(ctx);
		ak.rev_nat_index = rev_nat_index;
		backend_id = sy_affinity_backend(&ak, &key, count, affinity_timeout, now);
		if (backend_id)
			sy_count(SY_CNT_AFFINITY_HIT);
	}

	if (!backend_id) {
		key.backend_slot = (__u16)(bpf_get_prandom_u32() % count) + 1;
		slot = bpf_map_lookup_elem(&sy_svc_v4, &key);
		if (!slot) {
			/* A shrink raced with us (slot deleted after the master
			 * was read): slot 1 always exists while count > 0. */
			key.backend_slot = 1;
			slot = bpf_map_lookup_elem(&sy_svc_v4, &key);
		}
		if (!slot)
			return sy_drop(ctx, &key, hook, SY_CNT_DROP_SLOT_MISSING);
		backend_id = slot->backend_id;
	}

	backend = bpf_map_lookup_elem(&sy_backend_v4, &backend_id);
	if (!backend)
		return sy_drop(ctx, &key, hook, SY_CNT_DROP_BACKEND_MISSING);

	if (flags & SY_SVC_F_AFFINITY) {
		struct sy_affinity_value av = {};

		av.last_used_ns = now;
		av.backend_id = backend_id;
		bpf_map_update_elem(&sy_affinity4, &ak, &av, BPF_ANY);
	}

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = backend->address;
	sk.port = backend->port;
	rn.address = key.address;
	rn.port = key.dport;
	rn.rev_nat_index = rev_nat_index;
	/* The key has the frontend's slot no more: report the frontend. */
	key.backend_slot = 0;
	if (hook == SY_EV_HOOK_SENDMSG4 && sy_same_flow(&sk, &rn)) {
		/* Already recorded as it is: no rewrite, no event. */
	} else {
		if (bpf_map_update_elem(&sy_sock_rnat4, &sk, &rn, BPF_ANY) < 0)
			sy_count(SY_CNT_SOCK_REVNAT_FULL);
		sy_emit(ctx, &key, hook, SY_EV_FORWARDED, 0, backend);
	}

	ctx->user_ip4 = backend->address;
	ctx->user_port = (__u32)backend->port;
	sy_count(hook == SY_EV_HOOK_CONNECT4 ? SY_CNT_CONNECT_TRANSLATED
					     : SY_CNT_SENDMSG_TRANSLATED);
	return SY_XLATED;
}

/*
 * Reverse translation for recvmsg4/getpeername4: if this socket was
 * translated to the backend it now sees as its peer, show the frontend.
 */
static __always_inline int sy_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct sy_sock_key sk = {};
	struct sy_sock_rev_nat *rn;
	struct sy_rev_nat *frontend;
	__u16 idx;

	if (!sy_is_lb_proto(ctx->protocol))
		return 0;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->user_ip4;
	sk.port = (__be16)ctx->user_port;
	rn = bpf_map_lookup_elem(&sy_sock_rnat4, &sk);
	if (!rn)
		return 0;

	/* The frontend must still exist with the same address, or the entry
	 * is stale (service deleted or its rev-NAT id reused). */
	idx = rn->rev_nat_index;
	frontend = bpf_map_lookup_elem(&sy_revnat_v4, &idx);
	if (!frontend || frontend->address != rn->address || frontend->port != rn->port) {
		bpf_map_delete_elem(&sy_sock_rnat4, &sk);
		return 0;
	}

	ctx->user_ip4 = rn->address;
	ctx->user_port = (__u32)rn->port;
	return 1;
}

static __always_inline int sy_refuse(void)
{
	bpf_set_retval(-SY_ECONNREFUSED);
	return 0;
}

SEC("cgroup/connect4")
int sy_connect4(struct bpf_sock_addr *ctx)
{
	SY_VARIANT_MARK();
#ifdef SY_OBJECT_UNVERIFIABLE
	{
		__u32 id = bpf_get_prandom_u32();
		struct sy_backend *b = bpf_map_lookup_elem(&sy_backend_v4, &id);

		ctx->user_ip4 = b->address; /* no NULL check: rejected */
	}
#endif
	if (sy_xlate_fwd(ctx, SY_EV_HOOK_CONNECT4) == SY_REFUSE)
		return sy_refuse();
	return 1;
}

SEC("cgroup/sendmsg4")
int sy_sendmsg4(struct bpf_sock_addr *ctx)
{
	SY_VARIANT_MARK();
	if (sy_xlate_fwd(ctx, SY_EV_HOOK_SENDMSG4) == SY_REFUSE)
		return sy_refuse();
	return 1;
}

SEC("cgroup/recvmsg4")
int sy_recvmsg4(struct bpf_sock_addr *ctx)
{
	SY_VARIANT_MARK();
	if (sy_xlate_rev(ctx))
		sy_count(SY_CNT_RECVMSG_REVNAT);
	return 1;
}

SEC("cgroup/getpeername4")
int sy_getpeername4(struct bpf_sock_addr *ctx)
{
	SY_VARIANT_MARK();
	if (sy_xlate_rev(ctx))
		sy_count(SY_CNT_PEERNAME_REVNAT);
	return 1;
}

/*
 * A socket is going away: drop the rev-NAT entry connect4 (or a connected
 * socket's sendmsg4) recorded for it, keyed by its cookie and the backend
 * it is connected to. Without this the entries of closed sockets stay until
 * the LRU evicts them: a node opening many short connections keeps the map
 * full, every translated connect then pays an eviction, and the entries of
 * long-lived idle sockets become eviction candidates. Entries of unconnected
 * UDP sockets (one per backend they sent to) are left to the LRU.
 */
SEC("cgroup/sock_release")
int sy_sock_release(struct bpf_sock *ctx)
{
	struct sy_sock_key sk = {};

	SY_VARIANT_MARK();
	if (ctx->family != SY_AF_INET || !sy_is_lb_proto(ctx->protocol) || !ctx->dst_ip4)
		return 1;
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->dst_ip4;
	sk.port = ctx->dst_port;
	bpf_map_delete_elem(&sy_sock_rnat4, &sk);
	return 1;
}

#endif /* SWITCHYARD_SOCK_LB_H */
