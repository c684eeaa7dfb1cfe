//! A worker's dispatch context: its backend pipes and connections, settings and per-command
//! metrics. One per worker thread (see `server::run_worker`), so a request is served without
//! locks or cross-thread hand-offs.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use metrics::Counter;

/// Size of a worker's client read buffer: one read takes at most this much.
const READ_SCRATCH: usize = 64 * 1024;

use arc_swap::{ArcSwap, Cache};

use crate::backend::dedicated::DedicatedPool;
use crate::backend::pipe::PipeSettings;
use crate::backend::Pool;
use crate::cluster::slot_map::SlotMap;
use crate::cluster::topology::Topology;
use crate::cluster::zones::Locality;
use crate::command::{CommandSpec, CommandTable};
use crate::config::ReadFrom;
use crate::latency::LocalLatency;
use crate::resp::{Command, Protocol, RequestLimits};
use crate::shared::Shared;

/// What a session needs from its worker.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: Pool,
    /// Connections for commands that park a connection (blocking commands).
    pub dedicated: DedicatedPool,
    pub limits: RequestLimits,
    pub retry_deadline: Duration,
    /// How long a request waits for an unreachable node (`recovery_timeout_ms`).
    pub recovery_timeout: Duration,
    pub max_redirects: u32,
    pub max_pipeline_depth: usize,
    pub read_from: ReadFrom,
    /// The protocol of this worker's backend connections.
    pub protocol: Protocol,
    /// The same worker with RESP3 backend connections, for clients that sent `HELLO 3`: their
    /// replies then pass through raw instead of being converted (set on the RESP2 worker).
    resp3: Option<Rc<Worker>>,
    /// Per-command metric handles by command-table id, registered on first use so the hot
    /// path never formats a metric name.
    command_metrics: RefCell<MetricsById>,
    /// Zone-aware reads by locality since the last fold (plain cells: no atomic operation
    /// per read), and their `slotproxy_replica_reads_total{locality}` counters; `None` under
    /// the other policies, which count nothing.
    zone_reads: Option<ZoneReads>,
    /// Client bytes read and written since the last fold, for `slotproxy_bytes_total`: plain
    /// cells, where the shared counters cost two atomic additions per request, on a cache
    /// line every worker writes.
    pub bytes: ByteCounts,
    /// The near cache (`[near_cache]`), shared with the RESP3 twin; `None` when off.
    pub near_cache: Option<Rc<super::near_cache::NearCache>>,
    /// Every client read of this worker lands here first (sessions run one at a time on the
    /// worker's thread), so idle and waiting clients hold no read buffer of their own.
    pub read_scratch: RefCell<BytesMut>,
    /// The shared command table and slot map as this worker last saw them: looked up on
    /// every command, where a cache costs one atomic load while nothing changed (a plain
    /// `ArcSwap::load` costs several times that, callgrind).
    commands: RefCell<Cache<CommandsOf, Arc<CommandTable>>>,
    slot_map: RefCell<Cache<SlotMapOf, Arc<SlotMap>>>,
    last_lookup: RefCell<LastLookup>,
}

/// The longest command name [`LastLookup`] remembers.
const LAST_LOOKUP_NAME: usize = 16;

/// The command name this worker looked up last, exactly as sent: clients mostly repeat the
/// same few commands, and a repeat then costs comparing a few bytes instead of lowercasing and
/// hashing the name (about 150 instructions a request, callgrind). Only commands without
/// subcommands (their spec depends on the name alone).
#[derive(Default)]
struct LastLookup {
    /// The table the name was looked up in; held, so that a new table cannot be mistaken
    /// for it by address.
    table: Option<Arc<CommandTable>>,
    name: [u8; LAST_LOOKUP_NAME],
    len: usize,
    id: u16,
}

/// `table.lookup(cmd)` through `last`, which it updates.
fn cached_lookup<'t>(
    last: &mut LastLookup,
    table: &'t Arc<CommandTable>,
    cmd: &Command,
) -> Option<&'t CommandSpec> {
    let name = cmd.name();
    let same_table = last.table.as_ref().is_some_and(|t| Arc::ptr_eq(t, table));
    if same_table && last.len == name.len() && last.name.get(..name.len()) == Some(name) {
        return table.by_id(last.id);
    }
    let spec = table.lookup(cmd)?;
    // A container's subcommand (`client|list`) depends on argv[1], not on the name alone.
    if !spec.has_subcommands() && !spec.name.contains('|') {
        if let Some(slot) = last.name.get_mut(..name.len()) {
            slot.copy_from_slice(name);
            last.len = name.len();
            last.id = spec.id;
            if !same_table {
                last.table = Some(table.clone());
            }
        }
    }
    Some(spec)
}

