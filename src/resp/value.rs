//! [`Value`]: a fully parsed reply, for the control path only (CLUSTER SHARDS/SLOTS, COMMAND,
//! handshake replies). Requests and forwarded replies never become values; see
//! [`ReplyScanner`](super::ReplyScanner) for the hot path.

use bytes::Bytes;

use super::decode::{find_byte, parse_integer};
use super::scan::parse_len;
use super::{OffendingByte, ProtocolError};

/// Deepest nesting accepted by [`Value::parse`]. Control-path replies nest at most 4–5 levels
/// (COMMAND: command → key specs → spec → begin_search → spec); the bound keeps a hostile or
/// corrupt reply from exhausting the stack, since parsing recurses.
pub const MAX_VALUE_DEPTH: usize = 32;

/// A parsed RESP2/RESP3 reply. RESP3 sets and pushes become [`Value::Array`]; big numbers and
/// verbatim strings become [`Value::Bulk`] (verbatim without its `txt:` prefix); blob errors
/// become [`Value::Error`]; attributes are skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`
    Simple(Bytes),
    /// `-ERR ...` or `!` blob error, without the marker.
    Error(Bytes),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Bytes),
    /// `$-1`, `*-1` or RESP3 `_`.
    Nil,
    /// `*`, RESP3 set `~` or push `>`.
    Array(Vec<Value>),
    /// RESP3 map `%`.
    Map(Vec<(Value, Value)>),
    /// RESP3 double `,`.
    Double(f64),
    /// RESP3 boolean `#t` / `#f`.
    Boolean(bool),
}

impl Value {
    /// Parses one complete value from the front of `buf`.
    ///
    /// `Ok(Some((value, len)))` consumed `len` bytes; `Ok(None)` means the value is incomplete.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] for malformed RESP or nesting deeper than [`MAX_VALUE_DEPTH`].
    pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        parse_at(buf, 0, 0)
    }

    /// The payload of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The payload of a simple or bulk string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }

    /// An integer, or a simple/bulk string holding one (RESP2 sends some numbers as strings).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            other => parse_integer(other.as_bytes()?),
        }
    }

    /// The elements of an array (or set or push).
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// Map-style field access, matching `key` case-insensitively: works on a RESP3 map and on
    /// the RESP2 form of a map, a flat array of alternating keys and values (as `CLUSTER
    /// SHARDS` and `COMMAND` key specs are sent over RESP2).
    pub fn field(&self, key: &str) -> Option<&Value> {
        let matches = |k: &Value| {
            k.as_bytes()
                .is_some_and(|k| k.eq_ignore_ascii_case(key.as_bytes()))
        };
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| matches(k)).map(|(_, v)| v),
            Value::Array(items) => items.chunks_exact(2).find_map(|pair| match pair {
                [k, v] if matches(k) => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }
}

type Parsed = Option<(Value, usize)>;

fn parse_at(buf: &[u8], start: usize, depth: usize) -> Result<Parsed, ProtocolError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(ProtocolError::NestingTooDeep(MAX_VALUE_DEPTH));
    }
    let Some(&marker) = buf.get(start) else {
        return Ok(None);
    };
    let Some(cr) = find_byte(buf, start + 1, b'\r') else {
        return Ok(None);
    };
    let Some(&lf) = buf.get(cr + 1) else {
        return Ok(None);
    };
    if lf != b'\n' {
        return Err(ProtocolError::ReplyNotTerminated);
    }
    let line = buf.get(start + 1..cr).unwrap_or_default();
    let next = cr + 2;
    let copy = |b: &[u8]| Bytes::copy_from_slice(b);
    let value = match marker {
        b'+' => Value::Simple(copy(line)),
        b'-' => Value::Error(copy(line)),
        b':' => {
            Value::Integer(parse_integer(line).ok_or(ProtocolError::InvalidReplyValue("integer"))?)
        }
        b'(' => Value::Bulk(copy(line)),
        b'_' => Value::Nil,
        b'#' => match line {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(ProtocolError::InvalidReplyValue("boolean")),
        },
        b',' => Value::Double(
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or(ProtocolError::InvalidReplyValue("double"))?,
        ),
        b'$' | b'!' | b'=' => {
            let Some(len) = parse_len(line)? else {
                return Ok(Some((Value::Nil, next)));
            };
            let payload_end = next
                .checked_add(len)
                .ok_or(ProtocolError::InvalidReplyLength)?;
            let Some(payload) = buf.get(next..payload_end) else {
                return Ok(None);
            };
            match buf.get(payload_end..payload_end + 2) {
                None => return Ok(None),
                Some(b"\r\n") => {}
                Some(_) => return Err(ProtocolError::ReplyNotTerminated),
            }
            let end = payload_end + 2;
            let value = match marker {
                b'!' => Value::Error(copy(payload)),
                // Verbatim strings carry a 3-letter format and a colon before the text.
                b'=' => Value::Bulk(copy(payload.get(4..).unwrap_or_default())),
                _ => Value::Bulk(copy(payload)),
            };
            return Ok(Some((value, end)));
        }
        b'*' | b'~' | b'>' => {
            let Some(n) = parse_len(line)? else {
                return Ok(Some((Value::Nil, next)));
            };
            // Every element takes at least 3 bytes, so the buffer bounds the reservation.
            let mut items = Vec::with_capacity(n.min(buf.len().saturating_sub(next) / 3));
            let mut pos = next;
            for _ in 0..n {
                let Some((item, end)) = parse_at(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = end;
            }
            return Ok(Some((Value::Array(items), pos)));
        }
        b'%' => {
            let Some(n) = parse_len(line)? else {
                return Ok(Some((Value::Nil, next)));
            };
            let mut entries = Vec::with_capacity(n.min(buf.len().saturating_sub(next) / 6));
            let mut pos = next;
            for _ in 0..n {
                let Some((key, end)) = parse_at(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                let Some((value, end)) = parse_at(buf, end, depth + 1)? else {
                    return Ok(None);
                };
                entries.push((key, value));
                pos = end;
            }
            return Ok(Some((Value::Map(entries), pos)));
        }
        b'|' => {
            // Attributes are metadata for the value that follows; skip them and return that.
            let n = parse_len(line)?.unwrap_or(0);
            let mut pos = next;
            for _ in 0..n.saturating_mul(2) {
                let Some((_, end)) = parse_at(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                pos = end;
            }
            return parse_at(buf, pos, depth + 1);
        }
        other => return Err(ProtocolError::UnexpectedReplyByte(OffendingByte(other))),
    };
    Ok(Some((value, next)))
}
