/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Steering kube-proxy's health ports to the agent, part of datapath.c.
 *
 * Cloud load balancers health-check each node on kube-proxy's ports
 * (:10256/healthz, every healthCheckNodePort) and take a node out after a
 * few refused checks. Handing a port over by closing one listener and
 * binding another always leaves such a moment. Instead the agent keeps its
 * own listeners on other ports and puts each in sy_health_socks under the
 * health port it serves: this sk_lookup program, which runs before the
 * kernel's own listener lookup, sends every new connection to such a port
 * to the agent's socket, whether kube-proxy still listens on it or not.
 * Removing the entry gives the port back to whoever listens on it (kube-
 * proxy after a rollback) between one connection and the next.
 */
#ifndef SWITCHYARD_HEALTH_H
#define SWITCHYARD_HEALTH_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "lb.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__type(key, __u32);   /* the health port, host order */
	__type(value, __u32); /* a listening socket (its fd, from userspace) */
	__uint(max_entries, SY_HEALTH_SOCKS_MAX);
} sy_health_socks SEC(".maps");

SEC("sk_lookup")
int sy_health_lookup(struct bpf_sk_lookup *ctx)
{
	__u32 port = ctx->local_port;
	struct bpf_sock *sk;

	SY_VARIANT_MARK();
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	sk = bpf_map_lookup_elem(&sy_health_socks, &port);
	if (!sk)
		return SK_PASS;
	bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return SK_PASS;
}

#endif /* SWITCHYARD_HEALTH_H */
