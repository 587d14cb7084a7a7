//! The I/O side of flows: [`FlowHub`] holds the ring of flows, the Service
//! names to enrich them with and the followers of new flows; [`FlowHub::attach`]
//! starts the task that reads the datapath's event ring into it: on a short
//! timer, and woken by the ring's descriptor when a quarter of the ring
//! waits (the programs do not wake it for each record: that wake-up cost
//! each connect more than the event itself, `BENCHMARKS.md`, "Flow
//! events").

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use switchyard_node_datapath::{
    DatapathError, FlowEventRing, events_lost, set_flow_event_rate, set_flow_events,
};
use tokio::io::unix::AsyncFd;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::pods::PodSources;
use super::{Clock, Flow, FlowCounts, FlowRing, ServiceIndex, decode};

/// New flows a slow follower may lag behind before it misses some.
const FOLLOW_BACKLOG: usize = 1024;

/// The agent's flows and their readers (see the module doc).
#[derive(Debug)]
pub struct FlowHub {
    ring: Mutex<FlowRing>,
    services: RwLock<Arc<ServiceIndex>>,
    /// Who the clients are.
    pods: Mutex<PodSources>,
    follow: broadcast::Sender<Arc<Flow>>,
    /// Whether the programs emit events (`--flow-events`).
    events_on: bool,
    /// Events each CPU may emit a second (`--flow-events-per-cpu`; 0: no
    /// limit).
    events_per_sec: u32,
    /// The reading task and the pin directory it reads from.
    reader: Mutex<Option<(PathBuf, JoinHandle<()>)>>,
    started: Instant,
}

impl FlowHub {
    /// The events each CPU may emit a second (0: no limit), set on the
    /// programs when the hub attaches.
    pub fn with_rate_limit(mut self, per_sec: u32) -> Self {
        self.events_per_sec = per_sec;
        self
    }

    /// A hub keeping the newest `max_flows` flows.
    pub fn new(max_flows: usize, events_on: bool) -> Self {
        Self {
            ring: Mutex::new(FlowRing::new(max_flows)),
            services: RwLock::new(Arc::default()),
            pods: Mutex::new(PodSources::default()),
            follow: broadcast::channel(FOLLOW_BACKLOG).0,
            events_on,
            events_per_sec: super::DEFAULT_EVENTS_PER_CPU,
            reader: Mutex::new(None),
            started: Instant::now(),
        }
    }

    fn ring(&self) -> MutexGuard<'_, FlowRing> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Services flows are named after, from now on.
    pub fn set_services(&self, index: ServiceIndex) {
        *self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
    }

    /// Changes the names of the clients' pods (or where their cgroups are).
    pub fn pods<T>(&self, f: impl FnOnce(&mut PodSources) -> T) -> T {
        f(&mut self.pods.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Decodes `records` (read at `clock`) into the ring and to followers.
    pub fn ingest<'a>(&self, records: impl IntoIterator<Item = &'a [u8]>, clock: &Clock) {
        let services = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Naming the clients may read the cgroup tree: before the ring is
        // locked, so readers of the flows never wait on it.
        let decoded: Vec<_> = {
            let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
            records
                .into_iter()
                .map(|record| {
                    let mut flow = decode(record, clock, &services)?;
                    flow.source = pods.source(flow.cgroup_id);
                    Ok(flow)
                })
                .collect()
        };
        let mut ring = self.ring();
        for flow in decoded {
            match flow {
                Ok(flow) => {
                    let flow = Arc::new(flow);
                    ring.push(flow.clone());
                    // No follower is not an error.
                    let _ = self.follow.send(flow);
                }
                Err(e) => {
                    debug!(?e, "a flow event record is not a flow");
                    ring.decode_failed(e);
                }
            }
        }
    }

    /// The newest `n` flows matching `keep` (0: all), and a receiver of the
    /// flows after them (subscribed under the same lock: none is missed
    /// or sent twice).
    pub fn last_and_follow(
        &self,
        n: usize,
        keep: impl Fn(&Flow) -> bool,
    ) -> (Vec<Arc<Flow>>, broadcast::Receiver<Arc<Flow>>) {
        let ring = self.ring();
        (ring.last(n, keep), self.follow.subscribe())
    }

    /// Flows kept, the most kept, and the counts.
    pub fn status(&self) -> (usize, usize, FlowCounts) {
        let ring = self.ring();
        (ring.len(), ring.capacity(), ring.counts())
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Events the kernel could not report so far (0 while detached).
    pub fn kernel_lost(&self) -> u64 {
        let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((dir, _)) = reader.as_ref() else {
            return 0;
        };
        events_lost(dir).unwrap_or_else(|e| {
            warn!(error = %e, "reading the flow events lost");
            0
        })
    }

    /// Prometheus text of the flow counts.
    pub fn metrics(&self) -> String {
        super::render_metrics(&self.ring().counts())
    }

    /// Sets the programs' event switch and starts reading the ring pinned
    /// under `bpffs_dir` (again, if another reader ran).
    pub fn attach(self: &Arc<Self>, bpffs_dir: &Path) -> Result<(), DatapathError> {
        set_flow_events(bpffs_dir, self.events_on)?;
        set_flow_event_rate(bpffs_dir, self.events_per_sec)?;
        let ring = FlowEventRing::open(bpffs_dir)?;
        // SAFETY: the descriptor is the ring's map descriptor, which the
        // ring owns and never changes, and the AsyncFd owns the ring.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| DatapathError::Syscall {
                op: "epoll flow events",
                source: e.into(),
            })?;
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        // One consumer at a time: two would both move the ring's consumer
        // position.
        if let Some((_, old)) = reader.take() {
            old.abort();
        }
        let task = tokio::spawn(read(self.clone(), fd));
        *reader = Some((bpffs_dir.to_owned(), task));
        drop(reader);
        info!(events = self.events_on, "reading flow events");
        Ok(())
    }

    /// Stops reading (the datapath went off; its ring is gone).
    pub fn detach(&self) {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, task)) = reader.take() {
            task.abort();
        }
    }
}

/// Both clocks now.
pub fn clock_now() -> Clock {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer;
    // CLOCK_MONOTONIC always exists, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let monotonic_ns = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    Clock {
        wall: SystemTime::now(),
        monotonic_ns,
    }
}

/// How often the reader drains the ring without being woken: the programs
/// wake it only once a quarter of the ring waits (`sock_lb.h`), so at low
/// rates a flow reaches the agent within this.
pub const READ_EVERY: Duration = Duration::from_millis(20);

/// Reads records every [`READ_EVERY`] and whenever the ring's descriptor
/// says a quarter of the ring waits.
async fn read(hub: Arc<FlowHub>, mut fd: AsyncFd<FlowEventRing>) {
    let mut tick = tokio::time::interval(READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = fd.readable_mut() => match ready {
                Ok(mut guard) => {
                    drain(&hub, guard.get_inner_mut());
                    // Clears only if nothing arrived since the wakeup (tokio
                    // compares readiness ticks), so a later wakeup is kept.
                    guard.clear_ready();
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "waiting for flow events; the reader stops");
                    return;
                }
            },
            _ = tick.tick() => {}
        }
        drain(&hub, fd.get_mut());
    }
}

/// Records are borrowed from the ring: copy a batch out, then ingest it
/// without holding the ring.
fn drain(hub: &FlowHub, ring: &mut FlowEventRing) {
    let clock = clock_now();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    ring.drain(|r| batch.push(r.to_vec()));
    if !batch.is_empty() {
        hub.ingest(batch.iter().map(Vec::as_slice), &clock);
    }
}