/// The command table of `Shared`, as a cache's source.
struct CommandsOf(Arc<Shared>);

impl std::ops::Deref for CommandsOf {
    type Target = ArcSwap<CommandTable>;

    fn deref(&self) -> &ArcSwap<CommandTable> {
        &self.0.commands
    }
}

/// The slot map of the topology, as a cache's source.
struct SlotMapOf(Arc<Topology>);

impl std::ops::Deref for SlotMapOf {
    type Target = ArcSwap<SlotMap>;

    fn deref(&self) -> &ArcSwap<SlotMap> {
        self.0.map_source()
    }
}

/// Per-command metrics by id in `table`, held so that a new table cannot be mistaken for it by
/// address: while it is the current one, an id names the same command, and the handle is found
/// without comparing command names (a `memcmp` per request).
#[derive(Default)]
struct MetricsById {
    table: Option<Arc<CommandTable>>,
    by_id: Vec<Option<Rc<CommandMetrics>>>,
}

/// Metrics of one command on this worker, counted in plain cells (no atomic operation per
/// command) and folded into the shared metrics every second.
pub struct CommandMetrics {
    name: String,
    /// Commands received since the last fold, for `slotproxy_commands_total`.
    pub received: Cell<u64>,
    count: Counter,
    /// For `slotproxy_command_duration_seconds` (`Shared::latency`).
    pub latency: LocalLatency,
}

impl CommandMetrics {
    fn fold(&self, shared: &Shared) {
        self.count.increment(self.received.take());
        shared.latency.fold(&self.name, &self.latency);
    }
}

/// Client bytes in and out since the last fold, and their `slotproxy_bytes_total{direction}`
/// counters.
pub struct ByteCounts {
    read: Cell<u64>,
    written: Cell<u64>,
    counters: [Counter; 2],
}

impl ByteCounts {
    fn new() -> ByteCounts {
        ByteCounts {
            read: Cell::new(0),
            written: Cell::new(0),
            counters: ["in", "out"].map(
                |direction| metrics::counter!("slotproxy_bytes_total", "direction" => direction),
            ),
        }
    }

    pub fn count_read(&self, n: usize) {
        self.read.set(self.read.get() + n as u64);
    }

    pub fn count_written(&self, n: usize) {
        self.written.set(self.written.get() + n as u64);
    }

    fn fold(&self) {
        let [read, written] = &self.counters;
        read.increment(self.read.take());
        written.increment(self.written.take());
    }
}

/// Reads counted by [`Locality`] (indexed by [`Locality::index`]).
struct ZoneReads {
    counts: [Cell<u64>; 3],
    counters: [Counter; 3],
}

impl ZoneReads {
    fn new() -> ZoneReads {
        ZoneReads {
            counts: Default::default(),
            counters: Locality::ALL.map(|locality| {
                metrics::counter!("slotproxy_replica_reads_total", "locality" => locality.label())
            }),
        }
    }

    fn fold(&self) {
        for (count, counter) in self.counts.iter().zip(&self.counters) {
            counter.increment(count.take());
        }
    }
}

impl Worker {
    /// The worker of one thread: RESP2 backend connections, plus a RESP3 twin opened lazily
    /// (its pools connect on first use) for RESP3 clients.
    pub fn new(shared: Arc<Shared>) -> Rc<Worker> {
        let near_cache = super::near_cache::NearCache::new(
            &shared.config.near_cache,
            shared.workers,
            shared.topology.clone(),
        );
        let resp3 = Rc::new(Worker::speaking(
            shared.clone(),
            Protocol::Resp3,
            None,
            near_cache.clone(),
        ));
        Rc::new(Worker::speaking(
            shared,
            Protocol::Resp2,
            Some(resp3),
            near_cache,
        ))
    }

