//! Backend reply framing on arbitrary bytes.
//!
//! The input is a raw backend byte stream (no control prefix, so the seeds are plain RESP). It is
//! framed by a `ReplyScanner` three ways, as a backend connection does: whole, one byte per
//! read, and in reads whose sizes come from the data (`byte % 16 + 1` at each read's start).
//! After each read the scanner is called until it wants more bytes or fails; each frame found is
//! split off the front.
//!
//! Checked, beyond "no panic":
//! - a frame is never empty and never longer than the bytes given;
//! - frames and the final outcome (needs more / which error) do not depend on the reads: the
//!   scanner has no limits, so nothing may be decided before a line is whole;
//! - the scanner and the control path's `Value::parse` agree on where a reply ends: where the
//!   scanner finds a frame of N bytes, `Value::parse` takes exactly N bytes, unless it refuses
//!   what the scanner does not look at (the text of integers, doubles and booleans, and nesting
//!   deeper than `MAX_VALUE_DEPTH`); and where `Value::parse` finds a whole value, the scanner
//!   finds the same frame.
//!
//! Each frame also goes through what the hot path does with a frame: the error check and the
//! redirect classifier.

#![no_main]

use libfuzzer_sys::fuzz_target;
use slotproxy::cluster::redirect;
use slotproxy::resp::{is_error_reply, ProtocolError, ReplyScanner, Value};

#[derive(Debug, PartialEq)]
enum End {
    NeedMore,
    Failed(ProtocolError),
}

#[derive(Debug, PartialEq)]
struct Outcome {
    /// Length of each frame, in order.
    frames: Vec<usize>,
    end: End,
}

/// Feeds `input` in reads of `read_len(position)` bytes, framing after each read.
fn feed(input: &[u8], read_len: impl Fn(usize) -> usize) -> Outcome {
    let mut scanner = ReplyScanner::new();
    let mut frames = Vec::new();
    // The connection's buffer is `input[start..fed]`: frames are split off its front.
    let mut start = 0;
    let mut fed = 0;
    while fed < input.len() {
        fed += read_len(fed).clamp(1, input.len() - fed);
        loop {
            let buf = &input[start..fed];
            match scanner.scan(buf) {
                Ok(Some(len)) => {
                    assert!(len > 0, "empty frame");
                    assert!(len <= buf.len(), "frame longer than the buffer");
                    let frame = &buf[..len];
                    let _ = is_error_reply(frame);
                    let _ = redirect::classify(frame);
                    frames.push(len);
                    start += len;
                }
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        frames,
                        end: End::Failed(error),
                    }
                }
            }
        }
    }
    Outcome {
        frames,
        end: End::NeedMore,
    }
}

/// `scanned`: what the scanner said about the reply at the front of `rest`.
fn agrees_with_value_parse(rest: &[u8], scanned: Option<usize>) {
    let parsed = Value::parse(rest);
    match (scanned, &parsed) {
        (Some(n), Ok(Some((_, m)))) => assert_eq!(n, *m, "scanner and parser split differently"),
        // Content the scanner does not validate, or nesting the recursive parser refuses.
        (_, Err(ProtocolError::InvalidReplyValue(_) | ProtocolError::NestingTooDeep(_))) => {}
        (Some(n), other) => panic!("scanner found a {n}-byte frame, parser said {other:?}"),
        (None, Ok(Some((_, m)))) => panic!("parser found a {m}-byte value, scanner did not"),
        (None, _) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = feed(data, |_| usize::MAX);
    let bytewise = feed(data, |_| 1);
    let steered = feed(data, |at| usize::from(data[at] % 16) + 1);
    assert_eq!(whole, bytewise, "framing depends on the reads");
    assert_eq!(whole, steered, "framing depends on the reads");

    let mut at = 0;
    for &len in &whole.frames {
        agrees_with_value_parse(&data[at..], Some(len));
        at += len;
    }
    // Where the scanner stopped (wanting more, or refusing), the parser finds no value either.
    agrees_with_value_parse(&data[at..], None);
});
