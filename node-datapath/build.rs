//! Compiles the BPF programs in `bpf/` (one object, `bpf/datapath.c`) with
//! clang into `OUT_DIR`. The crate embeds `datapath.o` with
//! `aya::include_bytes_aligned!`; the two test builds (`datapath_variant.o`:
//! one extra instruction per program; `datapath_unverifiable.o`: rejected by
//! the verifier) are read from `OUT_DIR` by the integration tests only.

use std::{env, path::Path, process::Command};

const SOURCES: &[&str] = &[
    "bpf/datapath.c",
    "bpf/lb.h",
    "bpf/maps.h",
    "bpf/kfunc.h",
    "bpf/sock_lb.h",
    "bpf/nodeport.h",
    "bpf/health.h",
];

fn compile(clang: &str, out: &Path, defines: &[&str]) {
    let status = Command::new(clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-I/usr/include/x86_64-linux-gnu",
            "-Ibpf",
            "-Wall",
            "-Werror",
        ])
        .args(defines)
        .args(["-c", "bpf/datapath.c", "-o"])
        .arg(out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("clang failed to compile bpf/datapath.c ({s}); see the diagnostics above"),
        Err(e) => panic!(
            "cannot run `{clang}` to compile the BPF programs ({e}): clang and libbpf-dev are \
             required; run e2e/hack/install-deps.sh"
        ),
    }
}

fn main() {
    for src in SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=SWITCHYARD_CLANG");
    let clang = env::var("SWITCHYARD_CLANG").unwrap_or_else(|_| "clang".to_owned());
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        panic!(
            "libbpf headers (/usr/include/bpf/bpf_helpers.h) are missing: libbpf-dev is \
             required to compile the BPF programs; run e2e/hack/install-deps.sh"
        );
    }
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out_dir = Path::new(&out_dir);
    compile(&clang, &out_dir.join("datapath.o"), &[]);
    compile(
        &clang,
        &out_dir.join("datapath_variant.o"),
        &["-DSY_OBJECT_VARIANT"],
    );
    compile(
        &clang,
        &out_dir.join("datapath_unverifiable.o"),
        &["-DSY_OBJECT_UNVERIFIABLE"],
    );
}