    fn speaking(
        shared: Arc<Shared>,
        protocol: Protocol,
        resp3: Option<Rc<Worker>>,
        near_cache: Option<Rc<super::near_cache::NearCache>>,
    ) -> Worker {
        let config = &shared.config;
        let settings = Rc::new(PipeSettings {
            // The topology's copy carries the TLS set-up built at start-up.
            credentials: shared.topology.credentials().clone(),
            connect_timeout: config.connect_timeout(),
            command_timeout: config.command_timeout(),
            readonly: config.backend.read_from != ReadFrom::Primary,
            protocol,
        });
        let topology = shared.topology.clone();
        let dedicated = DedicatedPool::new(settings.clone());
        let pool = Pool::new(
            settings,
            config.backend.reconnect_backoff,
            Rc::new(move || topology.request_refresh()),
        );
        Worker {
            limits: config.limits(),
            retry_deadline: config.retry_deadline(),
            recovery_timeout: config.backend.recovery_timeout,
            max_redirects: config.backend.max_redirects,
            max_pipeline_depth: config.limits.max_pipeline_depth,
            read_from: config.backend.read_from,
            protocol,
            command_metrics: RefCell::new(MetricsById::default()),
            bytes: ByteCounts::new(),
            zone_reads: config
                .backend
                .read_from
                .is_zone_aware()
                .then(ZoneReads::new),
            // Sessions read through the RESP2 worker's buffer whatever their protocol.
            read_scratch: RefCell::new(match resp3 {
                Some(_) => BytesMut::with_capacity(READ_SCRATCH),
                None => BytesMut::new(),
            }),
            resp3,
            near_cache,
            pool,
            dedicated,
            commands: RefCell::new(Cache::new(CommandsOf(shared.clone()))),
            slot_map: RefCell::new(Cache::new(SlotMapOf(shared.topology.clone()))),
            last_lookup: RefCell::default(),
            shared,
        }
    }
}

impl Worker {
    /// The current command table (as `shared.commands.load()`, cheaper).
    pub fn command_table(&self) -> Arc<CommandTable> {
        self.commands.borrow_mut().load().clone()
    }

    /// `table.lookup(cmd)`, answered from [`LastLookup`] when `cmd` repeats the last name.
    pub fn lookup<'t>(
        &self,
        table: &'t Arc<CommandTable>,
        cmd: &Command,
    ) -> Option<&'t CommandSpec> {
        cached_lookup(&mut self.last_lookup.borrow_mut(), table, cmd)
    }

    /// The current slot map (as `shared.topology.map()`, cheaper).
    pub fn slot_map(&self) -> Arc<SlotMap> {
        self.slot_map.borrow_mut().load().clone()
    }

    /// The worker whose backend connections speak `protocol`.
    pub fn speaking_to(self: &Rc<Self>, protocol: Protocol) -> &Rc<Worker> {
        match (protocol, &self.resp3) {
            (Protocol::Resp3, Some(resp3)) => resp3,
            _ => self,
        }
    }

    /// The metrics of the command `spec` of `table`.
    pub fn command_metrics(
        &self,
        table: &Arc<CommandTable>,
        spec: &CommandSpec,
    ) -> Rc<CommandMetrics> {
        let mut metrics = self.command_metrics.borrow_mut();
        let index = usize::from(spec.id);
        if !metrics
            .table
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, table))
        {
            // A new table may give an id another command: fold what each has and start over.
            for old in metrics.by_id.drain(..).flatten() {
                old.fold(&self.shared);
            }
            metrics.table = Some(table.clone());
        }
        let all = &mut metrics.by_id;
        if all.len() <= index {
            all.resize(index + 1, None);
        }
        match &all[index] {
            Some(m) => m.clone(),
            None => {
                let label = spec.name.to_string();
                let m = Rc::new(CommandMetrics {
                    name: label.clone(),
                    received: Cell::new(0),
                    count: metrics::counter!("slotproxy_commands_total", "command" => label),
                    latency: LocalLatency::default(),
                });
                all[index] = Some(m.clone());
                m
            }
        }
    }

    /// Counts a read a zone-aware policy routed.
    pub fn count_zone_read(&self, locality: Locality) {
        if let Some(count) = self
            .zone_reads
            .as_ref()
            .and_then(|z| z.counts.get(locality.index()))
        {
            count.set(count.get() + 1);
        }
    }

    /// Moves this worker's (and its RESP3 twin's) command counts, latencies and zone-aware
    /// read counts into the shared metrics.
    pub fn fold_latencies(&self) {
        for m in self.command_metrics.borrow().by_id.iter().flatten() {
            m.fold(&self.shared);
        }
        self.bytes.fold();
        if let Some(zone_reads) = &self.zone_reads {
            zone_reads.fold();
        }
        if let Some(cache) = &self.near_cache {
            cache.fold(&self.shared.near_cache);
        }
        if let Some(resp3) = &self.resp3 {
            resp3.fold_latencies();
        }
    }
}

