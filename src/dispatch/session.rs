//! What the proxy remembers about one client connection: its protocol, authentication,
//! transaction, subscriptions and where its writes went. Dispatch reads and writes it; the
//! client layer only owns it.

use std::net::SocketAddr;

use bytes::Bytes;

use super::pubsub::Subscriptions;
use super::transaction::TxState;
use super::wait::Writes;
use crate::resp::Protocol;

pub struct ClientState {
    pub id: u64,
    pub peer: SocketAddr,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// False until the client authenticates, when the proxy requires it.
    pub authenticated: bool,
    /// RESP3 after `HELLO 3`.
    pub protocol: Protocol,
    /// Set by QUIT: close once the replies queued so far are written.
    pub closing: bool,
    /// Set by a command carried out in several steps (cross-slot emulation): the client's
    /// later commands are dispatched only once every reply before them is out, so they can't
    /// overtake its steps (a pipelined `RENAME a b` then `GET b` sees the renamed value, as
    /// on one Redis). The client layer clears it when its reply queue is empty.
    pub hold_until_replied: bool,
    /// MULTI queue and WATCH connection.
    pub tx: TxState,
    /// Which connections carried the client's writes, for WAIT.
    pub writes: Writes,
    /// Pub/Sub subscriptions, once the client subscribed to anything.
    pub subs: Option<Box<Subscriptions>>,
}

impl ClientState {
    pub fn new(id: u64, peer: SocketAddr, authenticated: bool) -> ClientState {
        ClientState {
            authenticated,
            id,
            peer,
            name: None,
            lib_name: None,
            lib_ver: None,
            protocol: Protocol::Resp2,
            closing: false,
            hold_until_replied: false,
            tx: TxState::default(),
            writes: Writes::default(),
            subs: None,
        }
    }
}
