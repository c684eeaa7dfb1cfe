//! What the proxy remembers about one client connection: its protocol, authentication,
//! transaction, subscriptions and where its writes went. Dispatch reads and writes it; the
//! client layer only owns it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::pubsub::Subscriptions;
use super::tracking::ClientTracking;
use super::transaction::TxState;
use super::wait::Writes;
use crate::registry::{ClientEntry, Registration};
use crate::resp::Protocol;

pub struct ClientState {
    pub id: u64,
    pub peer: SocketAddr,
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// The user it authenticated as (`None`: `default`).
    pub user: Option<String>,
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
    /// Set before each command is dispatched: no earlier command of the client awaits its
    /// reply, so this one may go on another connection than the shared pipe without being
    /// reordered against them (a script on a connection of its own).
    pub nothing_in_flight: bool,
    /// MULTI queue and WATCH connection.
    pub tx: TxState,
    /// Which connections carried the client's writes, for WAIT.
    pub writes: Writes,
    /// Pub/Sub subscriptions, once the client subscribed to anything.
    pub subs: Option<Box<Subscriptions>>,
    /// `CLIENT REPLY`.
    pub reply: ReplyMode,
    /// `CLIENT TRACKING`, while on.
    pub tracking: Option<ClientTracking>,
    /// The MULTI queue length last shown in the registry.
    shown_multi: Option<usize>,
    /// Its place in the proxy's client list (`CLIENT LIST`); leaves it when dropped.
    registration: Registration,
}

impl ClientState {
    pub fn new(
        id: u64,
        peer: SocketAddr,
        authenticated: bool,
        registration: Registration,
    ) -> ClientState {
        ClientState {
            authenticated,
            id,
            peer,
            name: None,
            lib_name: None,
            lib_ver: None,
            user: None,
            protocol: Protocol::Resp2,
            closing: false,
            hold_until_replied: false,
            nothing_in_flight: false,
            tx: TxState::default(),
            writes: Writes::default(),
            subs: None,
            reply: ReplyMode::default(),
            tracking: None,
            shown_multi: None,
            registration,
        }
    }

    /// What other clients see of this one (`CLIENT LIST`).
    pub fn entry(&self) -> &Arc<ClientEntry> {
        &self.registration.entry
    }

    /// Shows the name, library, user and protocol in the client list (after a command that
    /// may have changed them: they change rarely).
    pub fn publish(&self) {
        self.entry().update(|d| {
            d.name = self.name.clone();
            d.lib_name = self.lib_name.clone();
            d.lib_ver = self.lib_ver.clone();
            d.user = self.user.clone();
        });
        self.entry().set_resp(match self.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        });
    }

    /// Shows the MULTI queue in the client list when it changed (a plain comparison for
    /// every other command).
    pub fn publish_multi(&mut self) {
        let queued = self.tx.queued();
        if queued != self.shown_multi {
            self.shown_multi = queued;
            self.entry().set_multi(queued);
        }
    }

    /// Shows the subscription counts in the client list.
    pub fn publish_subscriptions(&self) {
        let (channels, patterns, shard) = self.subs.as_ref().map_or((0, 0, 0), |s| s.counts());
        self.entry().set_subscriptions(channels, patterns, shard);
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`, as Redis's flags: OFF silences every reply until ON; SKIP
/// silences the reply of the command after it. Subscription confirmations and messages are
/// pushed, never silenced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyMode {
    pub off: bool,
    /// Set by SKIP: the next command's reply is silenced.
    pub skip_next: bool,
    /// The current command's reply is silenced.
    skip: bool,
}

impl ReplyMode {
    /// Replies are sent as usual (the common case: nothing else to check).
    pub fn is_on(&self) -> bool {
        *self == ReplyMode::default()
    }

    /// After a command: whether its reply is silenced (`pushed`: it answers with push
    /// messages, the (un)subscribe family). Moves a SKIP on to the next command.
    pub fn command_done(&mut self, pushed: bool) -> bool {
        let silent = (self.off || self.skip) && !pushed;
        self.skip = std::mem::take(&mut self.skip_next);
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::ReplyMode;

    /// Runs `commands` (each: how it changes the mode, whether it answers with pushes) and
    /// returns which replies were silenced.
    fn silenced(commands: &[(&str, bool)]) -> Vec<bool> {
        let mut mode = ReplyMode::default();
        commands
            .iter()
            .map(|&(command, pushed)| {
                match command {
                    "on" => mode = ReplyMode::default(),
                    "off" => mode.off = true,
                    "skip" if !mode.off => mode.skip_next = true,
                    _ => {}
                }
                mode.command_done(pushed)
            })
            .collect()
    }

    #[test]
    fn reply_modes_silence_as_redis_flags_do() {
        // OFF silences itself and everything until ON, pushes excepted.
        assert_eq!(
            silenced(&[
                ("off", false),
                ("get", false),
                ("subscribe", true),
                ("on", false)
            ]),
            [true, true, false, false]
        );
        // SKIP silences the next command only; twice in a row, the second and the next.
        assert_eq!(
            silenced(&[("skip", false), ("get", false), ("get", false)]),
            [false, true, false]
        );
        assert_eq!(
            silenced(&[
                ("skip", false),
                ("skip", false),
                ("get", false),
                ("get", false)
            ]),
            [false, true, true, false]
        );
        // SKIP while OFF does nothing once ON.
        assert_eq!(
            silenced(&[
                ("off", false),
                ("skip", false),
                ("on", false),
                ("get", false)
            ]),
            [true, true, false, false]
        );
    }
}
