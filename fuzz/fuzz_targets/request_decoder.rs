//! Client request decoding on arbitrary bytes.
//!
//! The input is a raw client byte stream (no control prefix, so the seeds are plain RESP). It is
//! fed to a `RequestDecoder` three ways: whole, one byte per read, and in reads whose sizes come
//! from the data itself (`byte % 16 + 1` at each read's start, so the fuzzer steers the splits).
//! After each read the decoder is called until it wants more bytes or fails, as a session does.
//!
//! Checked, beyond "no panic":
//! - the decoder only ever removes bytes from the front of the buffer, and only ever fewer than
//!   it holds;
//! - every command has a name and its `raw` bytes are one well-formed RESP array of bulk strings
//!   holding exactly its arguments (they are forwarded verbatim to a backend);
//! - a multibulk command's `raw` is the very bytes the client sent;
//! - the commands decoded do not depend on how the stream was split into reads, nor does the
//!   outcome, except where a size limit is checked on a line still arriving (see
//!   `same_outcome`).
//!
//! After an error the feeding stops: the session replies `-ERR` and closes the connection.
//! Each way of feeding runs with small limits (so that every limit error is reachable with short
//! inputs) and with the defaults.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slotproxy::resp::{
    decode_command, Command, ProtocolError, ReplyScanner, RequestDecoder, RequestLimits, Value,
};

/// Small enough for short inputs to hit each limit. `max_inline_len` stays above the 20
/// characters of the longest valid `*`/`$` count, which `same_outcome` relies on.
fn small_limits() -> RequestLimits {
    RequestLimits {
        max_bulk_len: 100,
        max_array_len: 10,
        max_query_buffer: 300,
        max_inline_len: 40,
    }
}

/// How feeding a whole input ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte was fed and the decoder wants more (or the input ended between requests).
    NeedMore,
    /// The decoder refused the stream; the connection would be closed.
    Failed(ProtocolError),
}

#[derive(Debug)]
struct Outcome {
    commands: Vec<Command>,
    end: End,
}

/// Feeds `input` in reads of `read_len(position)` bytes, decoding after each read.
fn feed(input: &[u8], limits: &RequestLimits, read_len: impl Fn(usize) -> usize) -> Outcome {
    let mut decoder = RequestDecoder::new(limits.clone());
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    // `input[consumed..fed]` is what the buffer must hold: the decoder takes from the front only.
    let mut fed = 0;
    let mut consumed = 0;
    while fed < input.len() {
        let n = read_len(fed).clamp(1, input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.len();
            let result = decoder.decode(&mut buf);
            assert!(buf.len() <= before, "decode grew the buffer");
            let taken = before - buf.len();
            match result {
                Ok(Some(cmd)) => {
                    assert!(taken > 0, "a command was decoded from no bytes");
                    check_command(&cmd, &input[consumed..consumed + taken]);
                    consumed += taken;
                    commands.push(cmd);
                }
                Ok(None) => {
                    // Only requests Redis ignores (`*0`, `*-1`, blank lines) may go here.
                    consumed += taken;
                    break;
                }
                Err(error) => {
                    return Outcome {
                        commands,
                        end: End::Failed(error),
                    }
                }
            }
            assert_eq!(buf.len(), fed - consumed);
        }
        assert_eq!(buf.len(), fed - consumed);
    }
    Outcome {
        commands,
        end: End::NeedMore,
    }
}

/// `taken`: the bytes the decode call that returned `cmd` removed from the buffer.
fn check_command(cmd: &Command, taken: &[u8]) {
    assert!(cmd.argc() >= 1, "a decoded command has no name");
    let raw = cmd.raw();
    // The bytes sent to the backend: one array of bulk strings, nothing before or after it.
    let expected = Value::Array(cmd.args().map(|a| Value::Bulk(a.to_vec().into())).collect());
    match Value::parse(raw) {
        Ok(Some((value, len))) => {
            assert_eq!(len, raw.len(), "raw holds more than one value");
            assert_eq!(value, expected, "raw does not hold the arguments");
        }
        // Deeper than the control-path parser goes is impossible here: bulks do not nest.
        other => panic!("raw is not a whole RESP value: {other:?}"),
    }
    assert_eq!(ReplyScanner::new().scan(raw), Ok(Some(raw.len())));
    // A multibulk request is forwarded as sent; an inline one is re-encoded from its line
    // (ignored `*0` or blank requests may precede either in the same call).
    assert!(
        taken.ends_with(raw) || taken.ends_with(b"\n"),
        "the command is neither the bytes sent nor an inline line"
    );
}

/// Whether reading `input` whole and reading it in pieces may end as `whole` and `split`.
///
/// The commands must always be the same. The end may differ in one way: a `*`/`$` header line
/// is refused as too long as soon as more than `max_inline_len` bytes of it have arrived without
/// a CR. Read whole, the same line has its CR already, so it is either refused as a bad count
/// (too long to be a number) or, if the CR is the last byte, still waits for its LF. Redis
/// behaves the same way (`processMultibulkBuffer` checks the size only while no CR is there).
fn same_outcome(whole: &End, split: &End) -> bool {
    use ProtocolError::*;
    match (whole, split) {
        (a, b) if a == b => true,
        (End::Failed(InvalidMultibulkLength), End::Failed(TooBigMultibulkCount)) => true,
        (End::Failed(InvalidBulkLength), End::Failed(TooBigBulkCount)) => true,
        (End::NeedMore, End::Failed(TooBigMultibulkCount | TooBigBulkCount)) => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    for limits in [small_limits(), RequestLimits::default()] {
        let whole = feed(data, &limits, |_| usize::MAX);
        let bytewise = feed(data, &limits, |_| 1);
        let steered = feed(data, &limits, |at| usize::from(data[at] % 16) + 1);
        for split in [&bytewise, &steered] {
            assert_eq!(
                whole.commands, split.commands,
                "commands depend on the reads"
            );
            assert!(
                same_outcome(&whole.end, &split.end),
                "end depends on the reads: whole {:?}, split {:?}",
                whole.end,
                split.end
            );
        }
    }
    // The one-shot helper must agree with the first request of a whole read.
    let first = decode_command(&mut BytesMut::from(data), &small_limits());
    let whole = feed(data, &small_limits(), |_| usize::MAX);
    match first {
        Ok(Some(cmd)) => assert_eq!(Some(&cmd), whole.commands.first()),
        Ok(None) => assert!(whole.commands.is_empty()),
        Err(error) => {
            assert!(whole.commands.is_empty());
            assert_eq!(whole.end, End::Failed(error));
        }
    }
});
