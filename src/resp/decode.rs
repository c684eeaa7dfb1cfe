//! Client request decoding: finds one whole request at the front of the read buffer and splits
//! it off without copying payloads. Follows Redis 7's `processMultibulkBuffer` and
//! `processInlineBuffer` (networking.c) so that the proxy accepts, skips and rejects exactly
//! what a single Redis server would, with the same error texts.
//!
//! Routing, arity and command names are not looked at here; that is `command`'s job.

use bytes::{Buf, BytesMut};

use super::command::ArgSpans;
use super::{Command, OffendingByte, ProtocolError};

/// Size limits applied while decoding client requests. Each is checked as soon as the header
/// that declares a size arrives, so an over-limit request is refused before it is buffered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest bulk argument, in bytes. Redis's `proto-max-bulk-len` (default 512 MiB).
    pub max_bulk_len: usize,
    /// Most arguments in one request. Bounds the per-request offset table.
    pub max_array_len: usize,
    /// Largest whole request, in bytes. Redis's `client-query-buffer-limit` (default 1 GiB).
    pub max_query_buffer: usize,
    /// Longest inline request line, and longest `*`/`$` header line, in bytes. Redis's
    /// `PROTO_INLINE_MAX_SIZE` (64 KiB).
    pub max_inline_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// Upper bound on argument slots reserved from a `*N` header before the arguments arrive: a
/// 10-byte header must not make us allocate megabytes.
const MAX_PREALLOC_ARGS: usize = 1024;

/// Resumable request decoder, one per client connection.
///
/// It remembers how far into a partly received multibulk request it has parsed, so a large
/// request arriving in many small reads costs O(total bytes), not O(reads × size): while a bulk
/// payload is incomplete a call is a single length comparison.
///
/// Contract: after `Ok(None)`, the next call must get the same buffer with more bytes appended
/// (the usual read loop). Call [`RequestDecoder::reset`] before feeding unrelated bytes.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: RequestLimits,
    /// Multibulk request parsed partway, if any.
    partial: Option<Partial>,
    /// Where to resume looking for the end of the current header or inline line, so a long
    /// line trickling in is not rescanned from its start on every read.
    scan_from: usize,
}

