//! The pipes of one worker: one multiplexed connection per node, opened on first use and
//! replaced when it breaks, with a short backoff after a failed connect so that requests for a
//! dead node fail fast instead of each waiting for a connect of its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::pipe::{Connector, NodeConnector, Pipe, PipeSettings, ReplyResult};
use super::BackendError;
use crate::cluster::slot_map::NodeAddr;

/// `C` opens the connections: real nodes in production, in-memory streams in the unit tests.
pub struct Pool<C = NodeConnector> {
    connector: C,
    pipes: RefCell<HashMap<NodeAddr, Rc<Pipe>>>,
    /// How many pipes `retire_for_wait` has retired so far: a client notes this number with
    /// each write, so its `WAIT` later finds the pipe that carried the write.
    retirements: Cell<u64>,
    /// Pipes retired for a `WAIT`, by node and retirement number, while something holds them.
    retired: RefCell<Vec<(NodeAddr, u64, Weak<Pipe>)>>,
    settings: Rc<PipeSettings>,
    backoff: Duration,
    /// Called when a connection closes or fails to open (the topology may have changed).
    on_trouble: Rc<dyn Fn()>,
}

impl Pool {
    pub fn new(settings: Rc<PipeSettings>, backoff: Duration, on_trouble: Rc<dyn Fn()>) -> Pool {
        Pool::with_connector(NodeConnector, settings, backoff, on_trouble)
    }
}

impl<C: Connector + Clone> Pool<C> {
    /// [`Pool::new`] with pipes over the streams that `connector` opens.
    pub fn with_connector(
        connector: C,
        settings: Rc<PipeSettings>,
        backoff: Duration,
        on_trouble: Rc<dyn Fn()>,
    ) -> Pool<C> {
        Pool {
            connector,
            pipes: RefCell::new(HashMap::new()),
            retirements: Cell::new(0),
            retired: RefCell::new(Vec::new()),
            settings,
            backoff,
            on_trouble,
        }
    }

    /// Queues `payload` on the pipe to `addr`, opening one if needed.
    pub fn send(
        &self,
        addr: &NodeAddr,
        payload: Bytes,
        asking: bool,
    ) -> Result<oneshot::Receiver<ReplyResult>, BackendError> {
        let mut pipes = self.pipes.borrow_mut();
        let mut retrying = false;
        if let Some(pipe) = pipes.get(addr) {
            if !pipe.state().is_closed() {
                return Ok(pipe.send(payload, asking));
            }
            if let Some((at, reason)) = pipe.state().connect_error() {
                if at.elapsed() < self.backoff {
                    return Err(BackendError::Unreachable {
                        addr: addr.to_string(),
                        reason,
                    });
                }
                retrying = true;
            }
        }
        let on_trouble = self.on_trouble.clone();
        let pipe = Pipe::open_with(
            self.connector.clone(),
            addr.clone(),
            self.settings.clone(),
            retrying,
            move |_| on_trouble(),
        );
        let rx = pipe.send(payload, asking);
        pipes.insert(addr.clone(), Rc::new(pipe));
        Ok(rx)
    }

    /// The number to note with a write sent now (see [`Pool::retire_for_wait`]).
    pub fn retirements(&self) -> u64 {
        self.retirements.get()
    }

    /// The pipe that carried the writes sent to `addr` when [`Pool::retirements`] was
    /// `noted`, taken out of service: Redis's `WAIT` waits for the writes of the connection
    /// it runs on, and blocks that connection meanwhile, so it must run on the very
    /// connection of the client's writes, and nothing else may queue behind it. Later
    /// commands get a new pipe; the retired one closes once its replies are delivered.
    /// `None` when that pipe is gone (its connection broke).
    pub fn retire_for_wait(&self, addr: &NodeAddr, noted: u64) -> Option<Rc<Pipe>> {
        let mut retired = self.retired.borrow_mut();
        retired.retain(|(_, _, pipe)| pipe.strong_count() > 0);
        // Retired since the write: the first pipe retired after `noted` carried it.
        if let Some(pipe) = retired
            .iter()
            .filter(|(a, n, _)| a == addr && *n > noted)
            .min_by_key(|(_, n, _)| *n)
            .and_then(|(_, _, pipe)| pipe.upgrade())
        {
            return Some(pipe);
        }
        let pipe = self.pipes.borrow_mut().remove(addr)?;
        if pipe.state().is_closed() {
            return None;
        }
        let number = self.retirements.get() + 1;
        self.retirements.set(number);
        retired.push((addr.clone(), number, Rc::downgrade(&pipe)));
        Some(pipe)
    }

    /// Drops pipes to nodes that are no longer part of the cluster.
    pub fn retain(&self, keep: impl Fn(&NodeAddr) -> bool) {
        self.pipes.borrow_mut().retain(|addr, _| keep(addr));
    }

    pub fn open_connections(&self) -> usize {
        self.pipes
            .borrow()
            .values()
            .filter(|p| !p.state().is_closed())
            .count()
    }
}
