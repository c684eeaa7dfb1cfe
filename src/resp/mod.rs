//! RESP2/RESP3 wire format: client request decoding ([`RequestDecoder`]), backend reply framing
//! ([`ReplyScanner`]), parsed values for the control path ([`Value`]) and encoders for replies
//! the proxy writes itself ([`encode`]).
//!
//! This module knows bytes and frames only. It never learns about slots, command semantics or
//! connections; limits come in as [`RequestLimits`] and failures go out as [`ProtocolError`].

#![warn(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod command;
mod decode;
pub mod encode;
mod error;
mod scan;
mod value;

#[cfg(test)]
mod tests;

pub use command::Command;
pub use decode::{decode_command, parse_integer, RequestDecoder, RequestLimits};
pub use error::{OffendingByte, ProtocolError};
pub use scan::{is_error_reply, ReplyScanner};
pub use value::{Value, MAX_VALUE_DEPTH};

/// The protocol a client (and the backend connections serving it) speaks: RESP2 until the
/// client sends `HELLO 3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}
