//! Writes the caches have not shown yet (the "expectations"
//! kube-controller-manager's controllers keep): a node's Node or
//! NodeDatapath, and a plan's status.
//!
//! A reconcile decides on the caches the watches fill. Right after the
//! operator writes a node's object, the next reconcile (started by another
//! object's event, or by its own requeue) may still see that object as it
//! was, and decide the same write again; one that still sees the plan's
//! status before the last one it recorded decides again what it had
//! already decided and acted on. The repeat is harmless (every
//! write is idempotent) but it is a request, and at thousands of nodes the
//! repeats added a fraction of a request per node. So an action is not
//! written again while the cache shows its object at the very version it
//! showed when the same action was written, for at most [`EXPECT_FOR`]:
//! once the object changed in the cache, by this write or anyone's, or
//! after that time, the action is written again if it is still decided.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::planner::Action;

/// How long a write is expected to show in the cache before the same
/// action is written again regardless.
pub const EXPECT_FOR: Duration = Duration::from_secs(5);

/// The recent writes per object name (a node's, or a plan's): what was
/// written (`W`: an [`Action`], or nothing more for a plan's status).
#[derive(Debug)]
pub struct Expectations<W = Action> {
    written: Mutex<HashMap<String, Vec<Written<W>>>>,
}

impl<W> Default for Expectations<W> {
    fn default() -> Self {
        Self {
            written: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Debug)]
struct Written<W> {
    action: W,
    /// The object's resourceVersion in the cache when it was written
    /// (`None`: not in the cache).
    before: Option<String>,
    at: Instant,
}

impl<W: PartialEq + Clone> Expectations<W> {
    /// Whether `action` on `node` repeats a write of it that the cache has
    /// not shown: the cache still shows the object at `version`, as when
    /// that write was made, less than [`EXPECT_FOR`] ago.
    pub fn pending(&self, node: &str, action: &W, version: Option<&str>, now: Instant) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(node).is_some_and(|ws| {
            ws.iter().any(|w| {
                w.action == *action
                    && w.before.as_deref() == version
                    && now.duration_since(w.at) < EXPECT_FOR
            })
        })
    }

    /// Records that `action` on `node` was written while the cache showed
    /// its object at `before`; forgets the writes older than [`EXPECT_FOR`].
    pub fn wrote(&self, node: &str, action: &W, before: Option<String>, now: Instant) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.retain(|_, ws| {
            ws.retain(|w| now.duration_since(w.at) < EXPECT_FOR);
            !ws.is_empty()
        });
        let ws = written.entry(node.to_string()).or_default();
        ws.retain(|w| w.action != *action);
        ws.push(Written {
            action: action.clone(),
            before,
            at: now,
        });
    }

    /// Nodes with a write still remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cordon(node: &str) -> Action {
        Action::Cordon { node: node.into() }
    }

    #[test]
    fn a_repeat_is_held_while_the_cache_shows_the_object_as_before() {
        let e: Expectations = Expectations::default();
        let t = Instant::now();
        assert!(
            !e.pending("a", &cordon("a"), Some("1"), t),
            "nothing written"
        );
        e.wrote("a", &cordon("a"), Some("1".into()), t);
        let soon = t + Duration::from_millis(100);
        assert!(e.pending("a", &cordon("a"), Some("1"), soon));
        assert!(
            !e.pending("a", &cordon("a"), Some("2"), soon),
            "the object changed in the cache: decide on it again"
        );
        assert!(
            !e.pending("a", &Action::Uncordon { node: "a".into() }, Some("1"), soon),
            "another action"
        );
        assert!(
            !e.pending("b", &cordon("b"), Some("1"), soon),
            "another node"
        );
        assert!(
            !e.pending("a", &cordon("a"), Some("1"), t + EXPECT_FOR),
            "never held longer than EXPECT_FOR"
        );
    }

    #[test]
    fn an_object_not_yet_cached_is_expected_to_appear() {
        let e: Expectations = Expectations::default();
        let t = Instant::now();
        e.wrote("a", &cordon("a"), None, t);
        assert!(e.pending("a", &cordon("a"), None, t));
        assert!(!e.pending("a", &cordon("a"), Some("5"), t));
    }

    #[test]
    fn old_writes_are_forgotten_when_new_ones_are_recorded() {
        let e: Expectations = Expectations::default();
        let t = Instant::now();
        e.wrote("a", &cordon("a"), Some("1".into()), t);
        e.wrote("a", &cordon("a"), Some("2".into()), t);
        assert!(!e.pending("a", &cordon("a"), Some("1"), t), "replaced");
        e.wrote("b", &cordon("b"), Some("1".into()), t + EXPECT_FOR);
        assert_eq!(e.len(), 1, "a's write expired");
    }
}
