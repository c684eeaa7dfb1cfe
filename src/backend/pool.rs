//! The pipes of one worker: one multiplexed connection per node, opened on first use and
//! replaced when it breaks, with a short backoff after a failed connect so that requests for a
//! dead node fail fast instead of each waiting for a connect of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::pipe::{Pipe, PipeSettings, ReplyResult};
use super::BackendError;
use crate::cluster::slot_map::NodeAddr;

pub struct Pool {
    pipes: RefCell<HashMap<NodeAddr, Pipe>>,
    settings: Rc<PipeSettings>,
    backoff: Duration,
    /// Called when a connection closes or fails to open (the topology may have changed).
    on_trouble: Rc<dyn Fn()>,
}

impl Pool {
    pub fn new(settings: Rc<PipeSettings>, backoff: Duration, on_trouble: Rc<dyn Fn()>) -> Pool {
        Pool {
            pipes: RefCell::new(HashMap::new()),
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
            }
        }
        let on_trouble = self.on_trouble.clone();
        let pipe = Pipe::open(addr.clone(), self.settings.clone(), move |_| on_trouble());
        let rx = pipe.send(payload, asking);
        pipes.insert(addr.clone(), pipe);
        Ok(rx)
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
