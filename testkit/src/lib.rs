//! Test and lab plumbing, in one place for every test tree (the lab in
//! `e2e/`, the privileged datapath tests in `node-datapath/tests/`, the
//! cleanup tests): nothing here knows Kubernetes or BPF.
//!
//! * [`host`]: whether this host can run a privileged test (root, tools),
//!   and the one shape of the message a skipped test prints;
//! * [`netns`]: network namespaces deleted on drop, and closures run inside one;
//! * [`wait`]: polling until a condition holds, blocking or async;
//! * [`procfs`]: what a test or a benchmark reads of `/proc/<pid>/{stat,status}`;
//! * [`stats`]: medians and percentiles of samples;
//! * [`report`]: the benchmarks' Markdown templates filled with figures.

pub mod host;
pub mod netns;
pub mod procfs;
pub mod report;
pub mod stats;
pub mod wait;

pub use host::{current_test, have, is_root, skip, skip_unless_root};
pub use wait::{Timeout, wait_for, wait_for_async};
