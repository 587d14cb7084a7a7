//! Lists (default) or removes (`--clean`) kube-proxy's leftovers and prints the JSON
//! report; `--netns NAME` runs the tools inside that network namespace.
//!
//! ```text
//! cargo run -p switchyard-cleanup --example kube_proxy_cleanup -- [--netns NS] [--clean]
//!     [--service-cidr CIDR]... [--service-ip IP]... [--flush-conntrack] [--keep-pre-1-28]
//! ```

use std::process::ExitCode;
use std::time::Instant;
use switchyard_cleanup::{Options, clean, scan};

fn main() -> ExitCode {
    let mut opts = Options::default();
    let mut do_clean = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        let res: Result<(), String> = match a.as_str() {
            "--clean" => {
                do_clean = true;
                Ok(())
            }
            "--flush-conntrack" => {
                opts.flush_conntrack = true;
                Ok(())
            }
            "--keep-pre-1-28" => {
                opts.keep_pre_1_28_kubelet_chains = true;
                Ok(())
            }
            "--netns" => value("--netns").map(|ns| {
                opts.command_prefix = vec!["ip".into(), "netns".into(), "exec".into(), ns];
            }),
            "--service-cidr" => value("--service-cidr").and_then(|v| {
                v.parse()
                    .map(|c| opts.service_cidrs.push(c))
                    .map_err(|e| e.to_string())
            }),
            "--service-ip" => value("--service-ip").and_then(|v| {
                v.parse()
                    .map(|ip| opts.service_ips.push(ip))
                    .map_err(|e| format!("{v}: {e}"))
            }),
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(e) = res {
            eprintln!("kube_proxy_cleanup: {e}");
            return ExitCode::from(2);
        }
    }
    let start = Instant::now();
    let report = if do_clean { clean(&opts) } else { scan(&opts) };
    let elapsed = start.elapsed();
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("kube_proxy_cleanup: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Peak RSS of this process alone (the tools it runs are not counted).
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    eprintln!(
        "found {} removed {} in {:.3}s; {peak}",
        report.found_count(),
        report.removed_count(),
        elapsed.as_secs_f64()
    );
    if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
