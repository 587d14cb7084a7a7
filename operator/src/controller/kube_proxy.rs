//! Pure transformations of kube-proxy's objects: the per-node exclusion
//! (a required nodeAffinity term on the DaemonSet), the hold on its rollout
//! (`OnDelete` while a plan edits the template, the user's strategy kept in
//! an annotation) and the backup ConfigMap the operator writes before
//! deleting kube-proxy and restores on rollback.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard_api::{
    BACKUP_PLAN_LABEL, KUBE_PROXY_EXCLUDED_LABEL, KUBE_PROXY_STRATEGY_ANNOTATION,
};

use crate::error::{Error, Result};

const DS_KEY: &str = "daemonset.yaml";
const CM_KEY: &str = "configmap.yaml";

fn exclusion() -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: KUBE_PROXY_EXCLUDED_LABEL.into(),
        operator: "DoesNotExist".into(),
        values: None,
    }
}

fn required_terms(ds: &DaemonSet) -> Option<&Vec<NodeSelectorTerm>> {
    let sel = ds
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    Some(&sel.node_selector_terms)
}

/// Whether every required nodeAffinity term excludes labelled nodes (the
/// terms are ORed, so each must carry the exclusion).
pub fn excludes_label(ds: &DaemonSet) -> bool {
    required_terms(ds).is_some_and(|terms| {
        !terms.is_empty()
            && terms.iter().all(|t| {
                t.match_expressions
                    .iter()
                    .flatten()
                    .any(|e| *e == exclusion())
            })
    })
}

/// The DaemonSet with the exclusion added to every required term (one term
/// created if there is none). Idempotent.
pub fn with_exclusion(mut ds: DaemonSet) -> DaemonSet {
    let spec = ds.spec.get_or_insert_with(Default::default);
    let pod = spec.template.spec.get_or_insert_with(Default::default);
    let affinity = pod.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let sel = na
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(NodeSelector::default);
    if sel.node_selector_terms.is_empty() {
        sel.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut sel.node_selector_terms {
        let exprs = term.match_expressions.get_or_insert_with(Vec::new);
        if !exprs.contains(&exclusion()) {
            exprs.push(exclusion());
        }
    }
    ds
}

/// The DaemonSet without our exclusion (as the user had it).
pub fn without_exclusion(mut ds: DaemonSet) -> DaemonSet {
    let Some(pod) = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return ds;
    };
    if let Some(affinity) = pod.affinity.as_mut() {
        if let Some(na) = affinity.node_affinity.as_mut() {
            if let Some(sel) = na
                .required_during_scheduling_ignored_during_execution
                .as_mut()
            {
                for term in &mut sel.node_selector_terms {
                    if let Some(exprs) = term.match_expressions.as_mut() {
                        exprs.retain(|e| *e != exclusion());
                        if exprs.is_empty() {
                            term.match_expressions = None;
                        }
                    }
                }
                sel.node_selector_terms
                    .retain(|t| t.match_expressions.is_some() || t.match_fields.is_some());
                if sel.node_selector_terms.is_empty() {
                    na.required_during_scheduling_ignored_during_execution = None;
                }
            }
            if na
                .required_during_scheduling_ignored_during_execution
                .is_none()
                && na
                    .preferred_during_scheduling_ignored_during_execution
                    .is_none()
            {
                affinity.node_affinity = None;
            }
        }
        if affinity.node_affinity.is_none()
            && affinity.pod_affinity.is_none()
            && affinity.pod_anti_affinity.is_none()
        {
            pod.affinity = None;
        }
    }
    ds
}

const ON_DELETE: &str = "OnDelete";

fn held_strategy(ds: &DaemonSet) -> Option<&String> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(KUBE_PROXY_STRATEGY_ANNOTATION)
}

/// Whether the rollout is held: the user's strategy is remembered and the
/// DaemonSet updates `OnDelete`, so a template edit restarts no pod.
pub fn rollout_held(ds: &DaemonSet) -> bool {
    held_strategy(ds).is_some()
        && ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            == Some(ON_DELETE)
}

