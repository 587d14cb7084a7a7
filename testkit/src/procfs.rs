//! What tests and benchmarks read of `/proc`: a process's CPU time, start,
//! state and memory. The parsers take the file's text, so they are tested
//! without a process.

/// The fields of a `/proc/<pid>/stat` text after the command name (which
/// may contain spaces and parentheses): index 0 is field 3, the state.
fn after_comm(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// The process state letter (field 3: `R`, `S`, `Z`, …).
pub fn stat_state(stat: &str) -> Option<&str> {
    after_comm(stat)?.first().copied()
}

/// utime + stime in clock ticks (fields 14 and 15).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let fields = after_comm(stat)?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Process start in clock ticks after boot (field 22).
pub fn stat_start_ticks(stat: &str) -> Option<u64> {
    after_comm(stat)?.get(19)?.parse().ok()
}

/// A `kB` field of a `/proc/<pid>/status` text (`VmRSS`, `VmHWM`, …).
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Seconds since boot from a `/proc/uptime` text.
pub fn uptime_secs(uptime: &str) -> Option<f64> {
    uptime.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// `/proc/<pid>/stat` of a running process.
pub fn read_stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// `/proc/<pid>/status` of a running process.
pub fn read_status(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_survives_odd_command_names() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 153 47 0 0 20 0 9 0 1234 1000000 2000 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(200));
        assert_eq!(stat_cpu_ticks("garbage"), None);
        assert_eq!(stat_state(stat), Some("S"));
    }

    #[test]
    fn status_fields_in_kib() {
        let s = "Name:\top\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\nRssAnon:\t   19000 kB\nRssFile:\t   11000 kB\n";
        assert_eq!(status_kib(s, "VmHWM"), Some(40960));
        assert_eq!(status_kib(s, "VmRSS"), Some(30000));
        assert_eq!(status_kib(s, "RssAnon"), Some(19000));
        assert_eq!(status_kib(s, "RssFile"), Some(11000));
        assert_eq!(status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn process_start_and_uptime() {
        let stat = "77 (kube proxy) S 1 77 77 0 -1 4194560 900 0 0 0 153 47 0 0 20 0 9 0 123456 1000000 2000";
        assert_eq!(stat_start_ticks(stat), Some(123456));
        assert_eq!(stat_start_ticks("x"), None);
        assert_eq!(uptime_secs("3512.25 7000.00\n"), Some(3512.25));
    }

    #[test]
    fn reads_this_process() {
        // The reading thread's own stat (`/proc/<tid>` works for any
        // thread): it is running. The process's main thread may be asleep
        // while a test harness thread runs this.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let stat = read_stat(tid).unwrap_or_default();
        assert_eq!(stat_state(&stat), Some("R"));
        let status = read_status(std::process::id() as i32).unwrap_or_default();
        assert!(status_kib(&status, "VmRSS").is_some_and(|k| k > 0));
    }
}
