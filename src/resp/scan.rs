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
    ///
    /// Inline with the one-pass shortcut, the element-by-element framing out of line: it runs
    /// once per backend reply.
    #[inline(always)]
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if self.remaining == 0 {
            if let Some(len) = whole_plain_reply(buf) {
                return Ok(Some(len));
            }
        }
        self.scan_framed(buf)
    }

    /// [`ReplyScanner::scan`] for every reply: element by element, resumable.
    #[inline(never)]
    fn scan_framed(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
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

/// The length of the reply at the front of `buf` when it is whole and of the kinds most replies
/// are (a simple string, error or integer; a bulk string of up to 99,999,999 bytes, without a
/// leading zero); `None` for anything else, complete or not, which [`ReplyScanner`] then frames
/// element by element. Same answers, in one pass over the header: the general path cost about
/// 150 instructions for a GET's `$64` reply (callgrind).
#[inline(always)] // in `scan`, on every reply: a call costs more than the common case
fn whole_plain_reply(buf: &[u8]) -> Option<usize> {
    match *buf.first()? {
        b'+' | b'-' | b':' => {
            let cr = find_byte(buf, 1, b'\r')?;
            (buf.get(cr + 1) == Some(&b'\n')).then_some(cr + 2)
        }
        b'$' => {
            let mut len = 0usize;
            let mut i = 1;
            loop {
                match *buf.get(i)? {
                    digit @ b'0'..=b'9' if i <= 8 => {
                        len = len * 10 + usize::from(digit - b'0');
                        i += 1;
                    }
                    b'\r' if i > 1 => break,
                    _ => return None,
                }
            }
            if (buf.get(1) == Some(&b'0') && i > 2) || buf.get(i + 1) != Some(&b'\n') {
                return None;
            }
            let end = i + 2 + len + 2;
            (buf.get(end - 2..end)? == b"\r\n").then_some(end)
        }
        b'*' => whole_flat_array(buf),
        _ => None,
    }
}

/// The length of a whole array at the front of `buf` of fewer than 100 elements, each one of
/// the plain kinds above (an MGET part's `*1\r\n$64\r\n...`, a short LRANGE); `None` for
/// anything else (a null or nested array, a RESP3 element, a part not yet received). Element
/// by element, such an array cost about 250 instructions (callgrind, a 10-slot MGET).
#[inline(never)] // keeps `whole_plain_reply` small enough to stay inline in `scan`
fn whole_flat_array(buf: &[u8]) -> Option<usize> {
    let (count, mut at) = match *buf.get(1..4)? {
        [digit @ b'0'..=b'9', b'\r', b'\n'] => (usize::from(digit - b'0'), 4),
        [tens @ b'1'..=b'9', ones @ b'0'..=b'9', b'\r'] if buf.get(4) == Some(&b'\n') => {
            (usize::from(tens - b'0') * 10 + usize::from(ones - b'0'), 5)
        }
        _ => return None,
    };
    for _ in 0..count {
        match *buf.get(at)? {
            b'+' | b'-' | b':' | b'$' => at += whole_plain_reply(buf.get(at..)?)?,
            _ => return None,
        }
    }
    Some(at)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every prefix of these, and each followed by more bytes, is framed the same by the
    /// shortcut (where it answers) as element by element.
    #[test]
    fn the_plain_reply_shortcut_agrees_with_framing_element_by_element() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR wrong\r\n",
            b"-MOVED 3999 127.0.0.1:7001\r\n",
            b":0\r\n",
            b":-12\r\n",
            b"$0\r\n\r\n",
            b"$3\r\nabc\r\n",
            b"$5\r\na\r\nbc\r\n",
            b"$10\r\n0123456789\r\n",
            b"$-1\r\n",
            b"$03\r\nabc\r\n", // leading zero: an error, decided by the framer
            b"$3\r\nabcd\r\n", // payload longer than said
            b"$3\r\nab\r\n",   // shorter
            b"$3\rXabc\r\n",   // no LF after the length
            b"$\r\n",          // no length
            b"$1a\r\nx\r\n",   // not a number
            b"$123456789\r\n", // nine digits: left to the framer
            b"+OK\rX",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"*0\r\n",
            b"*-1\r\n",
            b"*1\r\n$3\r\nabc\r\n",
            b"*3\r\n$-1\r\n+OK\r\n-ERR x\r\n",
            b"*1\r\n*1\r\n:1\r\n",   // nested: left to the framer
            b"*2\r\n_\r\n:1\r\n",    // a RESP3 element: left to the framer
            b"*01\r\n:1\r\n",        // leading zero
            b"*1\r\n$03\r\nabc\r\n", // an element with a leading zero
            b"*2\r\n:1\r\n",         // an element short
            b"*1\rX:1\r\n",          // no LF after the count
            b"*12\r\n:1\r\n:2\r\n:3\r\n:4\r\n:5\r\n:6\r\n:7\r\n:8\r\n:9\r\n:10\r\n:11\r\n:12\r\n",
            b"*100\r\n", // three digits: left to the framer
            b"%1\r\n+a\r\n+b\r\n",
            b"|1\r\n+k\r\n+v\r\n+OK\r\n",
            b"_\r\n",
            b"?\r\n",
        ];
        let mut bulk64 = b"$64\r\n".to_vec();
        bulk64.extend_from_slice(&[b'x'; 64]);
        bulk64.extend_from_slice(b"\r\n");
        let mut answered = 0;
        for reply in replies.iter().copied().chain([bulk64.as_slice()]) {
            for cut in 0..=reply.len() {
                for tail in [&b""[..], b"+OK\r\n", b"$"] {
                    let buf = [reply.get(..cut).unwrap_or_default(), tail].concat();
                    let framed = ReplyScanner::new().scan_framed(&buf);
                    if let Some(len) = whole_plain_reply(&buf) {
                        answered += 1;
                        assert_eq!(framed, Ok(Some(len)), "{:?}", String::from_utf8_lossy(&buf));
                    }
                    assert_eq!(
                        ReplyScanner::new().scan(&buf),
                        framed,
                        "{:?}",
                        String::from_utf8_lossy(&buf)
                    );
                }
            }
        }
        // The shortcut answered the whole ones (not just left everything to the framer).
        assert!(answered > 30, "{answered}");
    }
}
