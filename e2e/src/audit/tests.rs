use super::rbac::{self, Grant, grants, unused};
use super::*;

/// Audit lines as kube-apiserver 1.34 writes them (Metadata level),
/// trimmed to the fields that matter and one other user's.
const LOG: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy","verb":"get","user":{"username":"system:serviceaccount:switchyard-system:switchyard-operator","groups":["system:serviceaccounts"]},"objectRef":{"resource":"daemonsets","namespace":"kube-system","name":"kube-proxy","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy","verb":"get","user":{"username":"system:serviceaccount:switchyard-system:switchyard-operator"},"objectRef":{"resource":"daemonsets","namespace":"kube-system","name":"kube-proxy","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseStarted","requestURI":"/api/v1/services?watch=true","verb":"watch","user":{"username":"system:serviceaccount:switchyard-system:switchyard-agent"},"objectRef":{"resource":"services","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a4","stage":"ResponseComplete","requestURI":"/apis/switchyard.dev/v1alpha1/nodedatapaths/n1/status","verb":"patch","user":{"username":"system:serviceaccount:switchyard-system:switchyard-agent"},"objectRef":{"resource":"nodedatapaths","name":"n1","apiGroup":"switchyard.dev","apiVersion":"v1alpha1","subresource":"status"},"responseStatus":{"metadata":{},"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a5","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/configmaps/kube-proxy","verb":"delete","user":{"username":"system:serviceaccount:switchyard-system:switchyard-operator"},"objectRef":{"resource":"configmaps","namespace":"kube-system","name":"kube-proxy","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","reason":"Forbidden","code":403},"annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a6","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/switchyard-system/configmaps/b?fieldManager=switchyard","verb":"patch","user":{"username":"system:serviceaccount:switchyard-system:switchyard-operator"},"objectRef":{"resource":"configmaps","namespace":"switchyard-system","name":"b","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a7","stage":"ResponseComplete","requestURI":"/api/v1/nodes","verb":"list","user":{"username":"system:kube-scheduler"},"objectRef":{"resource":"nodes","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a8","stage":"ResponseComplete","requestURI":"/version","verb":"get","user":{"username":"system:serviceaccount:switchyard-system:switchyard-agent"},"responseStatus":{"metadata":{},"code":403}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a9","stage":"ResponseComplete","requestURI":"/apis/switchyard.dev/v1alpha1/nodedatapaths/n2/status","verb":"patch","user":{"username":"system:serviceaccount:switchyard-system:switchyard-agent"},"userAgent":"kube-rs","objectRef":{"resource":"nodedatapaths","name":"n2","apiGroup":"switchyard.dev","apiVersion":"v1alpha1","subresource":"status"},"responseStatus":{"metadata":{},"status":"Failure","reason":"Forbidden","code":403},"annotations":{"authorization.k8s.io/decision":"allow","validation.policy.admission.k8s.io/validation_failure":"[]"}}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a10","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy","verb":"update","user":{"username":"system:serviceaccount:switchyard-system:switchyard-operator"},"userAgent":"switchyard-e2e-test","objectRef":{"resource":"daemonsets","namespace":"kube-system","name":"kube-proxy","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"annotations":{"authorization.k8s.io/decision":"allow"}}
not json
"#;

const OP: &str = OPERATOR_USER;

#[test]
fn requests_are_the_switchyard_users_deduplicated() {
    let r = requests(LOG.lines());
    // a1 and a2 are one record; the scheduler's, the test's own (a10) and
    // the garbage line are gone.
    assert_eq!(r.len(), 7, "{r:#?}");
    assert!(r.iter().all(|r| USERS.contains(&r.user.as_str())));
    let status = r
        .iter()
        .find(|r| r.verb == "patch" && r.user == AGENT_USER)
        .unwrap();
    assert_eq!(status.rbac_resource(), "nodedatapaths/status");
    assert_eq!(status.namespace, None);
}

#[test]
fn refused_requests_are_the_authorizers_denials_not_admissions() {
    let r = requests(LOG.lines());
    let refused: Vec<String> = r
        .iter()
        .filter(|r| r.forbidden())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        refused,
        [
            format!("{AGENT_USER} get core/ named /version → 403"),
            format!("{OP} delete core/configmaps in kube-system named kube-proxy → 403"),
        ]
    );
}

#[test]
fn a_request_admission_denied_was_allowed_by_rbac() {
    let denied = requests(LOG.lines())
        .into_iter()
        .find(|r| r.code == 403 && !r.refused)
        .unwrap();
    assert_eq!(denied.name.as_deref(), Some("n2"));
    let g = grants(RBAC).unwrap();
    let status = g
        .iter()
        .find(|g| g.resource == "nodedatapaths/status")
        .unwrap();
    assert!(status.exercised_by(&denied));
}

