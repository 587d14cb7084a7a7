//! A consumer of the datapath's flow events that does the agent's work
//! (`switchyard_agent::flows::reader`) on its own thread: it drains every
//! waiting record ([`FlowEventRing::drain`]), copies the batch out, and
//! hands it to the agent's [`FlowHub`], which decodes each record
//! (`switchyard_abi::FlowEvent::from_bytes`), names its Service and pod and
//! keeps it.
//!
//! What wakes it is [`Wake`]: as the agent's reader, an interval timer and
//! the ring's descriptor (tokio's `AsyncFd`, epoll, in the agent; here
//! poll(2) on the same descriptor, so no runtime is needed), which the
//! programs signal only once a quarter of the ring waits; or the timer
//! alone, for comparison.
//!
//! [`Consumer::sync`] is the barrier the loss accounting needs: once the
//! load generator has exited, every record it caused is in the ring, and
//! `sync` returns only after the thread has drained the ring.

use std::{
    os::fd::AsFd,
    path::Path,
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        eventfd::EventFd,
        time::TimeSpec,
        timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
    },
};
use switchyard_agent::flows::{FlowCounts, reader::FlowHub, reader::clock_now};
use switchyard_node_datapath::FlowEventRing;

use crate::BenchError;

/// What the consumer has read so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Every record read (flows and records that did not decode).
    pub records: u64,
    /// Records that decoded to a forwarded flow.
    pub forwarded: u64,
    /// Records that decoded to a refused flow.
    pub dropped: u64,
    /// Records that did not decode.
    pub undecoded: u64,
}

impl Received {
    /// From the hub's counts.
    pub fn of(c: &FlowCounts) -> Self {
        let undecoded = c.decode_length + c.decode_field;
        Self {
            records: c.seen + undecoded,
            forwarded: c.forwarded,
            dropped: c.dropped,
            undecoded,
        }
    }

    /// What was read between `earlier` and `self`.
    pub fn since(&self, earlier: &Received) -> Received {
        Received {
            records: self.records.saturating_sub(earlier.records),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            undecoded: self.undecoded.saturating_sub(earlier.undecoded),
        }
    }
}

/// What wakes the consumer to drain the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A timer every interval; records wait in the ring up to one interval.
    Every(Duration),
    /// The ring's descriptor and a timer, as the agent's reader waits: the
    /// programs wake the ring's reader only once a quarter of it waits, the
    /// timer (the agent's `READ_EVERY`) drains the rest.
    Agent(Duration),
}

enum Cmd {
    /// Drain the ring, then answer.
    Sync(mpsc::Sender<()>),
    /// Drain the ring, then end.
    Stop,
}

/// The consuming thread; stopped (after a last drain) on drop.
pub struct Consumer {
    hub: Arc<FlowHub>,
    wake: Arc<EventFd>,
    cmds: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<Result<(), BenchError>>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

fn errno(what: &'static str) -> impl FnOnce(nix::Error) -> BenchError {
    move |e| BenchError::io(what, e.into())
}

impl Consumer {
    /// Opens the ring pinned under `bpffs_dir` and starts reading it into
    /// `hub`. One consumer at a time per ring: two would both move its
    /// consumer position.
    pub fn start(bpffs_dir: &Path, hub: Arc<FlowHub>, mode: Wake) -> Result<Self, BenchError> {
        let ring = FlowEventRing::open(bpffs_dir)?;
        let wake = Arc::new(EventFd::new().map_err(errno("eventfd"))?);
        let (cmds, rx) = mpsc::channel();
        let thread = {
            let (hub, wake) = (hub.clone(), wake.clone());
            std::thread::Builder::new()
                .name("flow-events".into())
                .spawn(move || consume((ring, mode), &hub, &wake, &rx))
                .map_err(|e| BenchError::io("spawn the flow event consumer", e))?
        };
        Ok(Self {
            hub,
            wake,
            cmds,
            thread: Some(thread),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), BenchError> {
        let gone = || BenchError::Arg("the flow event consumer has stopped".into());
        self.cmds.send(cmd).map_err(|_| gone())?;
        self.wake.write(1).map_err(errno("eventfd write"))?;
        Ok(())
    }

    /// What was read once every record in the ring now has been read.
    pub fn sync(&self) -> Result<Received, BenchError> {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Sync(tx))?;
        rx.recv()
            .map_err(|_| BenchError::Arg("the flow event consumer ended during a sync".into()))?;
        Ok(Received::of(&self.hub.status().2))
    }

    /// Drains the ring a last time, stops the thread, returns what it read.
    pub fn stop(mut self) -> Result<Received, BenchError> {
        self.join()?;
        Ok(Received::of(&self.hub.status().2))
    }

    fn join(&mut self) -> Result<(), BenchError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // A thread that already ended has dropped its receiver: join tells.
        let _ = self.send(Cmd::Stop);
        thread
            .join()
            .unwrap_or_else(|_| Err(BenchError::Arg("the flow event consumer panicked".into())))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            tracing::warn!(error = %e, "flow event consumer");
        }
    }
}