/// A worker over a cluster it never reaches, for unit tests of what sits above the backend
/// (nothing connects until a request is sent). `retry_deadline`: how long the driver may retry.
#[cfg(test)]
pub(crate) fn test_worker(retry_deadline: Duration) -> Rc<Worker> {
    use crate::backend::connect::Credentials;
    use crate::cluster::topology::Topology;
    let mut config = crate::config::Config::default();
    config.backend.retry_deadline = retry_deadline;
    let topology = Arc::new(Topology::new(
        Vec::new(),
        Credentials::default(),
        Duration::from_millis(10),
    ));
    let shared = Arc::new(Shared::new(config, topology, 1, Default::default()));
    Worker::new(shared)
}

#[cfg(test)]
mod lookup_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn cmd(args: &[&str]) -> Command {
        Command::from_args(args)
    }

    #[test]
    fn a_repeated_name_is_answered_as_the_table_answers_it() {
        let table = Arc::new(CommandTable::builtin().clone());
        let other_table = Arc::new(CommandTable::builtin().clone());
        let mut last = LastLookup::default();
        let long = "x".repeat(LAST_LOOKUP_NAME + 1);
        // In order, through one cache: each answer must be the table's own.
        for (table, args) in [
            (&table, vec!["GET", "k"]),
            (&table, vec!["GET", "k"]),
            (&table, vec!["get", "k"]),
            (&table, vec!["SET", "k", "v"]),
            (&table, vec!["GET", "k"]),
            // A container's spec depends on its argv[1]: never answered from the cache.
            (&table, vec!["CLIENT", "LIST"]),
            (&table, vec!["CLIENT", "ID"]),
            (&table, vec!["CLIENT"]),
            (&table, vec!["CLIENT", "ID"]),
            (&table, vec![long.as_str()]),
            (&table, vec![long.as_str()]),
            (&table, vec!["NOSUCHCOMMAND"]),
            (&table, vec!["GET", "k"]),
            // A new table (as after a reload) is asked again.
            (&other_table, vec!["GET", "k"]),
            (&other_table, vec!["GETDEL", "k"]),
        ] {
            let command = cmd(&args);
            let cached = cached_lookup(&mut last, table, &command).map(|s| (s.id, s.name.clone()));
            let direct = table.lookup(&command).map(|s| (s.id, s.name.clone()));
            assert_eq!(cached, direct, "{args:?}");
        }
        // The last remembered name is that of the last table.
        assert!(last
            .table
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, &other_table)));
        assert_eq!(&last.name[..last.len], b"GETDEL");
    }

    #[test]
    fn command_metrics_are_kept_per_id_while_their_table_is_current() {
        let worker = test_worker(Duration::ZERO);
        let table = Arc::new(CommandTable::builtin().clone());
        let get = table.get("get").expect("get");
        let set = table.get("set").expect("set");
        let first = worker.command_metrics(&table, get);
        assert!(Rc::ptr_eq(&first, &worker.command_metrics(&table, get)));
        assert_eq!(worker.command_metrics(&table, set).name, "set");
        first.received.set(3);
        // A new table (a reload): what the old handles counted is folded, and each id gets a
        // handle of the new table's command.
        let reloaded = Arc::new(CommandTable::builtin().clone());
        let get_again = reloaded.get("get").expect("get");
        let second = worker.command_metrics(&reloaded, get_again);
        assert!(!Rc::ptr_eq(&first, &second));
        assert_eq!(first.received.get(), 0);
        assert_eq!(second.name, "get");
        assert!(Rc::ptr_eq(
            &second,
            &worker.command_metrics(&reloaded, get_again)
        ));
    }
}