#[test]
fn records_round_trip_through_json() {
    for r in requests(LOG.lines()) {
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
    }
}

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: agent}
rules:
  - apiGroups: [""]
    resources: [services]
    verbs: [list, watch]
  - apiGroups: [switchyard.dev]
    resources: [nodedatapaths/status]
    verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: agent}
subjects:
  - {kind: ServiceAccount, name: switchyard-agent, namespace: switchyard-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: switchyard-operator, namespace: switchyard-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: kp, namespace: kube-system}
rules:
  - apiGroups: [apps]
    resources: [daemonsets]
    resourceNames: [kube-proxy]
    verbs: [get, update]
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [kube-proxy]
    verbs: [delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: kp, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kp}
subjects:
  - {kind: ServiceAccount, name: switchyard-operator, namespace: switchyard-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: backups, namespace: switchyard-system}
rules:
  - apiGroups: [""]
    resources: [configmaps]
    verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: backups, namespace: switchyard-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: backups}
subjects:
  - {kind: ServiceAccount, name: switchyard-operator}
"#;

fn shown(g: &[&Grant]) -> Vec<String> {
    g.iter().map(ToString::to_string).collect()
}

#[test]
fn rules_expand_to_one_grant_per_verb_and_name_scoped_by_binding() {
    let g = grants(RBAC).unwrap();
    let all: Vec<String> = g.iter().map(ToString::to_string).collect();
    assert_eq!(
        all,
        [
            "switchyard-agent: list core/services cluster-wide",
            "switchyard-agent: watch core/services cluster-wide",
            "switchyard-agent: patch switchyard.dev/nodedatapaths/status cluster-wide",
            "switchyard-operator: create core/configmaps in switchyard-system",
            "switchyard-operator: delete core/configmaps in kube-system named kube-proxy",
            "switchyard-operator: get apps/daemonsets in kube-system named kube-proxy",
            "switchyard-operator: update apps/daemonsets in kube-system named kube-proxy",
        ]
    );
}

#[test]
fn unused_grants_are_those_no_allowed_request_matched() {
    let g = grants(RBAC).unwrap();
    // The refused delete does not exercise the delete grant; the apply
    // that created the backup (201) exercises `create`.
    assert_eq!(
        shown(&unused(&g, &requests(LOG.lines()))),
        [
            "switchyard-agent: list core/services cluster-wide",
            "switchyard-operator: delete core/configmaps in kube-system named kube-proxy",
            "switchyard-operator: update apps/daemonsets in kube-system named kube-proxy",
        ]
    );
}

#[test]
fn a_request_must_match_the_name_and_namespace_of_a_grant() {
    let g = grants(RBAC).unwrap();
    let mut r = requests(LOG.lines())
        .into_iter()
        .find(|r| r.verb == "get" && r.resource == "daemonsets")
        .unwrap();
    let get = g.iter().find(|g| g.verb == "get").unwrap();
    assert!(get.exercised_by(&r));
    r.name = Some("other".into());
    assert!(!get.exercised_by(&r));
    r.name = Some("kube-proxy".into());
    r.namespace = Some("default".into());
    assert!(!get.exercised_by(&r));
}

#[test]
fn a_patch_that_did_not_create_is_no_create() {
    let g = grants(RBAC).unwrap();
    let create = g.iter().find(|g| g.verb == "create").unwrap();
    let mut r = requests(LOG.lines())
        .into_iter()
        .find(|r| r.code == 201)
        .unwrap();
    assert!(create.exercised_by(&r));
    r.code = 200;
    assert!(!create.exercised_by(&r));
}

#[test]
fn the_policy_logs_only_the_switchyard_users() {
    let p: serde_yaml::Value = serde_yaml::from_str(&policy()).unwrap();
    let rules = p["rules"].as_sequence().unwrap();
    assert_eq!(rules[0]["level"], "Metadata");
    let users: Vec<&str> = rules[0]["users"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(users, USERS);
    assert_eq!(rules[1]["level"], "None");
}

#[test]
fn a_scenario_is_its_test_binary_without_the_hash() {
    use std::path::Path;
    assert_eq!(
        records::scenario_of(Path::new("/t/debug/deps/migration-0123456789abcdef")),
        "migration"
    );
    assert_eq!(
        records::scenario_of(Path::new("/t/debug/deps/north_south-fedcba9876543210")),
        "north_south"
    );
    assert_eq!(
        records::scenario_of(Path::new("/t/debug/switchyard-lab")),
        "switchyard-lab"
    );
}

#[test]
fn requests_no_grant_covers_are_reported() {
    let g = grants(RBAC).unwrap();
    let r = requests(LOG.lines());
    let shown: Vec<String> = rbac::ungranted(&g, &r)
        .iter()
        .map(ToString::to_string)
        .collect();
    // The backup's apply: the Role allows only `create` there.
    assert_eq!(
        shown,
        [format!(
            "{OP} patch core/configmaps in switchyard-system named b → 201"
        )]
    );
}
