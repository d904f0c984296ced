//! Worker threads that move frames between TAP queues and the underlay.
//!
//! Each worker runs a mio event loop over its own `SO_REUSEPORT` UDP socket (the kernel
//! spreads arriving datagrams over the workers by flow; encapsulated traffic leaves through a
//! shared pool of sockets whose ports carry the flow hash, see `senders`) and its own queue of every link's
//! multiqueue TAP (the kernel spreads the TAP's frames by flow too), so one flow stays on one
//! worker and keeps its order. Per batch, a worker reads, takes the switch lock once while the
//! pure pipeline (`crate::pipeline`) plans the batch, releases it, then writes what was
//! planned: `recvmmsg` -> ingress -> TAP writes, and TAP reads -> egress -> `sendmmsg` and
//! `UDP_SEGMENT` sends, whose limits and refusals `io::udp` handles per socket.
//!
//! The control plane changes tables through [`Runtime::with_switch`] while traffic flows;
//! links come and go through commands each worker applies between batches. This module reads
//! the clock once per batch and owns all threads; the decisions stay in `switch`.

mod counters;
mod filter;
mod senders;
mod worker;

pub use crate::io::filter::FilterDrops;
pub use counters::{GlobalIoCounters, LinkIoCounters, LinkIoSnapshot};
pub use filter::FilterStatus;

use crate::io::{IoError, TapDevice, UdpOffloads, UdpSocket};
use crate::switch::{NetworkConfig, Switch, SwitchError};
use crate::tunnel::PortRange;
use crate::wire::Vni;
use crate::Timestamp;
use crossbeam_channel::{bounded, unbounded, Sender};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;
use worker::{Command, Worker};

/// The longest [`RuntimeConfig::busy_poll`] taken: beyond it a worker is a spinning thread.
pub const MAX_BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How the runtime runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Worker threads; each owns one queue of every TAP.
    pub threads: usize,
    /// Underlay UDP port to receive on (4789).
    pub port: u16,
    /// Frames or datagrams handled per batch.
    pub batch: usize,
    /// Outer UDP source ports to spread flows over.
    pub source_ports: PortRange,
    /// Sockets bound across `source_ports` to send from (distinct outer source ports).
    pub source_sockets: usize,
    /// Drop datagrams that are plainly not ours in the kernel, with an eBPF filter on the
    /// receiving sockets, where the kernel takes one (`io::filter`).
    pub underlay_filter: bool,
    /// How long a worker keeps polling its sources without sleeping after a batch that
    /// moved something, before it blocks in `epoll_wait` (zero: block at once). Catches
    /// the next frame of a conversation without the cost of a wake-up (tens of microseconds
    /// across vCPUs on a VM) at the price of that much CPU after traffic; never spins while
    /// idle.
    pub busy_poll: std::time::Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            port: crate::wire::vxlan::DEFAULT_PORT,
            batch: 64,
            source_ports: PortRange::default(),
            source_sockets: 16,
            underlay_filter: true,
            busy_poll: std::time::Duration::ZERO,
        }
    }
}

/// Why the runtime could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A socket or TAP operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The switch refused the network.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// An event loop could not be set up.
    #[error("worker {worker}: {what}: {source}")]
    Poll {
        /// Which worker.
        worker: usize,
        /// Which step.
        what: &'static str,
        /// What failed.
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start worker thread {worker}: {source}")]
    Spawn {
        /// Which worker.
        worker: usize,
        /// What failed.
        source: std::io::Error,
    },
    /// The TAP has a different number of queues than there are workers.
    #[error("link {name} has {queues} queues but the runtime has {threads} workers")]
    QueueCount {
        /// The TAP.
        name: String,
        /// Its queues.
        queues: usize,
        /// The workers.
        threads: usize,
    },
    /// The configuration makes no sense.
    #[error("invalid runtime configuration: {0}")]
    Config(&'static str),
    /// A worker is gone (it panicked); the runtime cannot apply changes any more.
    #[error("worker {0} has stopped")]
    WorkerGone(usize),
}

/// How the workers treat one link's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// Underlay source address (`local`); the routing table picks when `None`.
    pub local: Option<Ipv4Addr>,
    /// The TAP's MTU: larger TCP segments from the underlay are handed over for segmentation.
    pub mtu: u32,
}

