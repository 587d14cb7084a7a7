//! The `RuntimeDefault` seccomp filter (pure): the system calls the
//! container runtimes' default profile does not allow, with the
//! capabilities that profile allows each one for, and the classic BPF
//! program that answers them with `EPERM`.

/// A denied system call and the capabilities (any one suffices) that
/// allow it again.
pub type Denied = (u32, &'static [&'static str]);

const fn nr(n: libc::c_long) -> u32 {
    n as u32
}

const ADMIN: &[&str] = &["SYS_ADMIN"];
const NEVER: &[&str] = &[];

/// The denied system calls on this architecture.
pub const DENIED: &[Denied] = &[
    (nr(libc::SYS_acct), &["SYS_PACCT"]),
    (nr(libc::SYS_add_key), NEVER),
    (nr(libc::SYS_keyctl), NEVER),
    (nr(libc::SYS_request_key), NEVER),
    (nr(libc::SYS_bpf), &["BPF", "SYS_ADMIN"]),
    (nr(libc::SYS_perf_event_open), &["PERFMON", "SYS_ADMIN"]),
    (nr(libc::SYS_clock_adjtime), &["SYS_TIME"]),
    (nr(libc::SYS_clock_settime), &["SYS_TIME"]),
    (nr(libc::SYS_settimeofday), &["SYS_TIME"]),
    (nr(libc::SYS_init_module), &["SYS_MODULE"]),
    (nr(libc::SYS_finit_module), &["SYS_MODULE"]),
    (nr(libc::SYS_delete_module), &["SYS_MODULE"]),
    (nr(libc::SYS_kexec_load), &["SYS_BOOT"]),
    (nr(libc::SYS_kexec_file_load), &["SYS_BOOT"]),
    (nr(libc::SYS_reboot), &["SYS_BOOT"]),
    (nr(libc::SYS_mount), ADMIN),
    (nr(libc::SYS_umount2), ADMIN),
    (nr(libc::SYS_pivot_root), ADMIN),
    (nr(libc::SYS_unshare), ADMIN),
    (nr(libc::SYS_setns), ADMIN),
    (nr(libc::SYS_swapon), ADMIN),
    (nr(libc::SYS_swapoff), ADMIN),
    (nr(libc::SYS_quotactl), ADMIN),
    (nr(libc::SYS_fanotify_init), ADMIN),
    (nr(libc::SYS_lookup_dcookie), ADMIN),
    (nr(libc::SYS_sethostname), ADMIN),
    (nr(libc::SYS_setdomainname), ADMIN),
    (nr(libc::SYS_fsopen), ADMIN),
    (nr(libc::SYS_fsconfig), ADMIN),
    (nr(libc::SYS_fsmount), ADMIN),
    (nr(libc::SYS_fspick), ADMIN),
    (nr(libc::SYS_open_tree), ADMIN),
    (nr(libc::SYS_move_mount), ADMIN),
    (nr(libc::SYS_mount_setattr), ADMIN),
    (nr(libc::SYS_syslog), &["SYSLOG", "SYS_ADMIN"]),
    (nr(libc::SYS_name_to_handle_at), ADMIN),
    (nr(libc::SYS_open_by_handle_at), &["DAC_READ_SEARCH"]),
    (nr(libc::SYS_ptrace), &["SYS_PTRACE"]),
    (nr(libc::SYS_process_vm_readv), &["SYS_PTRACE"]),
    (nr(libc::SYS_process_vm_writev), &["SYS_PTRACE"]),
    (nr(libc::SYS_kcmp), &["SYS_PTRACE"]),
    (nr(libc::SYS_pidfd_getfd), &["SYS_PTRACE"]),
    (nr(libc::SYS_userfaultfd), &["SYS_PTRACE"]),
    (nr(libc::SYS_get_mempolicy), &["SYS_NICE"]),
    (nr(libc::SYS_set_mempolicy), &["SYS_NICE"]),
    (nr(libc::SYS_mbind), &["SYS_NICE"]),
    (nr(libc::SYS_move_pages), &["SYS_NICE"]),
    (nr(libc::SYS_vhangup), &["SYS_TTY_CONFIG"]),
    (nr(libc::SYS_io_uring_setup), NEVER),
    (nr(libc::SYS_io_uring_enter), NEVER),
    (nr(libc::SYS_io_uring_register), NEVER),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS_iopl), &["SYS_RAWIO"]),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS_ioperm), &["SYS_RAWIO"]),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS_uselib), NEVER),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS_ustat), NEVER),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS_sysfs), NEVER),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS__sysctl), NEVER),
    #[cfg(target_arch = "x86_64")]
    (nr(libc::SYS_nfsservctl), NEVER),
];

