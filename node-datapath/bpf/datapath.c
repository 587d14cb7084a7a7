// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The switchyard datapath: one object with every program, so all of them
 * share the maps of maps.h (layouts: lb.h).
 *
 *   sock_lb.h   cgroup socket programs: clients on this node
 *   nodeport.h  tc ingress program: clients outside it (NodePort,
 *               ExternalIP, LoadBalancer)
 *   health.h    sk_lookup program: kube-proxy's health ports to the agent
 *
 * No global data sections: everything lives in the pinned maps.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/*
 * Test builds (build.rs, never embedded): -DSY_OBJECT_VARIANT adds one
 * helper call to each program (a different program tag, to exercise
 * replacing attached programs); -DSY_OBJECT_UNVERIFIABLE makes connect4
 * dereference a possibly-NULL map value, which the verifier must reject.
 */
#ifdef SY_OBJECT_VARIANT
#define SY_VARIANT_MARK() bpf_get_prandom_u32()
#else
#define SY_VARIANT_MARK() 0
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "sock_lb.h"
#include "nodeport.h"
#include "health.h"
