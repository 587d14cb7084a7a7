//! What the host offers a privileged test, and how a test that cannot run
//! says so.

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `tool` is on `PATH` as an executable file.
pub fn have(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Prints why `test` does not run here, in the one shape every test tree
/// uses (`SKIP <test>: <reason>`); the caller returns right after.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIP {test}: {reason}");
}

/// The running test's name (the test harness names each test's thread
/// after it).
pub fn current_test() -> String {
    std::thread::current().name().unwrap_or("test").to_string()
}

/// Whether the running test must skip for want of root: prints the skip
/// (`needs` says what root is for) and returns true.
pub fn skip_unless_root(needs: &str) -> bool {
    if is_root() {
        return false;
    }
    skip(&current_test(), &format!("needs root ({needs})"));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_shell_and_not_a_made_up_tool() {
        assert!(have("sh"));
        assert!(!have("no-such-tool-switchyard"));
    }
}