/// A timer expiring every `every`.
fn interval_timer(every: Duration) -> Result<TimerFd, BenchError> {
    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC)
        .map_err(errno("timerfd_create"))?;
    let every = TimeSpec::from_duration(every);
    timer
        .set(Expiration::Interval(every), TimerSetTimeFlags::empty())
        .map_err(errno("timerfd_settime"))?;
    Ok(timer)
}

/// What the consumer waits on: (the ring's descriptor, a timer).
fn sources(mode: Wake) -> Result<(bool, Option<TimerFd>), BenchError> {
    Ok(match mode {
        Wake::Every(every) => (false, Some(interval_timer(every)?)),
        Wake::Agent(every) => (true, Some(interval_timer(every)?)),
    })
}

/// Waits until the ring has records (when it waits on the ring), the timer
/// expired or a command came: (the timer expired, drain, woken).
fn wait(
    ring: Option<&FlowEventRing>,
    timer: Option<&TimerFd>,
    wake: &EventFd,
) -> Result<(bool, bool, bool), BenchError> {
    let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
    fds.extend(timer.map(|t| PollFd::new(t.as_fd(), PollFlags::POLLIN)));
    fds.extend(ring.map(|r| PollFd::new(r.as_fd(), PollFlags::POLLIN)));
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::Error::EINTR) => continue,
            r => r.map_err(errno("poll flow events"))?,
        };
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let woken = ready(&fds[0]);
        let expired = timer.is_some() && ready(&fds[1]);
        let due = fds[1..].iter().any(ready);
        return Ok((expired, due, woken));
    }
}

/// Drains whenever `mode` says, until [`Cmd::Stop`].
fn consume(
    (mut ring, mode): (FlowEventRing, Wake),
    hub: &FlowHub,
    wake: &EventFd,
    cmds: &mpsc::Receiver<Cmd>,
) -> Result<(), BenchError> {
    let (on_ring, timer) = sources(mode)?;
    loop {
        let (expired, due, woken) = wait(on_ring.then_some(&ring), timer.as_ref(), wake)?;
        if let (true, Some(t)) = (expired, &timer) {
            t.wait().map_err(errno("timerfd read"))?;
        }
        if due {
            drain(&mut ring, hub);
        }
        if !woken {
            continue;
        }
        wake.read().map_err(errno("eventfd read"))?;
        drain(&mut ring, hub);
        for cmd in cmds.try_iter() {
            match cmd {
                Cmd::Sync(reply) => {
                    let _ = reply.send(());
                }
                Cmd::Stop => return Ok(()),
            }
        }
    }
}

/// One batch, as the agent's reader takes it: records copied out of the
/// ring (each released as soon as it is copied), then ingested.
fn drain(ring: &mut FlowEventRing, hub: &FlowHub) {
    let clock = clock_now();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    ring.drain(|r| batch.push(r.to_vec()));
    if !batch.is_empty() {
        hub.ingest(batch.iter().map(Vec::as_slice), &clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_counts_undecoded_records_and_subtracts_without_wrapping() {
        let c = FlowCounts {
            seen: 10,
            forwarded: 9,
            dropped: 1,
            evicted: 3,
            decode_length: 2,
            decode_field: 1,
        };
        let r = Received::of(&c);
        assert_eq!(
            r,
            Received {
                records: 13,
                forwarded: 9,
                dropped: 1,
                undecoded: 3,
            }
        );
        let earlier = Received {
            records: 4,
            forwarded: 4,
            dropped: 0,
            undecoded: 0,
        };
        assert_eq!(r.since(&earlier).records, 9);
        assert_eq!(earlier.since(&r), Received::default());
    }
}
