/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Netfilter conntrack kfuncs, called from the ingress program.
 *
 * A kfunc is called by BTF id: `call` with src_reg BPF_PSEUDO_KFUNC_CALL
 * and the id of the kernel function in vmlinux BTF as immediate. libbpf
 * resolves `extern ... __ksym` declarations to that; the aya release this
 * project can build (0.14) cannot. So each call below is written as the
 * raw instruction with a placeholder immediate (SY_KFUNC_<name>), and the
 * loader (node-datapath/src/kfunc.rs) replaces every placeholder with the
 * running kernel's BTF id before the object is loaded. The verifier then
 * checks each call against the kernel's own prototype, exactly as for a
 * libbpf-resolved one. Arguments are pinned to r1-r5 and the caller-saved
 * registers are declared clobbered, as the BPF calling convention says.
 *
 * The placeholders: 0x5359 ("SY") in the high half, the kfunc's number in
 * the low half. kfunc.rs holds the same table.
 */
#ifndef SWITCHYARD_KFUNC_H
#define SWITCHYARD_KFUNC_H

#include <linux/bpf.h>

#define SY_KFUNC_SKB_CT_LOOKUP 0x53590001
#define SY_KFUNC_CT_RELEASE 0x53590002
#define SY_KFUNC_SKB_CT_ALLOC 0x53590003
#define SY_KFUNC_CT_INSERT_ENTRY 0x53590004
#define SY_KFUNC_CT_SET_NAT_INFO 0x53590005
#define SY_KFUNC_CT_CHANGE_TIMEOUT 0x53590006

/* `call imm` with src_reg = BPF_PSEUDO_KFUNC_CALL (2), little endian. */
#define SY_STR(x) #x
#define SY_KFUNC_INSN(id) ".8byte (" SY_STR(id) " << 32) | 0x2085"

/* struct bpf_ct_opts (net/netfilter/nf_conntrack_bpf.c), 16-byte form. */
struct sy_ct_opts {
	__s32 netns_id;   /* -1: the packet's network namespace */
	__s32 error;      /* out: errno of a failed call */
	__u8 l4proto;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;         /* out: direction of the matched tuple */
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
};

/* union nf_inet_addr. */
union sy_inet_addr {
	__u32 all[4];
	__be32 ip;
};

/* enum nf_nat_manip_type. */
#define SY_NAT_MANIP_SRC 0
#define SY_NAT_MANIP_DST 1

/* Opaque kernel objects: struct nf_conn and struct nf_conn___init. */
struct sy_ct;
struct sy_ct_init;

#define SY_KFUNC5(id, a1, a2, a3, a4, a5, ret)                                        \
	do {                                                                          \
		register __u64 r1 asm("r1") = (__u64)(a1);                            \
		register __u64 r2 asm("r2") = (__u64)(a2);                            \
		register __u64 r3 asm("r3") = (__u64)(a3);                            \
		register __u64 r4 asm("r4") = (__u64)(a4);                            \
		register __u64 r5 asm("r5") = (__u64)(a5);                            \
		register __u64 r0 asm("r0");                                          \
		asm volatile(SY_KFUNC_INSN(id)                                        \
			     : "=r"(r0), "+r"(r1), "+r"(r2), "+r"(r3), "+r"(r4), "+r"(r5) \
			     :                                                        \
			     : "memory");                                             \
		ret = r0;                                                             \
	} while (0)

/* bpf_skb_ct_lookup: the conntrack entry of `tuple` (either direction) in
 * the packet's netns, referenced; release it with sy_ct_release. */
static __always_inline struct sy_ct *sy_ct_lookup(struct __sk_buff *skb,
						  struct bpf_sock_tuple *tuple,
						  struct sy_ct_opts *opts)
{
	__u64 ret;

	SY_KFUNC5(SY_KFUNC_SKB_CT_LOOKUP, skb, tuple, sizeof(tuple->ipv4), opts,
		  sizeof(*opts), ret);
	return (struct sy_ct *)ret;
}

/* bpf_skb_ct_alloc: a new, unconfirmed entry for `tuple` (original
 * direction); insert it with sy_ct_insert or it is freed at release. */
static __always_inline struct sy_ct_init *sy_ct_alloc(struct __sk_buff *skb,
						      struct bpf_sock_tuple *tuple,
						      struct sy_ct_opts *opts)
{
	__u64 ret;

	SY_KFUNC5(SY_KFUNC_SKB_CT_ALLOC, skb, tuple, sizeof(tuple->ipv4), opts,
		  sizeof(*opts), ret);
	return (struct sy_ct_init *)ret;
}

/* bpf_ct_set_nat_info: the entry's source or destination NAT binding;
 * `port` in host order, 0 = let the kernel choose (unique, as MASQUERADE). */
static __always_inline int sy_ct_set_nat(struct sy_ct_init *ct, union sy_inet_addr *addr,
					 int port, int manip)
{
	__u64 ret;

	SY_KFUNC5(SY_KFUNC_CT_SET_NAT_INFO, ct, addr, port, manip, 0, ret);
	return (int)ret;
}

/* bpf_ct_insert_entry: confirms the entry (consumes `ct`); returns it
 * referenced, or NULL (e.g. another CPU inserted the same tuple first). */
static __always_inline struct sy_ct *sy_ct_insert(struct sy_ct_init *ct)
{
	__u64 ret;

	SY_KFUNC5(SY_KFUNC_CT_INSERT_ENTRY, ct, 0, 0, 0, 0, ret);
	return (struct sy_ct *)ret;
}

/* bpf_ct_change_timeout: an inserted entry expires `msecs` from now (0:
 * now; the next lookup that meets it removes it). */
static __always_inline void sy_ct_expire(struct sy_ct *ct)
{
	__u64 ret;

	SY_KFUNC5(SY_KFUNC_CT_CHANGE_TIMEOUT, ct, 0, 0, 0, 0, ret);
	(void)ret;
}

/* bpf_ct_release. */
static __always_inline void sy_ct_release(struct sy_ct *ct)
{
	__u64 ret;

	SY_KFUNC5(SY_KFUNC_CT_RELEASE, ct, 0, 0, 0, 0, ret);
	(void)ret;
}

#endif /* SWITCHYARD_KFUNC_H */