/// `AUDIT_ARCH_*` of the architecture the lab is built for.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
/// `AUDIT_ARCH_*` of the architecture the lab is built for.
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL: u32 = 0x8000_0000;
/// `SECCOMP_RET_ERRNO | EPERM`.
pub const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
/// x32 system calls on x86_64 have this bit set.
const X32_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf: 0, k }
}

/// The filter: a foreign architecture is killed, x32 calls and `deny`
/// get EPERM, everything else is allowed. `deny` has at most 200 entries
/// (jump offsets are 8 bits).
pub fn program(deny: &[u32]) -> Vec<libc::sock_filter> {
    let mut p = vec![
        stmt(LD_W_ABS, 4),
        jump(JEQ_K, AUDIT_ARCH, 1),
        stmt(RET_K, RET_KILL),
        stmt(LD_W_ABS, 0),
    ];
    // The tail: the checks, ALLOW, then EPERM at the end.
    let checks = deny.len() + 1;
    let mut tail = Vec::with_capacity(checks + 2);
    for (i, k) in std::iter::once(X32_BIT)
        .chain(deny.iter().copied())
        .enumerate()
    {
        let to_deny = u8::try_from(checks - i).unwrap_or(u8::MAX);
        let code = if i == 0 { JGE_K } else { JEQ_K };
        tail.push(jump(code, k, to_deny));
    }
    tail.push(stmt(RET_K, RET_ALLOW));
    tail.push(stmt(RET_K, RET_EPERM));
    p.extend(tail);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF [`program`] emits on (arch, nr).
    fn run(p: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => acc = if i.k == 4 { arch } else { nr },
                JEQ_K if acc == i.k => pc += usize::from(i.jt),
                JGE_K if acc >= i.k => pc += usize::from(i.jt),
                JEQ_K | JGE_K => pc += usize::from(i.jf),
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn denied_calls_get_eperm_and_others_pass() {
        let deny = [
            nr(libc::SYS_mount),
            nr(libc::SYS_bpf),
            nr(libc::SYS_unshare),
        ];
        let p = program(&deny);
        for d in deny {
            assert_eq!(run(&p, AUDIT_ARCH, d), RET_EPERM, "syscall {d}");
        }
        for ok in [libc::SYS_read, libc::SYS_execve, libc::SYS_capset] {
            assert_eq!(run(&p, AUDIT_ARCH, nr(ok)), RET_ALLOW, "syscall {ok}");
        }
        assert_eq!(run(&p, AUDIT_ARCH, X32_BIT | 1), RET_EPERM);
        assert_eq!(run(&p, 0x4000_0003, nr(libc::SYS_read)), RET_KILL);
    }

    #[test]
    fn the_whole_list_fits_the_jump_offsets() {
        let all: Vec<u32> = DENIED.iter().map(|(n, _)| *n).collect();
        assert!(all.len() < 200);
        let p = program(&all);
        assert_eq!(run(&p, AUDIT_ARCH, all[all.len() - 1]), RET_EPERM);
        assert_eq!(run(&p, AUDIT_ARCH, nr(libc::SYS_getpid)), RET_ALLOW);
    }
}
