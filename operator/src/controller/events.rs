//! The planner's Events, written to `events.k8s.io/v1` as they are decided.
//!
//! kube-runtime's `Recorder` keeps every Event it wrote for six minutes,
//! to count a repeat into a series instead of writing a new one. The
//! operator's Events do not repeat: each marks one node's or one plan's
//! step (`NodesStarted`, `NodeMigrated`, a phase). In a 2 000-node
//! migration that cache held 17.7 MiB of Events for nothing, the largest
//! allocation of the migration (`BENCHMARKS.md`, "Operator at scale").

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::core::Request;
use kube::{Client, Resource};
use serde::de::IgnoredAny;
use switchyard_api::FIELD_MANAGER;

use crate::planner::Event;

/// The `note` limit of `events.k8s.io/v1` (longer notes are refused).
const NOTE_MAX_CHARS: usize = 1000;

/// The action every Event reports.
const ACTION: &str = "Migrate";

/// Who writes the Events: the operator, and which of its pods.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    instance: String,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("instance", &self.instance)
            .finish()
    }
}

impl Publisher {
    /// `instance`: the operator pod's name (the controller's name without one).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
        }
    }

    /// Creates the Event about `regarding`. The answer (the Event again) is
    /// parsed without being kept.
    pub async fn publish(
        &self,
        e: &Event,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
    ) -> Result<(), kube::Error> {
        let ev = event(e, regarding, related, &self.instance, Timestamp::now());
        let namespace = ev.metadata.namespace.as_deref().unwrap_or("default");
        let request = Request::new(K8sEvent::url_path(&(), Some(namespace)))
            .create(
                &PostParams::default(),
                serde_json::to_vec(&ev).map_err(kube::Error::SerdeError)?,
            )
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<IgnoredAny>(request).await?;
        Ok(())
    }
}

/// The Event for `e` at `now`, in the namespace of what it regards
/// (`default` for a cluster-scoped Node or plan), named after it and the
/// time as kube's own recorders name theirs.
pub fn event(
    e: &Event,
    regarding: ObjectReference,
    related: Option<ObjectReference>,
    instance: &str,
    now: Timestamp,
) -> K8sEvent {
    let name = regarding.name.as_deref().unwrap_or(FIELD_MANAGER);
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(
                regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            ..ObjectMeta::default()
        },
        action: Some(ACTION.into()),
        reason: Some(e.reason.clone()),
        note: Some(e.message.chars().take(NOTE_MAX_CHARS).collect()),
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(instance.into()),
        regarding: Some(regarding),
        related,
        ..K8sEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(name.into()),
            ..ObjectReference::default()
        }
    }

    fn planned(warning: bool, message: &str) -> Event {
        Event {
            node: Some("n1".into()),
            warning,
            reason: "NodeMigrated".into(),
            message: message.into(),
        }
    }

    #[test]
    fn an_event_regards_its_object_in_default_named_after_it_and_the_time() {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let plan = ObjectReference {
            kind: Some("MigrationPlan".into()),
            name: Some("p".into()),
            ..ObjectReference::default()
        };
        let e = event(
            &planned(false, "done"),
            node("n1"),
            Some(plan.clone()),
            "op-0",
            now,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            e.metadata.name,
            Some(format!("n1.{:x}", now.as_nanosecond()))
        );
        assert_eq!(e.type_.as_deref(), Some("Normal"));
        assert_eq!(e.reason.as_deref(), Some("NodeMigrated"));
        assert_eq!(e.note.as_deref(), Some("done"));
        assert_eq!(e.regarding, Some(node("n1")));
        assert_eq!(e.related, Some(plan));
        assert_eq!(e.reporting_controller.as_deref(), Some(FIELD_MANAGER));
        assert_eq!(e.reporting_instance.as_deref(), Some("op-0"));
        assert_eq!(e.event_time, Some(MicroTime(now)));
    }

    #[test]
    fn a_warning_is_one_and_a_long_note_is_cut_to_the_api_limit() {
        let long = "x".repeat(NOTE_MAX_CHARS + 50);
        let namespaced = ObjectReference {
            namespace: Some("kube-system".into()),
            ..node("kube-proxy")
        };
        let e = event(
            &planned(true, &long),
            namespaced,
            None,
            "op",
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.note.map(|n| n.chars().count()), Some(NOTE_MAX_CHARS));
        assert_eq!(e.metadata.namespace.as_deref(), Some("kube-system"));
    }
}
