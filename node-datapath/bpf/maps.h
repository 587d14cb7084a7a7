/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps every program of the datapath shares (layouts: lb.h). Defined
 * once here so the socket programs (sock_lb.h) and the ingress program
 * (nodeport.h) of datapath.c read the same pinned maps.
 */
#ifndef SWITCHYARD_MAPS_H
#define SWITCHYARD_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sy_svc_key);
	__type(value, struct sy_svc_value);
	__uint(max_entries, SY_SVC_MAP_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sy_svc_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sy_backend);
	__uint(max_entries, SY_BACKEND_MAP_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sy_backend_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct sy_rev_nat);
	__uint(max_entries, SY_REVNAT_MAP_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} sy_revnat_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sy_sock_key);
	__type(value, struct sy_sock_rev_nat);
	__uint(max_entries, SY_SOCK_REVNAT_MAP_MAX);
} sy_sock_rnat4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sy_affinity_key);
	__type(value, struct sy_affinity_value);
	__uint(max_entries, SY_AFFINITY_MAP_MAX);
} sy_affinity4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SY_CNT_MAX);
} sy_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SY_EVENTS_RING_BYTES);
} sy_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} sy_events_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sy_config);
	__uint(max_entries, 1);
} sy_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sy_events_rate);
	__uint(max_entries, 1);
} sy_events_rate SEC(".maps");

static __always_inline void sy_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&sy_counters, &idx);

	if (v)
		*v += 1;
}

#endif /* SWITCHYARD_MAPS_H */