#[derive(Debug)]
struct Partial {
    /// Bytes at the front of the buffer already parsed (headers and complete arguments).
    pos: usize,
    /// Bulk arguments still to read.
    remaining: usize,
    /// Length of the bulk whose header ends at `pos` but whose payload is incomplete.
    bulk_len: Option<usize>,
    args: ArgSpans,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: RequestLimits) -> Self {
        RequestDecoder {
            limits,
            partial: None,
            scan_from: 0,
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    /// Forgets any partly parsed request.
    pub fn reset(&mut self) {
        self.partial = None;
        self.scan_from = 0;
    }

    /// Decodes at most one request from the front of `buf`; call in a loop until `Ok(None)`.
    ///
    /// On `Ok(Some(_))` the request's bytes have been split off the front of `buf` (a
    /// reference-counted split, no copy). On `Ok(None)` more bytes are needed; only requests
    /// Redis ignores (`*0`, `*-1`, blank inline lines) may have been consumed.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the bytes are not valid RESP or exceed a limit. The stream
    /// cannot be resynchronised afterwards: reply with `-ERR {err}` and close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        loop {
            if let Some(partial) = self.partial.as_mut() {
                if partial.pos > buf.len() {
                    // The caller broke the contract (buffer replaced); start over rather than
                    // index past the end.
                    self.reset();
                    continue;
                }
                return self.continue_multibulk(buf);
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let progressed = if first == b'*' {
                if let Some((end, args)) = self.parse_whole(buf) {
                    self.scan_from = 0;
                    // Split even when the request is the whole buffer: its bytes are cloned
                    // for a possible redirect, and a buffer taken whole becomes shared only on
                    // that clone, at a higher cost (measured: 200 more instructions a GET).
                    return Ok(Some(Command::from_parts(buf.split_to(end).freeze(), args)));
                }
                self.start_multibulk(buf)?
            } else {
                match self.decode_inline(buf)? {
                    Inline::Command(cmd) => return Ok(Some(cmd)),
                    Inline::Skipped => true,
                    Inline::Incomplete => false,
                }
            };
            if !progressed {
                return Ok(None);
            }
        }
    }

    /// A well-formed request that is all in `buf`, parsed in one pass (the usual case: a
    /// client's request arrives whole): where it ends and where its arguments are. `None` for
    /// anything else (incomplete, malformed, over a limit, or a count Redis skips), which the
    /// resumable path then takes from the start and answers with Redis's exact errors.
    fn parse_whole(&self, buf: &[u8]) -> Option<(usize, ArgSpans)> {
        let (count, mut pos) = parse_header(buf, 0, b'*')?;
        if count == 0 || count > self.limits.max_array_len {
            return None;
        }
        let mut args = ArgSpans::with_capacity(count.min(MAX_PREALLOC_ARGS));
        for _ in 0..count {
            let (len, start) = parse_header(buf, pos, b'$')?;
            if len > self.limits.max_bulk_len {
                return None;
            }
            let end = start.checked_add(len)?;
            if buf.get(end..end.checked_add(2)?)? != b"\r\n" {
                return None;
            }
            args.push((start, end));
            pos = end + 2;
        }
        (pos <= self.limits.max_query_buffer).then_some((pos, args))
    }

    /// Parses the `*N` header. Returns whether anything was consumed or started.
    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<bool, ProtocolError> {
        let Some(line_end) = self.find_line(buf, 0, ProtocolError::TooBigMultibulkCount)? else {
            return Ok(false);
        };
        let header = buf.get(1..line_end).unwrap_or_default();
        let count = parse_integer(header).ok_or(ProtocolError::InvalidMultibulkLength)?;
        if buf.get(line_end + 1) != Some(&b'\n') {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        self.scan_from = 0;
        if count <= 0 {
            // Redis ignores empty and null arrays (and any negative count) as no-ops.
            buf.advance(line_end + 2);
            return Ok(true);
        }
        let count = usize::try_from(count).map_err(|_| ProtocolError::InvalidMultibulkLength)?;
        if count > self.limits.max_array_len {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        self.partial = Some(Partial {
            pos: line_end + 2,
            remaining: count,
            bulk_len: None,
            args: ArgSpans::with_capacity(count.min(MAX_PREALLOC_ARGS)),
        });
        Ok(true)
    }

    fn continue_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        loop {
            let Some(partial) = self.partial.as_mut() else {
                return Ok(None);
            };
            if partial.remaining == 0 {
                break;
            }
            if let Some(len) = partial.bulk_len {
                let payload_end = partial.pos + len;
                let end = payload_end + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if buf.get(payload_end..end) != Some(b"\r\n".as_slice()) {
                    return Err(ProtocolError::BulkNotTerminated);
                }
                partial.args.push((partial.pos, payload_end));
                partial.pos = end;
                partial.bulk_len = None;
                partial.remaining -= 1;
                continue;
            }
            let start = partial.pos;
            let Some(&marker) = buf.get(start) else {
                return Ok(None);
            };
            if marker != b'$' {
                return Err(ProtocolError::ExpectedBulk(OffendingByte(marker)));
            }
            let Some(line_end) = self.find_line(buf, start, ProtocolError::TooBigBulkCount)? else {
                return Ok(None);
            };
            self.scan_from = 0;
            let header = buf.get(start + 1..line_end).unwrap_or_default();
            let len = parse_integer(header)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= self.limits.max_bulk_len)
                .ok_or(ProtocolError::InvalidBulkLength)?;
            if buf.get(line_end + 1) != Some(&b'\n') {
                return Err(ProtocolError::InvalidBulkLength);
            }
            let header_end = line_end + 2;
            // The whole request must fit the query buffer; refuse now, before buffering it.
            let request_end = header_end
                .checked_add(len)
                .and_then(|n| n.checked_add(2))
                .filter(|&n| n <= self.limits.max_query_buffer)
                .ok_or(ProtocolError::QueryBufferLimitExceeded)?;
            debug_assert!(request_end > header_end);
            if let Some(partial) = self.partial.as_mut() {
                partial.pos = header_end;
                partial.bulk_len = Some(len);
            }
        }
        let Some(partial) = self.partial.take() else {
            return Ok(None);
        };
        let raw = buf.split_to(partial.pos).freeze();
        Ok(Some(Command::from_parts(raw, partial.args)))
    }

    /// Finds the `\r` ending the header line that starts at `start`. `Ok(None)` if the line,
    /// including the `\n` after the `\r`, is not all here yet.
    fn find_line(
        &mut self,
        buf: &BytesMut,
        start: usize,
        too_big: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let from = self.scan_from.max(start + 1);
        match find_byte(buf, from, b'\r') {
            Some(cr) if cr + 1 < buf.len() => Ok(Some(cr)),
            Some(cr) => {
                self.scan_from = cr;
                Ok(None)
            }
            None => {
                if buf.len().saturating_sub(start) > self.limits.max_inline_len {
                    return Err(too_big);
                }
                self.scan_from = buf.len().max(from);
                Ok(None)
            }
        }
    }

    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Inline, ProtocolError> {
        let Some(newline) = find_byte(buf, self.scan_from, b'\n') else {
            // A line of exactly the limit may be waiting for its `\n` after the `\r`.
            let pending_cr = usize::from(buf.last() == Some(&b'\r'));
            if buf.len() > self.limits.max_inline_len + pending_cr {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            self.scan_from = buf.len();
            return Ok(Inline::Incomplete);
        };
        self.scan_from = 0;
        let mut line = buf.get(..newline).unwrap_or_default();
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        // Checked even when the newline is present, so the outcome does not depend on how
        // the bytes happened to be split into reads.
        if line.len() > self.limits.max_inline_len {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        let args = split_inline_args(line)?;
        buf.advance(newline + 1);
        if args.is_empty() {
            return Ok(Inline::Skipped);
        }
        Ok(Inline::Command(Command::from_args(&args)))
    }
}

enum Inline {
    Command(Command),
    Skipped,
    Incomplete,
}

/// A `*N` or `$N` header line at `at` with a count as [`parse_integer`] reads it, non-negative
/// and at most 18 digits: the count and where the line ends. `None` for anything else,
/// including a header not all here yet.
///
/// Inline, with the loop out of line: called three times for a GET, a call each cost more
/// than the one- or two-digit shortcut it reached (about 10 instructions a request, callgrind).
#[inline(always)]
fn parse_header(buf: &[u8], at: usize, marker: u8) -> Option<(usize, usize)> {
    if *buf.get(at)? != marker {
        return None;
    }
    // Most headers have one or two digits (`*2`, `$3`, `$16`): read at once, without the
    // loop (which takes the rest, and a header at the very end of the buffer).
    match buf.get(at + 1..at + 5) {
        Some(&[digit @ b'0'..=b'9', b'\r', b'\n', _]) => {
            return Some((usize::from(digit - b'0'), at + 4));
        }
        Some(&[tens @ b'1'..=b'9', ones @ b'0'..=b'9', b'\r', b'\n']) => {
            return Some((
                usize::from(tens - b'0') * 10 + usize::from(ones - b'0'),
                at + 5,
            ));
        }
        _ => {}
    }
    parse_header_digits(buf, at)
}

/// [`parse_header`] for counts the shortcuts do not take, digit by digit.
#[inline(never)]
fn parse_header_digits(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    const MAX_DIGITS: usize = 18;
    let digits_start = at + 1;
    let mut value: u64 = 0;
    let mut i = digits_start;
    loop {
        let byte = *buf.get(i)?;
        if byte == b'\r' {
            break;
        }
        let digit = byte.wrapping_sub(b'0');
        // No sign, no leading zero (a first `0` must be the only digit), no overflow.
        if digit > 9 || (i > digits_start && value == 0) || i - digits_start >= MAX_DIGITS {
            return None;
        }
        value = value * 10 + u64::from(digit);
        i += 1;
    }
    if i == digits_start || *buf.get(i + 1)? != b'\n' {
        return None;
    }
    Some((usize::try_from(value).ok()?, i + 2))
}

/// Position of the first `byte` at or after `from`.
pub(crate) fn find_byte(hay: &[u8], from: usize, byte: u8) -> Option<usize> {
    hay.get(from..)?
        .iter()
        .position(|&b| b == byte)
        .map(|i| i + from)
}

/// Parses a decimal integer exactly as Redis's `string2ll` does: optional `-`, no `+`, no
/// leading zeros, no whitespace, no overflow. Anything else is `None`.
pub fn parse_integer(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    // Accumulate as a negative number so that i64::MIN is representable.
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// C's `isspace` in the "C" locale, as used by `sdssplitargs` to skip blanks.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline request line like Redis's `sdssplitargs`: blanks separate arguments;
/// `"..."` supports `\xHH`, `\n`, `\r`, `\t`, `\b`, `\a` and `\<any>`; `'...'` supports `\'`;
/// a closing quote must be followed by a blank or the end. The line is treated as a C string,
/// so a NUL byte ends it, as it does in Redis.
fn split_inline_args(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    // Past the end reads as NUL, mirroring the C string's terminator.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0usize;
    loop {
        while at(p) != 0 && is_c_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Ok(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        let mut done = false;
        while !done {
            let c = at(p);
            if in_double {
                if c == b'\\' && at(p + 1) == b'x' {
                    if let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3))) {
                        current.push(hi * 16 + lo);
                        p += 3;
                    } else {
                        // `\x` without two hex digits: the generic escape keeps the `x`.
                        p += 1;
                        current.push(b'x');
                    }
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    other => current.push(other),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push(current);
    }
}

/// Decodes one request with a fresh decoder: for tests and one-off callers. Sessions keep a
/// [`RequestDecoder`] so that partial requests are not re-parsed on every read.
///
/// # Errors
///
/// As [`RequestDecoder::decode`].
pub fn decode_command(
    buf: &mut BytesMut,
    limits: &RequestLimits,
) -> Result<Option<Command>, ProtocolError> {
    RequestDecoder::new(limits.clone()).decode(buf)
}

#[cfg(test)]
mod header_tests {
    use super::*;

    /// `parse_header` against `parse_integer`'s rules, for every header of up to three
    /// characters over digits, a sign and a letter, each followed by CRLF and then nothing,
    /// one byte, or more: the shortcuts for one and two digits and the loop agree.
    #[test]
    fn headers_read_as_parse_integer_reads_their_counts() {
        let alphabet = [b'0', b'1', b'2', b'5', b'9', b'-', b'x'];
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new()];
        for len in 1..=3 {
            let mut next = Vec::new();
            for body in bodies.iter().filter(|b| b.len() == len - 1) {
                for &c in &alphabet {
                    let mut longer = body.clone();
                    longer.push(c);
                    next.push(longer);
                }
            }
            bodies.extend(next);
        }
        for body in &bodies {
            let want = parse_integer(body)
                .filter(|&n| n >= 0)
                .map(|n| (n as usize, body.len() + 3));
            for tail in [&b""[..], b"x", b"xyz"] {
                let mut header = vec![b'$'];
                header.extend_from_slice(body);
                header.extend_from_slice(b"\r\n");
                header.extend_from_slice(tail);
                assert_eq!(
                    parse_header(&header, 0, b'$'),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&header)
                );
            }
        }
    }
}
