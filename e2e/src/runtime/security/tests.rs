use k8s_openapi::api::core::v1::{Container, PodSecurityContext};

use super::*;

fn container(ctx: serde_json::Value) -> Container {
    serde_json::from_value(serde_json::json!({"name": "c", "securityContext": ctx}))
        .expect("container")
}

fn pod(ctx: serde_json::Value) -> PodSecurityContext {
    serde_json::from_value(ctx).expect("pod security context")
}

fn caps(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| cap_bit(n).expect(n))
        .fold(0, |m, b| m | b)
}

#[test]
fn the_agent_context_keeps_only_the_added_capabilities() {
    let c = container(serde_json::json!({
        "capabilities": {"drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "PERFMON"]},
        "allowPrivilegeEscalation": false,
        "seccompProfile": {"type": "RuntimeDefault"}
    }));
    let got = confinement(None, &c).expect("applies");
    assert_eq!(got.caps, caps(&["BPF", "NET_ADMIN", "PERFMON"]));
    assert_eq!(cap_names(got.caps), ["NET_ADMIN", "PERFMON", "BPF"]);
    assert!(got.no_new_privs && !got.read_only_root && !got.non_root());
    let deny = got.seccomp_deny.expect("RuntimeDefault");
    assert!(
        !deny.contains(&(libc::SYS_bpf as u32)),
        "CAP_BPF allows bpf()"
    );
    assert!(!deny.contains(&(libc::SYS_perf_event_open as u32)));
    assert!(deny.contains(&(libc::SYS_mount as u32)));
    assert!(deny.contains(&(libc::SYS_unshare as u32)));
}

#[test]
fn the_operator_context_runs_as_its_user_without_capabilities() {
    let p = pod(serde_json::json!({
        "runAsNonRoot": true, "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}
    }));
    let c = container(serde_json::json!({
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}
    }));
    let got = confinement(Some(&p), &c).expect("applies");
    assert_eq!((got.uid, got.gid, got.caps), (Some(65532), Some(65532), 0));
    assert!(got.non_root() && got.no_new_privs && got.read_only_root);
    assert!(
        got.seccomp_deny
            .expect("pod-level profile")
            .contains(&(libc::SYS_bpf as u32))
    );
}

#[test]
fn no_context_is_the_runtime_default_set_unconfined() {
    let got = confinement(None, &container(serde_json::json!(null))).expect("applies");
    assert_eq!(got.caps.count_ones() as usize, DEFAULT_CAPS.len());
    assert!(got.caps & caps(&["NET_BIND_SERVICE", "KILL"]) != 0);
    assert_eq!(got.caps & caps(&["NET_ADMIN", "SYS_ADMIN", "BPF"]), 0);
    assert_eq!(
        (got.uid, got.seccomp_deny, got.no_new_privs),
        (None, None, false)
    );
    let dropped = container(serde_json::json!({"capabilities": {"drop": ["NET_RAW", "cap_kill"]}}));
    let got = confinement(None, &dropped).expect("applies");
    assert_eq!(got.caps.count_ones() as usize, DEFAULT_CAPS.len() - 2);
    assert_eq!(got.caps & caps(&["NET_RAW", "KILL"]), 0);
}

#[test]
fn privileged_keeps_everything_and_ignores_the_profile() {
    let c = container(serde_json::json!({
        "privileged": true, "seccompProfile": {"type": "RuntimeDefault"}
    }));
    let got = confinement(None, &c).expect("applies");
    assert_eq!((got.caps, got.seccomp_deny), (ALL_CAPS, None));
}

#[test]
fn the_container_level_overrides_the_pod_level() {
    let p =
        pod(serde_json::json!({"runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}));
    let c =
        container(serde_json::json!({"runAsUser": 0, "seccompProfile": {"type": "Unconfined"}}));
    let got = confinement(Some(&p), &c).expect("applies");
    assert_eq!((got.uid, got.seccomp_deny), (Some(0), None));
}

#[test]
fn what_the_lab_cannot_apply_is_refused() {
    let cases = [
        (
            serde_json::json!({"capabilities": {"add": ["NO_SUCH_CAP"]}}),
            "unknown capability",
        ),
        (
            serde_json::json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}),
            "Localhost",
        ),
        (
            serde_json::json!({"seLinuxOptions": {"level": "s0"}}),
            "seLinux",
        ),
        (
            serde_json::json!({"appArmorProfile": {"type": "RuntimeDefault"}}),
            "AppArmor",
        ),
        (serde_json::json!({"runAsNonRoot": true}), "runAsNonRoot"),
        (serde_json::json!({"runAsUser": -1}), "runAsUser"),
        (
            serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"add": ["SYS_ADMIN"]}}),
            "contradicts",
        ),
    ];
    for (ctx, want) in cases {
        let err = confinement(None, &container(ctx.clone())).expect_err(&ctx.to_string());
        assert!(err.contains(want), "{ctx}: {err}");
    }
}
