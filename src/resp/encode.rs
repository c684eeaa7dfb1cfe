//! RESP2 encoders for the replies and requests the proxy writes itself (local replies, merged
//! fan-out replies, sub-commands). Forwarded backend replies never pass through here: they are
//! copied as raw bytes.
//!
//! Every helper appends to a `BytesMut` and never allocates beyond growing it; integers are
//! formatted into a stack buffer.

use bytes::{BufMut, BytesMut};

/// Room for `i64::MIN` in decimal (20 characters).
const I64_DIGITS: usize = 20;

/// Appends the decimal form of `n` without going through `fmt` (no allocation, no trait
/// objects): this runs for every bulk header the proxy writes.
fn put_decimal(out: &mut BytesMut, n: i64) {
    let mut digits = [0u8; I64_DIGITS];
    let mut at = digits.len();
    // Work on the magnitude as u64 so that i64::MIN does not overflow on negation.
    let mut v = n.unsigned_abs();
    loop {
        at -= 1;
        if let Some(slot) = digits.get_mut(at) {
            // `v % 10` is below 10, so the cast cannot truncate.
            *slot = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || at == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(digits.get(at..).unwrap_or_default());
}

/// Appends `n` as a RESP length, saturating at `i64::MAX` (no real length comes near it).
fn put_len(out: &mut BytesMut, n: usize) {
    put_decimal(out, i64::try_from(n).unwrap_or(i64::MAX));
}

/// Appends the header line `{kind}{n}\r\n`. A count of one digit (most arrays the proxy
/// writes: sub-commands, merged replies) goes in one copy; three copies and the digit loop
/// cost about 90 instructions (callgrind, a 10-slot MGET).
fn header(out: &mut BytesMut, kind: u8, n: usize) {
    match u8::try_from(n) {
        Ok(digit @ 0..=9) => out.put_slice(&[kind, b'0' + digit, b'\r', b'\n']),
        _ => {
            out.put_u8(kind);
            put_len(out, n);
            out.put_slice(b"\r\n");
        }
    }
}

/// Appends an array header `*{n}\r\n`; the caller then appends `n` elements.
pub fn array_header(out: &mut BytesMut, n: usize) {
    header(out, b'*', n);
}

/// Appends a RESP3 push header `>{n}\r\n` (Pub/Sub messages and confirmations in RESP3).
pub fn push_header(out: &mut BytesMut, n: usize) {
    header(out, b'>', n);
}

/// Appends a RESP3 map header `%{n}\r\n`; the caller then appends `n` key/value pairs.
pub fn map_header(out: &mut BytesMut, n: usize) {
    header(out, b'%', n);
}

/// Appends the null of `protocol`: RESP2's null bulk string, or RESP3's `_`.
pub fn null(out: &mut BytesMut, protocol: super::Protocol) {
    match protocol {
        super::Protocol::Resp2 => nil_bulk(out),
        super::Protocol::Resp3 => out.put_slice(b"_\r\n"),
    }
}

/// Appends the RESP2 null array `*-1\r\n`.
pub fn nil_array(out: &mut BytesMut) {
    out.put_slice(b"*-1\r\n");
}

/// Appends a bulk string `${len}\r\n{data}\r\n`. Binary-safe.
pub fn bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    bulk_header(out, data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends a bulk header `${len}\r\n`; the caller appends `len` bytes and a CRLF. Lets a
/// payload be written straight from where it lives (or its offset be recorded).
pub fn bulk_header(out: &mut BytesMut, len: usize) {
    header(out, b'$', len);
}

/// Appends the RESP2 null bulk string `$-1\r\n`.
pub fn nil_bulk(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

/// Appends an integer reply `:{n}\r\n`.
pub fn integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    put_decimal(out, n);
    out.put_slice(b"\r\n");
}

/// Appends a simple string `+{s}\r\n`. CR and LF would end the line early and desynchronise
/// the client, so they are replaced by spaces (as Redis does for status and error replies).
pub fn simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    put_line(out, s);
}

/// Appends an error reply `-{msg}\r\n`. `msg` carries its own prefix (`ERR ...`,
/// `CROSSSLOT ...`); CR and LF are replaced by spaces so the reply stays one line.
pub fn error(out: &mut BytesMut, msg: &str) {
    out.put_u8(b'-');
    put_line(out, msg);
}

fn put_line(out: &mut BytesMut, s: &str) {
    out.reserve(s.len() + 2);
    for chunk in s
        .as_bytes()
        .split(|&b| b == b'\r' || b == b'\n')
        .enumerate()
    {
        if chunk.0 > 0 {
            out.put_u8(b' ');
        }
        out.put_slice(chunk.1);
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut out = BytesMut::new();
        f(&mut out);
        out.to_vec()
    }

    #[test]
    fn integers_cover_the_whole_range() {
        for n in [0, 1, -1, 9, 10, 12345, -98765, i64::MAX, i64::MIN] {
            assert_eq!(enc(|o| integer(o, n)), format!(":{n}\r\n").into_bytes());
        }
    }

    #[test]
    fn bulk_and_headers() {
        assert_eq!(enc(|o| bulk(o, b"")), b"$0\r\n\r\n");
        assert_eq!(enc(|o| bulk(o, b"a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(enc(|o| array_header(o, 3)), b"*3\r\n");
        assert_eq!(enc(nil_bulk), b"$-1\r\n");
        assert_eq!(enc(nil_array), b"*-1\r\n");
    }

    /// Counts of one digit take the shortcut, longer ones the digit loop: both read back as
    /// the count, for every kind of header.
    #[test]
    fn headers_of_every_length_read_back() {
        type Put = fn(&mut BytesMut, usize);
        let kinds: [(char, Put); 4] = [
            ('*', array_header),
            ('>', push_header),
            ('%', map_header),
            ('$', bulk_header),
        ];
        for (kind, put) in kinds {
            for n in [0, 1, 9, 10, 11, 99, 100, 255, 256, 65_536, usize::MAX] {
                let want = format!("{kind}{}\r\n", n.min(i64::MAX as usize));
                assert_eq!(enc(|o| put(o, n)), want.into_bytes(), "{kind}{n}");
            }
        }
    }

    #[test]
    fn simple_and_error_lines_stay_on_one_line() {
        assert_eq!(enc(|o| simple(o, "OK")), b"+OK\r\n");
        assert_eq!(
            enc(|o| error(o, "ERR bad\r\nthing\n")),
            b"-ERR bad  thing \r\n"
        );
    }
}
