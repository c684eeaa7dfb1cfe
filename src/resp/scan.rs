//! Backend reply framing on the hot path: find where one complete reply ends without building
//! any value, so the reply can be forwarded to the client as raw bytes.
//!
//! Knows RESP2 and RESP3 framing only; what a reply means (MOVED, ASK, merge policies) is decided
//! by the caller.

use super::decode::{find_byte, parse_integer};
use super::{OffendingByte, ProtocolError};

/// Resumable reply framer, one per backend connection.
///
/// Iterative: nesting is tracked as a count of elements still to read, so deeply nested or huge
/// replies use no stack and constant memory. Progress is kept across calls, so a large array
/// arriving in many reads is scanned once.
///
/// Contract: after `Ok(None)`, the next call must get the same buffer with more bytes appended.
/// After `Ok(Some(len))` the scanner is reset and expects the next reply at the front of the
/// buffer the caller passes next (normally after splitting off `len` bytes).
#[derive(Debug, Default, Clone)]
pub struct ReplyScanner {
    /// Bytes at the front that belong to elements already known to be complete.
    pos: usize,
    /// Elements still to read before the reply is complete; 0 when idle.
    remaining: u64,
    /// Where to resume looking for the CR of the current line.
    scan_from: usize,
}

impl ReplyScanner {
    /// A scanner at the start of a reply.
    pub fn new() -> Self {
        ReplyScanner::default()
    }

    /// Looks for the end of the reply at the front of `buf`.
    ///
    /// `Ok(Some(len))`: `buf[..len]` is one whole reply (RESP3 attributes in front of it
    /// included). `Ok(None)`: more bytes are needed; call again with them appended.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the bytes are not RESP. The connection cannot be trusted after
    /// that: it must be closed and its pending requests failed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if self.remaining == 0 || self.pos > buf.len() {
            // Idle, or the caller broke the contract: start at the front.
            *self = ReplyScanner {
                pos: 0,
                remaining: 1,
                scan_from: 0,
            };
        }
        loop {
            let start = self.pos;
            let Some(&marker) = buf.get(start) else {
                return Ok(None);
            };
            let from = self.scan_from.max(start + 1);
            let cr = match find_byte(buf, from, b'\r') {
                Some(cr) if cr + 1 < buf.len() => cr,
                Some(cr) => {
                    self.scan_from = cr;
                    return Ok(None);
                }
                None => {
                    self.scan_from = buf.len();
                    return Ok(None);
                }
            };
            if buf.get(cr + 1) != Some(&b'\n') {
                return Err(ProtocolError::ReplyNotTerminated);
            }
            let line = buf.get(start + 1..cr).unwrap_or_default();
            let line_end = cr + 2;
            let (end, children) = match marker {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => (line_end, 0),
                b'$' | b'!' | b'=' => match parse_len(line)? {
                    None => (line_end, 0),
                    Some(len) => {
                        let payload_end = line_end
                            .checked_add(len)
                            .ok_or(ProtocolError::InvalidReplyLength)?;
                        let end = payload_end
                            .checked_add(2)
                            .ok_or(ProtocolError::InvalidReplyLength)?;
                        if buf.len() < end {
                            // The header is rescanned next time (a few bytes); the payload is not.
                            self.scan_from = 0;
                            return Ok(None);
                        }
                        if buf.get(payload_end..end) != Some(b"\r\n".as_slice()) {
                            return Err(ProtocolError::ReplyNotTerminated);
                        }
                        (end, 0)
                    }
                },
                b'*' | b'~' | b'>' => (line_end, parse_count(line, 1)?),
                b'%' | b'|' => (line_end, parse_count(line, 2)?),
                other => return Err(ProtocolError::UnexpectedReplyByte(OffendingByte(other))),
            };
            self.pos = end;
            self.scan_from = 0;
            // An attribute annotates the value after it and is not that value: the value is
            // still owed, plus the attribute's own key/value pairs.
            let owed = if marker == b'|' {
                self.remaining
            } else {
                self.remaining.saturating_sub(1)
            };
            self.remaining = owed
                .checked_add(children)
                .ok_or(ProtocolError::InvalidReplyLength)?;
            if self.remaining == 0 {
                let len = self.pos;
                *self = ReplyScanner::default();
                return Ok(Some(len));
            }
        }
    }
}

/// A bulk-like length: `Some(n)` for `n >= 0`, `None` for the RESP2 null (`-1`).
pub(crate) fn parse_len(line: &[u8]) -> Result<Option<usize>, ProtocolError> {
    match parse_integer(line) {
        Some(-1) => Ok(None),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| ProtocolError::InvalidReplyLength),
        None => Err(ProtocolError::InvalidReplyLength),
    }
}

/// Number of child elements of an aggregate header with `per_entry` elements per entry
/// (2 for maps and attributes). A null aggregate has none.
fn parse_count(line: &[u8], per_entry: u64) -> Result<u64, ProtocolError> {
    match parse_len(line)? {
        None => Ok(0),
        Some(n) => u64::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(per_entry))
            .ok_or(ProtocolError::InvalidReplyLength),
    }
}

/// Whether a complete reply is an error (RESP2 `-` or RESP3 blob error `!`). A reply that
/// starts with an attribute is not inspected further and counts as not an error.
pub fn is_error_reply(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-' | b'!'))
}