/// Whether every kube-proxy pod runs the DaemonSet's current template, as
/// the DaemonSet controller last reported (`None`: it has not reported on
/// the current generation yet).
pub fn pods_current(ds: &DaemonSet) -> Option<bool> {
    let status = ds.status.as_ref()?;
    let seen = status.observed_generation?;
    if seen < ds.metadata.generation.unwrap_or(0) {
        return None;
    }
    Some(status.updated_number_scheduled.unwrap_or(0) >= status.current_number_scheduled)
}

/// The DaemonSet with its rollout held: its own strategy written to the
/// annotation (unless one is there already: the first hold remembers the
/// user's) and `OnDelete` set. Idempotent.
pub fn with_rollout_held(mut ds: DaemonSet) -> Result<DaemonSet> {
    let original = ds.spec.as_ref().and_then(|s| s.update_strategy.clone());
    if held_strategy(&ds).is_none() {
        let json = serde_json::to_string(&original).map_err(|source| Error::Annotation {
            name: KUBE_PROXY_STRATEGY_ANNOTATION,
            source,
        })?;
        ds.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(KUBE_PROXY_STRATEGY_ANNOTATION.into(), json);
    }
    ds.spec.get_or_insert_with(Default::default).update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some(ON_DELETE.into()),
        rolling_update: None,
    });
    Ok(ds)
}

/// The DaemonSet with the user's strategy back from the annotation (which
/// is removed); without the annotation, the strategy is left as it is.
/// `restore_template`: our exclusion leaves the pod template too.
pub fn with_rollout_released(mut ds: DaemonSet, restore_template: bool) -> Result<DaemonSet> {
    if let Some(json) = held_strategy(&ds).cloned() {
        let original: Option<DaemonSetUpdateStrategy> =
            serde_json::from_str(&json).map_err(|source| Error::Annotation {
                name: KUBE_PROXY_STRATEGY_ANNOTATION,
                source,
            })?;
        ds.spec.get_or_insert_with(Default::default).update_strategy = original;
        if let Some(a) = ds.metadata.annotations.as_mut() {
            a.remove(KUBE_PROXY_STRATEGY_ANNOTATION);
            if a.is_empty() {
                ds.metadata.annotations = None;
            }
        }
    }
    Ok(if restore_template {
        without_exclusion(ds)
    } else {
        ds
    })
}

/// Metadata fit to re-create an object: server-set fields dropped.
fn portable(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone().map(|mut a| {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("deprecated.daemonset.template.generation");
            a
        }),
        ..ObjectMeta::default()
    }
}

fn yaml<T: serde::Serialize>(what: &'static str, v: &T) -> Result<String> {
    serde_yaml::to_string(v).map_err(|source| Error::Yaml { what, source })
}