/// State the workers and the control plane share.
pub(crate) struct Shared {
    switch: Mutex<Switch>,
    epoch: Instant,
    pub(crate) global: GlobalIoCounters,
    pub(crate) source_ports: PortRange,
    pub(crate) senders: senders::SourcePool,
}

impl Shared {
    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The switch, even if a worker panicked while holding it: its tables stay consistent
    /// because every switch operation completes before it returns.
    pub(crate) fn switch(&self) -> MutexGuard<'_, Switch> {
        self.switch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct WorkerHandle {
    commands: Sender<Command>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

/// The running data plane.
pub struct Runtime {
    shared: Arc<Shared>,
    workers: Vec<WorkerHandle>,
    links: HashMap<Vni, Arc<LinkIoCounters>>,
    threads: usize,
    offloads: UdpOffloads,
    /// Locked after the switch when both are held.
    filter: Mutex<filter::FilterSlot>,
}

impl Runtime {
    /// Binds one `SO_REUSEPORT` socket per worker on `0.0.0.0:port` in the calling thread's
    /// network namespace and starts the workers.
    pub fn start(config: &RuntimeConfig) -> Result<Runtime, RuntimeError> {
        if config.threads == 0 || config.threads > crate::io::tap::MAX_QUEUES {
            return Err(RuntimeError::Config("threads must be 1..=256"));
        }
        if config.batch == 0 || config.batch > 1024 {
            return Err(RuntimeError::Config("batch must be 1..=1024"));
        }
        if config.busy_poll > MAX_BUSY_POLL {
            return Err(RuntimeError::Config("busy_poll must be at most 10 ms"));
        }
        let shared = Arc::new(Shared {
            switch: Mutex::new(Switch::new()),
            epoch: Instant::now(),
            global: GlobalIoCounters::default(),
            source_ports: config.source_ports,
            senders: senders::SourcePool::bind(config.source_ports, config.source_sockets)?,
        });
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.port);
        let mut runtime = Runtime {
            shared,
            workers: Vec::new(),
            links: HashMap::new(),
            threads: config.threads,
            offloads: UdpOffloads::ALL,
            filter: Mutex::new(filter::FilterSlot::start(config.underlay_filter)),
        };
        // Sends leave through the source pool, receives arrive on the workers' sockets.
        let gso = runtime.shared.senders.offloads().gso;
        for id in 0..config.threads {
            let mut socket = UdpSocket::bind(addr, true)?;
            // GRO hands over trains of same-size datagrams at once; kernels without it give
            // single datagrams, which the workers handle alike.
            let gro = socket.enable_gro()?;
            runtime.offloads = runtime.offloads.and(UdpOffloads { gso, gro });
            runtime.filter_slot().attach(&socket);
            let (commands, receiver) = unbounded();
            let worker = Worker::new(
                id,
                Arc::clone(&runtime.shared),
                socket,
                receiver,
                config.batch,
                config.busy_poll,
            )?;
            let waker = worker.waker();
            let thread = std::thread::Builder::new()
                .name(format!("vxtap-worker-{id}"))
                .spawn(move || worker.run())
                .map_err(|source| RuntimeError::Spawn { worker: id, source })?;
            runtime.workers.push(WorkerHandle {
                commands,
                waker,
                thread: Some(thread),
            });
        }
        let offloads = runtime.offloads;
        tracing::info!(
            udp_gso = %on_off(offloads.gso),
            udp_gro = %on_off(offloads.gro),
            "underlay offloads (UDP_SEGMENT sends, UDP_GRO receives)"
        );
        tracing::info!(
            underlay_filter = runtime.underlay_filter().name(),
            "underlay filter (eBPF on the receiving sockets: garbage, unknown VNIs and VTEPs dropped in the kernel)"
        );
        Ok(runtime)
    }

    fn filter_slot(&self) -> MutexGuard<'_, filter::FilterSlot> {
        self.filter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the underlay filter runs.
    pub fn underlay_filter(&self) -> FilterStatus {
        self.filter_slot().status()
    }

    /// What the underlay filter dropped in the kernel, by reason (all zero without one).
    pub fn filter_drops(&self) -> FilterDrops {
        self.filter_slot().drops()
    }

    /// Datagrams the receiving sockets dropped for a full receive buffer. With the underlay
    /// filter, read from the sockets now, less the filter's own drops (which the kernel
    /// counts there too); without it, as the workers saw it with each datagram
    /// ([`GlobalIoCounters::udp_rx_overflows`]).
    pub fn udp_rx_overflows(&self) -> u64 {
        self.filter_slot()
            .overflows()
            .unwrap_or_else(|| self.shared.global.udp_rx_overflows())
    }

    /// The underlay UDP offloads the kernel granted, probed at [`start`](Self::start): GSO
    /// if every sending socket has it, GRO if every receiving socket has it on. A socket
    /// may still stop using GSO later if the kernel refuses a send
    /// ([`GlobalIoCounters::udp_gso_refused`]).
    pub fn offloads(&self) -> UdpOffloads {
        self.offloads
    }

    /// Number of workers, which is the number of queues every TAP must have.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The time the switch sees now.
    pub fn now(&self) -> Timestamp {
        self.shared.now()
    }

    /// Runs `f` on the switch, under the lock the workers take per batch: table changes
    /// apply between two batches, while traffic flows.
    /// The underlay filter's maps follow whatever `f` changed before the lock is released.
    pub fn with_switch<R>(&self, f: impl FnOnce(&mut Switch) -> R) -> R {
        let mut switch = self.shared.switch();
        let result = f(&mut switch);
        self.filter_slot().sync(&switch);
        result
    }

    /// The outer UDP source ports traffic leaves from.
    pub fn source_ports(&self) -> &[u16] {
        self.shared.senders.ports()
    }

    /// Counters of the I/O that belong to no link.
    pub fn global_counters(&self) -> &GlobalIoCounters {
        &self.shared.global
    }

    /// I/O counters of one link.
    pub fn link_counters(&self, vni: Vni) -> Option<LinkIoSnapshot> {
        self.links.get(&vni).map(|c| c.snapshot())
    }

    fn send(&self, worker: usize, command: Command) -> Result<(), RuntimeError> {
        let handle = &self.workers[worker];
        handle
            .commands
            .send(command)
            .map_err(|_| RuntimeError::WorkerGone(worker))?;
        handle
            .waker
            .wake()
            .map_err(|_| RuntimeError::WorkerGone(worker))
    }

    /// Adds network `vni` to the switch and hands queue `i` of `tap` to worker `i`. The
    /// network and the TAP come and go together.
    pub fn add_link(
        &mut self,
        vni: Vni,
        config: NetworkConfig,
        tap: TapDevice,
        options: LinkOptions,
    ) -> Result<(), RuntimeError> {
        if tap.queues().len() != self.threads {
            return Err(RuntimeError::QueueCount {
                name: tap.name().to_owned(),
                queues: tap.queues().len(),
                threads: self.threads,
            });
        }
        {
            let mut switch = self.shared.switch();
            switch.add_network(vni, config)?;
            self.filter_slot().sync(&switch);
        }
        let counters = Arc::new(LinkIoCounters::default());
        self.links.insert(vni, Arc::clone(&counters));
        for (worker, queue) in tap.into_queues().into_iter().enumerate() {
            let counters = Arc::clone(&counters);
            if let Err(e) = self.send(
                worker,
                Command::AddLink {
                    vni,
                    queue,
                    counters,
                    options,
                },
            ) {
                // Roll back what was handed out so far; the queues still in hand drop here.
                let _ = self.remove_link(vni);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes network `vni` and waits until every worker has closed its TAP queue, so the
    /// TAP is gone when this returns.
    pub fn remove_link(&mut self, vni: Vni) -> Result<(), RuntimeError> {
        let removed = {
            let mut switch = self.shared.switch();
            let removed = switch.remove_network(vni);
            self.filter_slot().sync(&switch);
            removed
        };
        self.links.remove(&vni);
        let (done, acks) = bounded(self.threads);
        let mut expected = 0;
        let mut gone = None;
        for worker in 0..self.threads {
            match self.send(
                worker,
                Command::RemoveLink {
                    vni,
                    done: done.clone(),
                },
            ) {
                Ok(()) => expected += 1,
                Err(e) => gone = Some(e),
            }
        }
        drop(done);
        for _ in 0..expected {
            if acks.recv().is_err() {
                break;
            }
        }
        removed?;
        gone.map_or(Ok(()), Err)
    }

    /// Stops the workers and closes every TAP queue and socket.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for worker in 0..self.workers.len() {
            let _ = self.send(worker, Command::Stop);
        }
        for handle in &mut self.workers {
            if let Some(thread) = handle.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}
