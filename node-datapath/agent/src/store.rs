//! The agent's caches of Services and EndpointSlices: compact projections
//! ([`ServiceView`], [`SliceView`]) by `namespace/name`, filled from watch
//! events. Each object is projected on arrival and dropped; the store
//! never holds a k8s-openapi object.
//!
//! [`Index`] is the pure part: it applies watch events as kube-runtime's
//! reflector does (`Init` starts a new set, `InitApply` fills it, `InitDone`
//! swaps it in, so objects absent from a relist are gone). [`Store`] shares
//! one index between the watch task (writer) and the sync (readers).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use switchyard_lb::{ServiceView, SliceView};

/// An object's `(namespace, name)`.
pub type Key = (Box<str>, Box<str>);

/// A watch event, with the object already projected.
#[derive(Clone, Debug)]
pub enum Event<T> {
    /// Added or changed.
    Apply(Key, T),
    /// Deleted.
    Delete(Key),
    /// A (re)list starts.
    Init,
    /// One object of the list.
    InitApply(Key, T),
    /// The list is complete.
    InitDone,
}

/// What applying an event changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied<T> {
    /// The object under `Key` is now `T`.
    Changed(Key, Arc<T>),
    /// The object under `Key` was deleted.
    Deleted(Key),
    /// A relist replaced the whole set.
    Relisted,
    /// Nothing visible yet (inside a relist).
    Buffered,
}

/// Projected objects by key (see the module doc).
#[derive(Debug)]
pub struct Index<T> {
    objects: HashMap<Key, Arc<T>>,
    /// The set a relist is building, swapped in at `InitDone`.
    relisting: Option<HashMap<Key, Arc<T>>>,
    /// A first list completed.
    ready: bool,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            objects: HashMap::new(),
            relisting: None,
            ready: false,
        }
    }
}

impl<T> Index<T> {
    /// Applies one event.
    pub fn apply(&mut self, ev: Event<T>) -> Applied<T> {
        match ev {
            Event::Apply(k, v) => {
                let v = Arc::new(v);
                self.objects.insert(k.clone(), v.clone());
                Applied::Changed(k, v)
            }
            Event::Delete(k) => {
                self.objects.remove(&k);
                Applied::Deleted(k)
            }
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Applied::Buffered
            }
            Event::InitApply(k, v) => {
                self.relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(k, Arc::new(v));
                Applied::Buffered
            }
            Event::InitDone => {
                self.objects = self.relisting.take().unwrap_or_default();
                self.objects.shrink_to_fit();
                self.ready = true;
                Applied::Relisted
            }
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<T>> {
        // HashMap<(Box<str>, Box<str>)> cannot borrow as (&str, &str).
        self.objects.get(&(namespace.into(), name.into()))
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// A first list completed.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Arc<T>)> {
        self.objects.iter()
    }
}

/// One [`Index`] shared by a writer and readers.
#[derive(Debug)]
pub struct Store<T>(Arc<RwLock<Index<T>>>);

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T> Store<T> {
    pub fn read(&self) -> RwLockReadGuard<'_, Index<T>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index<T>> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies one event (see [`Index::apply`]).
    pub fn apply(&self, ev: Event<T>) -> Applied<T> {
        self.write().apply(ev)
    }

    /// The object `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<T>> {
        self.read().get(namespace, name).cloned()
    }
}

/// Services by `namespace/name`.
pub type Services = Store<ServiceView>;
/// EndpointSlices by `namespace/name`.
pub type Slices = Store<SliceView>;

/// The key and projection of a Service.
pub fn service_entry(svc: &Service) -> (Key, ServiceView) {
    (key(&svc.metadata), ServiceView::from(svc))
}

/// The key and projection of an EndpointSlice.
pub fn slice_entry(slice: &EndpointSlice) -> (Key, SliceView) {
    (key(&slice.metadata), SliceView::from(slice))
}

/// `(namespace, name)` of an object.
pub fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    #[test]
    fn apply_and_delete_change_the_set() {
        let mut ix = Index::default();
        assert_eq!(
            ix.apply(Event::Apply(k("a"), 1)),
            Applied::Changed(k("a"), Arc::new(1))
        );
        ix.apply(Event::Apply(k("a"), 2));
        assert_eq!(ix.get("ns", "a").map(|v| **v), Some(2));
        assert_eq!(ix.apply(Event::Delete(k("a"))), Applied::Deleted(k("a")));
        assert!(ix.get("ns", "a").is_none());
        assert!(!ix.is_ready());
    }

    #[test]
    fn a_relist_replaces_the_set_at_init_done_only() {
        let mut ix = Index::default();
        ix.apply(Event::Init);
        ix.apply(Event::InitApply(k("a"), 1));
        ix.apply(Event::InitApply(k("b"), 1));
        assert!(ix.is_empty(), "nothing visible before InitDone");
        assert_eq!(ix.apply(Event::InitDone), Applied::Relisted);
        assert!(ix.is_ready());
        assert_eq!(ix.len(), 2);

        // The watch restarts: "a" is gone, "b" changed, "c" is new; until
        // InitDone readers keep seeing the old set.
        ix.apply(Event::Init);
        ix.apply(Event::InitApply(k("b"), 2));
        ix.apply(Event::InitApply(k("c"), 1));
        assert_eq!(ix.get("ns", "a").map(|v| **v), Some(1));
        ix.apply(Event::InitDone);
        let mut got: Vec<(String, i32)> = ix.iter().map(|(k, v)| (k.1.to_string(), **v)).collect();
        got.sort();
        assert_eq!(got, vec![("b".into(), 2), ("c".into(), 1)]);
    }

    #[test]
    fn an_empty_relist_empties_the_set() {
        let mut ix = Index::default();
        ix.apply(Event::Apply(k("a"), 1));
        ix.apply(Event::Init);
        ix.apply(Event::InitDone);
        assert!(ix.is_empty());
    }

    #[test]
    fn a_store_is_shared_between_clones() {
        let s: Store<u8> = Store::default();
        let reader = s.clone();
        s.apply(Event::Apply(k("a"), 7));
        assert_eq!(reader.get("ns", "a").map(|v| *v), Some(7));
    }
}