/// The backup ConfigMap of kube-proxy's DaemonSet (as the user had it:
/// without our exclusion, with its own update strategy) and ConfigMap, in
/// the operator's namespace.
pub fn backup(
    name: &str,
    namespace: &str,
    plan: &str,
    ds: &DaemonSet,
    cm: &ConfigMap,
) -> Result<ConfigMap> {
    let ds = DaemonSet {
        metadata: portable(&ds.metadata),
        spec: ds.spec.clone(),
        status: None,
    };
    let ds = with_rollout_released(ds, true)?;
    let cm = ConfigMap {
        metadata: portable(&cm.metadata),
        data: cm.data.clone(),
        binary_data: cm.binary_data.clone(),
        immutable: cm.immutable,
    };
    let data = BTreeMap::from([
        (DS_KEY.to_string(), yaml("DaemonSet backup", &ds)?),
        (CM_KEY.to_string(), yaml("ConfigMap backup", &cm)?),
    ]);
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                (BACKUP_PLAN_LABEL.to_string(), plan.to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "switchyard".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// Whether a backup holds both objects.
pub fn backup_complete(cm: &ConfigMap) -> bool {
    cm.data
        .as_ref()
        .is_some_and(|d| d.contains_key(DS_KEY) && d.contains_key(CM_KEY))
}

/// The DaemonSet (with our exclusion, so kube-proxy returns node by node,
/// and its rollout held, so a later release restarts no pod) and ConfigMap
/// to re-create from a backup.
pub fn restore(backup: &ConfigMap) -> Result<(DaemonSet, ConfigMap)> {
    let name = backup.metadata.name.clone().unwrap_or_default();
    let data = backup
        .data
        .as_ref()
        .ok_or_else(|| Error::BackupMissing(name.clone()))?;
    let get = |k: &str| {
        data.get(k)
            .ok_or_else(|| Error::BackupMissing(name.clone()))
    };
    let ds: DaemonSet = serde_yaml::from_str(get(DS_KEY)?).map_err(|source| Error::Yaml {
        what: "DaemonSet backup",
        source,
    })?;
    let cm: ConfigMap = serde_yaml::from_str(get(CM_KEY)?).map_err(|source| Error::Yaml {
        what: "ConfigMap backup",
        source,
    })?;
    Ok((with_rollout_held(with_exclusion(ds))?, cm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetStatus, RollingUpdateDaemonSet};
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ds(affinity: Option<Affinity>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("kube-proxy".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        affinity,
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..DaemonSetSpec::default()
            }),
            status: None,
        }
    }

    fn user_term() -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: "kubernetes.io/os".into(),
                operator: "In".into(),
                values: Some(vec!["linux".into()]),
            }]),
            match_fields: None,
        }
    }

    fn with_terms(terms: Vec<NodeSelectorTerm>) -> Option<Affinity> {
        Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        })
    }

    #[test]
    fn exclusion_is_added_to_every_term_idempotently_and_removed_cleanly() {
        let plain = ds(None);
        assert!(!excludes_label(&plain));
        let once = with_exclusion(plain.clone());
        assert!(excludes_label(&once));
        assert_eq!(with_exclusion(once.clone()), once);
        assert_eq!(without_exclusion(once), plain);

        let two = ds(with_terms(vec![user_term(), user_term()]));
        let excl = with_exclusion(two.clone());
        assert!(excludes_label(&excl));
        assert_eq!(
            required_terms(&excl)
                .unwrap()
                .iter()
                .map(|t| t.match_expressions.as_ref().unwrap().len())
                .collect::<Vec<_>>(),
            vec![2, 2]
        );
        assert_eq!(without_exclusion(excl), two);
    }

    #[test]
    fn one_term_without_the_exclusion_means_not_excluded() {
        let mut d = with_exclusion(ds(with_terms(vec![user_term()])));
        let terms = &mut d
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .affinity
            .as_mut()
            .unwrap()
            .node_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_mut()
            .unwrap()
            .node_selector_terms;
        terms.push(user_term());
        assert!(
            !excludes_label(&d),
            "ORed terms: a term without the exclusion still schedules on labelled nodes"
        );
    }

    #[test]
    fn backup_round_trips_without_server_fields_and_restores_excluded() {
        let original = ds(with_terms(vec![user_term()]));
        let live = with_exclusion(original.clone());
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("kube-proxy".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u-2".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "config.conf".into(),
                "mode: iptables\n".into(),
            )])),
            ..ConfigMap::default()
        };
        let b = backup(
            "switchyard-kube-proxy-backup-p",
            "switchyard-system",
            "p",
            &live,
            &cm,
        )
        .unwrap();
        assert!(backup_complete(&b));
        assert_eq!(b.metadata.labels.as_ref().unwrap()[BACKUP_PLAN_LABEL], "p");
        let text = &b.data.as_ref().unwrap()[DS_KEY];
        assert!(
            !text.contains(KUBE_PROXY_EXCLUDED_LABEL),
            "the backup holds the user's DaemonSet"
        );
        assert!(!text.contains("resourceVersion") && !text.contains("u-1"));
        let (ds2, cm2) = restore(&b).unwrap();
        assert!(excludes_label(&ds2));
        assert!(rollout_held(&ds2), "a restored DaemonSet comes back held");
        assert_eq!(
            with_rollout_released(ds2, true).unwrap().spec,
            original.spec
        );
        assert_eq!(cm2.data, cm.data);
        assert_eq!(cm2.metadata.uid, None);

        let mut broken = b.clone();
        broken.data.as_mut().unwrap().remove(CM_KEY);
        assert!(!backup_complete(&broken));
        assert!(matches!(restore(&broken), Err(Error::BackupMissing(_))));
    }

    fn rolling(max_unavailable: i32) -> DaemonSetUpdateStrategy {
        DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_unavailable: Some(IntOrString::Int(max_unavailable)),
                max_surge: Some(IntOrString::Int(0)),
            }),
        }
    }

    fn strategy(d: &DaemonSet) -> Option<&DaemonSetUpdateStrategy> {
        d.spec.as_ref().unwrap().update_strategy.as_ref()
    }

    #[test]
    fn the_hold_remembers_the_first_strategy_and_the_release_restores_it() {
        let mut user = ds(with_terms(vec![user_term()]));
        user.metadata.annotations = Some(BTreeMap::from([("team".into(), "net".into())]));
        user.spec.as_mut().unwrap().update_strategy = Some(rolling(2));
        assert!(!rollout_held(&user));

        let held = with_rollout_held(user.clone()).unwrap();
        assert!(rollout_held(&held));
        assert_eq!(strategy(&held).unwrap().type_.as_deref(), Some("OnDelete"));
        assert_eq!(strategy(&held).unwrap().rolling_update, None);
        assert_eq!(with_rollout_held(held.clone()).unwrap(), held, "idempotent");

        // Someone sets RollingUpdate meanwhile: holding again keeps the
        // strategy remembered first.
        let mut reverted = held.clone();
        reverted.spec.as_mut().unwrap().update_strategy = Some(rolling(5));
        assert!(!rollout_held(&reverted));
        assert_eq!(with_rollout_held(reverted).unwrap(), held);

        // Released with the template as it is (the exclusion stays) or with
        // the user's template back; either way the user's strategy and
        // annotations, and releasing twice changes nothing.
        let excluded = with_exclusion(held);
        let kept = with_rollout_released(excluded.clone(), false).unwrap();
        assert!(excludes_label(&kept) && !rollout_held(&kept));
        assert_eq!(strategy(&kept), Some(&rolling(2)));
        assert_eq!(kept.metadata.annotations, user.metadata.annotations);
        assert_eq!(with_rollout_released(kept.clone(), false).unwrap(), kept);
        let restored = with_rollout_released(excluded, true).unwrap();
        assert_eq!(restored, user);
    }

    #[test]
    fn a_daemon_set_without_a_strategy_is_released_without_one() {
        let plain = ds(None);
        let held = with_rollout_held(plain.clone()).unwrap();
        assert_eq!(
            held.metadata.annotations.as_ref().unwrap()[KUBE_PROXY_STRATEGY_ANNOTATION],
            "null"
        );
        assert_eq!(with_rollout_released(held, true).unwrap(), plain);

        let mut broken = with_rollout_held(plain).unwrap();
        broken
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(KUBE_PROXY_STRATEGY_ANNOTATION.into(), "{".into());
        assert!(matches!(
            with_rollout_released(broken, false),
            Err(Error::Annotation { .. })
        ));
    }

    #[test]
    fn pods_are_current_only_as_reported_for_the_current_generation() {
        let mut d = ds(None);
        assert_eq!(pods_current(&d), None, "no status yet");
        d.metadata.generation = Some(3);
        let status = |observed, current, updated| DaemonSetStatus {
            observed_generation: Some(observed),
            current_number_scheduled: current,
            updated_number_scheduled: Some(updated),
            ..DaemonSetStatus::default()
        };
        d.status = Some(status(2, 3, 3));
        assert_eq!(pods_current(&d), None, "status of an older generation");
        d.status = Some(status(3, 3, 1));
        assert_eq!(pods_current(&d), Some(false));
        d.status = Some(status(3, 3, 3));
        assert_eq!(pods_current(&d), Some(true));
        d.status = Some(status(3, 0, 0));
        assert_eq!(pods_current(&d), Some(true), "no pod at all");
    }
}
