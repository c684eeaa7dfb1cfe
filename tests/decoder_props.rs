//! Property tests for the RESP codec: the client request decoder ([`RequestDecoder`]) and the
//! backend reply framer ([`ReplyScanner`]).
//!
//! Valid input must decode to the same result however it is split into reads; arbitrary or
//! corrupted input must end in `Ok` or `Err`, never a panic or a hang, and must not depend on
//! the read boundaries either.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use slotproxy::resp::{Command, ProtocolError, ReplyScanner, RequestDecoder, RequestLimits};

/// Cases per property. Together they run in a few seconds in a debug build.
const VALID_CASES: u32 = 256;
const RANDOM_CASES: u32 = 512;

/// A single decode/scan run on inputs this small takes microseconds; anything near this long
/// is a hang inside one call, which counting calls cannot catch.
const HANG_DEADLINE: Duration = Duration::from_secs(10);

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are reported with their minimal input; do not write regression files into
        // the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `f` on another thread and fails if it does not finish within [`HANG_DEADLINE`].
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        // The receiver is gone only if we already timed out.
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG_DEADLINE) {
        Ok(value) => {
            // The worker has sent its result and is exiting; reap it.
            let _ = worker.join();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("worker exited without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no result within {HANG_DEADLINE:?}: infinite loop?")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Input generators
// ---------------------------------------------------------------------------------------------

/// Bytes that matter to the grammar, mixed into otherwise arbitrary data.
const SPECIAL_REQUEST_BYTES: &[u8] = b"\r\n*$-+0123456789 \t\"'\\\0";
const SPECIAL_REPLY_BYTES: &[u8] = b"\r\n*$-+:%~_#,(=!|>0123456789tf";

fn byte_biased(special: &'static [u8]) -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), select(special)]
}

/// An argument or bulk payload: arbitrary binary, with CR, LF and markers well represented.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    vec(byte_biased(SPECIAL_REQUEST_BYTES), 0..64)
}

/// One element of a client pipeline.
#[derive(Debug, Clone)]
enum Request {
    /// A RESP array of bulk strings, encoded by `Command::from_args`.
    Multibulk(Vec<Vec<u8>>),
    /// An inline command line: `lead`, words joined by `sep`, then `end`.
    Inline {
        words: Vec<String>,
        lead: &'static str,
        sep: &'static str,
        end: &'static str,
    },
    /// Something Redis ignores: `*0`, `*-1`, blank inline lines.
    Ignored(&'static [u8]),
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        match self {
            Request::Multibulk(args) => Command::from_args(args).raw().to_vec(),
            Request::Inline {
                words,
                lead,
                sep,
                end,
            } => format!("{lead}{}{end}", words.join(sep)).into_bytes(),
            Request::Ignored(bytes) => bytes.to_vec(),
        }
    }

    /// The arguments this request decodes to, or `None` if it decodes to nothing.
    fn expected_args(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Request::Multibulk(args) => Some(args.clone()),
            Request::Inline { words, .. } => {
                Some(words.iter().map(|w| w.as_bytes().to_vec()).collect())
            }
            Request::Ignored(_) => None,
        }
    }
}

/// Requests Redis reads and ignores.
const IGNORED_REQUESTS: &[&[u8]] = &[b"*0\r\n", b"*-1\r\n", b"*-5\r\n", b"\r\n", b"\n", b"  \r\n"];

fn request() -> impl Strategy<Value = Request> {
    let multibulk = vec(payload(), 1..8).prop_map(Request::Multibulk);
    let inline = (
        vec("[a-zA-Z0-9]{1,12}", 1..6),
        select(&["", " ", "\t "][..]),
        select(&[" ", "  ", "\t"][..]),
        select(&["\r\n", "\n", " \r\n"][..]),
    )
        .prop_map(|(words, lead, sep, end)| Request::Inline {
            words,
            lead,
            sep,
            end,
        });
    let ignored = select(IGNORED_REQUESTS).prop_map(Request::Ignored);
    prop_oneof![6 => multibulk, 2 => inline, 1 => ignored]
}

fn pipeline() -> impl Strategy<Value = Vec<Request>> {
    vec(request(), 1..20)
}

fn encode_pipeline(requests: &[Request]) -> Vec<u8> {
    requests.iter().flat_map(Request::encode).collect()
}

/// Read sizes to cycle through when feeding input.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..50, 1..16)
}

/// Cuts `input` into consecutive pieces whose sizes cycle through `sizes`.
fn chunked<'a>(input: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = input;
    let mut sizes = sizes.iter().copied().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// A small random edit of otherwise valid input.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn mutations(special: &'static [u8]) -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        3 => (any::<Index>(), byte_biased(special)).prop_map(|(i, b)| Mutation::Replace(i, b)),
        2 => (any::<Index>(), byte_biased(special)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ];
    vec(one, 1..5)
}

fn mutate(mut input: Vec<u8>, edits: &[Mutation]) -> Vec<u8> {
    for edit in edits {
        match *edit {
            Mutation::Replace(i, b) if !input.is_empty() => {
                let at = i.index(input.len());
                input[at] = b;
            }
            Mutation::Insert(i, b) => input.insert(i.index(input.len() + 1), b),
            Mutation::Delete(i) if !input.is_empty() => {
                input.remove(i.index(input.len()));
            }
            Mutation::Truncate(i) => input.truncate(i.index(input.len() + 1)),
            _ => {}
        }
    }
    input
}

// ---------------------------------------------------------------------------------------------
// Request decoder drivers
// ---------------------------------------------------------------------------------------------

/// What feeding some bytes to a fresh decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    commands: Vec<Command>,
    /// The error that stopped decoding, if any.
    error: Option<ProtocolError>,
    /// Bytes split off the front (requests, and ignored ones); not counting what was still
    /// buffered, or not yet fed, when decoding stopped.
    consumed: usize,
}

impl Decoded {
    fn args(&self) -> Vec<Vec<Vec<u8>>> {
        self.commands
            .iter()
            .map(|c| c.args().map(<[u8]>::to_vec).collect())
            .collect()
    }
}

/// Feeds `chunks` to one decoder the way a session does: append a read, decode until `Ok(None)`.
///
/// Every `Ok(Some)` consumes at least two bytes and every `Ok(None)` ends a read, so more calls
/// than `bytes + reads + 1` means the decoder is spinning without progress.
fn decode_fed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, limits: &RequestLimits) -> Decoded {
    let chunks: Vec<&[u8]> = chunks.into_iter().collect();
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut budget = total + chunks.len() + 1;
    let mut decoder = RequestDecoder::new(limits.clone());
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut commands = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            assert!(budget > 0, "decoder made too many calls without progress");
            budget -= 1;
            match decoder.decode(&mut buf) {
                Ok(Some(cmd)) => {
                    assert!(cmd.argc() >= 1, "decoded command without arguments");
                    assert!(!cmd.raw().is_empty());
                    commands.push(cmd);
                }
                Ok(None) => break,
                Err(err) => {
                    return Decoded {
                        commands,
                        error: Some(err),
                        consumed: fed - buf.len(),
                    };
                }
            }
        }
    }
    // A final call on the drained buffer must agree that nothing more is there.
    let error = match decoder.decode(&mut buf) {
        Ok(None) => None,
        Ok(Some(cmd)) => panic!("decoder produced {cmd:?} from bytes it had declined before"),
        Err(err) => Some(err),
    };
    Decoded {
        commands,
        error,
        consumed: fed - buf.len(),
    }
}

fn decode_at_once(input: &[u8], limits: &RequestLimits) -> Decoded {
    decode_fed([input], limits)
}

fn decode_bytewise(input: &[u8], limits: &RequestLimits) -> Decoded {
    decode_fed(input.chunks(1), limits)
}

fn decode_split(input: &[u8], at: usize, limits: &RequestLimits) -> Decoded {
    let (a, b) = input.split_at(at);
    decode_fed([a, b], limits)
}

/// Split-independence under tiny limits, with the one exception Redis also has: a line check
/// (`TooBig*`) fires as soon as the buffer holds more than the limit without a line end, so a
/// line of exactly the limit whose CR and LF arrive in different reads is refused, while the
/// same line arriving whole is accepted (or fails a later check). Up to that line, both runs
/// must agree.
fn same_up_to_line_limit(split: &Decoded, whole: &Decoded) -> Result<(), &'static str> {
    if split == whole {
        return Ok(());
    }
    let is_line_limit = |d: &Decoded| {
        matches!(
            d.error,
            Some(
                ProtocolError::TooBigInlineRequest
                    | ProtocolError::TooBigMultibulkCount
                    | ProtocolError::TooBigBulkCount
            )
        )
    };
    if !is_line_limit(split) {
        return Err("outcome depends on read boundaries");
    }
    let n = split.commands.len();
    if whole.commands.get(..n) != Some(split.commands.as_slice()) {
        return Err("commands before the line-limit error differ");
    }
    Ok(())
}

/// Limits small enough for generated input to hit every limit check.
fn tiny_limits() -> RequestLimits {
    RequestLimits {
        max_bulk_len: 16,
        max_array_len: 4,
        max_query_buffer: 64,
        max_inline_len: 16,
    }
}

// ---------------------------------------------------------------------------------------------
// Reply generators and scanner drivers
// ---------------------------------------------------------------------------------------------

fn line(marker: u8, text: &[u8]) -> Vec<u8> {
    let mut out = vec![marker];
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
    out
}

fn blob(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}{}\r\n", char::from(marker), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

fn aggregate(marker: u8, count: usize, children: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = format!("{}{count}\r\n", char::from(marker)).into_bytes();
    for child in children {
        out.extend_from_slice(&child);
    }
    out
}

/// Text of a simple string or error: anything but CR and LF.
fn line_text() -> impl Strategy<Value = Vec<u8>> {
    vec(
        byte_biased(SPECIAL_REPLY_BYTES)
            .prop_map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        0..32,
    )
}

fn reply_payload() -> impl Strategy<Value = Vec<u8>> {
    vec(byte_biased(SPECIAL_REPLY_BYTES), 0..64)
}

const BOOLEANS: &[&[u8]] = &[b"#t\r\n", b"#f\r\n"];

/// Every non-aggregate RESP2/RESP3 reply type.
fn scalar_reply() -> impl Strategy<Value = Vec<u8>> {
    let double = prop_oneof![
        select(&["1.5", "0", "-0.25", "inf", "-inf", "nan", "1e300"][..]).prop_map(String::from),
        any::<f64>().prop_map(|f| f.to_string()),
    ];
    prop_oneof![
        line_text().prop_map(|t| line(b'+', &t)),
        line_text().prop_map(|t| line(b'-', &[b"ERR ".as_slice(), &t].concat())),
        any::<i64>().prop_map(|n| line(b':', n.to_string().as_bytes())),
        reply_payload().prop_map(|p| blob(b'$', &p)),
        Just(b"$-1\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
        select(BOOLEANS).prop_map(<[u8]>::to_vec),
        double.prop_map(|d| line(b',', d.as_bytes())),
        "-?[1-9][0-9]{0,40}".prop_map(|n| line(b'(', n.as_bytes())),
        (select(&["txt", "mkd"][..]), reply_payload())
            .prop_map(|(format, p)| { blob(b'=', &[format.as_bytes(), b":", &p].concat()) }),
        reply_payload().prop_map(|p| blob(b'!', &p)),
    ]
}

/// A whole reply, aggregates nested up to 4 levels deep.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    scalar_reply().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(|v| aggregate(b'*', v.len(), v)),
            vec(inner.clone(), 0..5).prop_map(|v| aggregate(b'~', v.len(), v)),
            vec(inner.clone(), 0..4).prop_map(|v| aggregate(b'>', v.len(), v)),
            vec((inner.clone(), inner.clone()), 0..4).prop_map(|pairs| {
                let n = pairs.len();
                aggregate(b'%', n, pairs.into_iter().flat_map(|(k, v)| [k, v]))
            }),
            // An attribute followed by the value it annotates: one reply.
            (vec((inner.clone(), inner.clone()), 1..3), inner.clone()).prop_map(
                |(pairs, value)| {
                    let n = pairs.len();
                    let mut out = aggregate(b'|', n, pairs.into_iter().flat_map(|(k, v)| [k, v]));
                    out.extend_from_slice(&value);
                    out
                }
            ),
        ]
    })
}

fn replies() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(reply(), 1..10)
}

/// What feeding some bytes to a fresh scanner produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scanned {
    /// Lengths of the complete replies found, in order.
    replies: Vec<usize>,
    error: Option<ProtocolError>,
}

/// Feeds `chunks` to one scanner the way a backend connection does: append a read, scan, split
/// off each complete reply, and resume with the same scanner on the grown buffer.
///
/// Every reply is at least three bytes, so more calls than `bytes + reads + 1` means a spin.
fn scan_fed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Scanned {
    let chunks: Vec<&[u8]> = chunks.into_iter().collect();
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    let mut budget = total + chunks.len() + 1;
    let mut scanner = ReplyScanner::default();
    let mut buf = BytesMut::new();
    let mut replies = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            assert!(budget > 0, "scanner made too many calls without progress");
            budget -= 1;
            match scanner.scan(&buf) {
                Ok(Some(len)) => {
                    assert!(
                        (3..=buf.len()).contains(&len),
                        "reply length {len} with {} bytes buffered",
                        buf.len()
                    );
                    replies.push(len);
                    buf.advance(len);
                }
                Ok(None) => break,
                Err(err) => {
                    return Scanned {
                        replies,
                        error: Some(err),
                    };
                }
            }
        }
    }
    Scanned {
        replies,
        error: None,
    }
}

/// Scans `input` held in one buffer, without splitting: each reply is found by scanning the
/// slice after the previous one with a fresh call.
fn scan_in_place(input: &[u8]) -> Scanned {
    let mut scanner = ReplyScanner::default();
    let mut replies = Vec::new();
    let mut offset = 0;
    for _ in 0..=input.len() {
        let rest = &input[offset..];
        match scanner.scan(rest) {
            Ok(Some(len)) => {
                assert!((3..=rest.len()).contains(&len));
                replies.push(len);
                offset += len;
            }
            Ok(None) => {
                return Scanned {
                    replies,
                    error: None,
                }
            }
            Err(err) => {
                return Scanned {
                    replies,
                    error: Some(err),
                }
            }
        }
    }
    panic!("scanner made too many calls without progress");
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(VALID_CASES))]

    /// A valid pipeline decodes to the same commands however it is split into reads, and each
    /// command's raw bytes are its canonical encoding.
    #[test]
    fn valid_pipeline_decodes_the_same_however_split(
        requests in pipeline(),
        split in any::<Index>(),
        sizes in chunk_sizes(),
    ) {
        let input = encode_pipeline(&requests);
        let limits = RequestLimits::default();
        let expected: Vec<Vec<Vec<u8>>> =
            requests.iter().filter_map(Request::expected_args).collect();

        let whole = decode_at_once(&input, &limits);
        prop_assert_eq!(&whole.error, &None);
        prop_assert_eq!(whole.consumed, input.len());
        prop_assert_eq!(whole.args(), expected.clone());
        for (cmd, args) in whole.commands.iter().zip(&expected) {
            let canonical = Command::from_args(args);
            prop_assert_eq!(cmd.raw(), canonical.raw());
            prop_assert_eq!(cmd.argc(), args.len());
            for (i, arg) in args.iter().enumerate() {
                prop_assert_eq!(cmd.arg(i), Some(arg.as_slice()));
            }
            prop_assert_eq!(cmd.arg(args.len()), None);
        }
        // Each multibulk request is forwarded exactly as the client sent it.
        let sent: Vec<Vec<u8>> = requests
            .iter()
            .filter(|r| matches!(r, Request::Multibulk(_)))
            .map(Request::encode)
            .collect();
        let forwarded: Vec<Vec<u8>> = requests
            .iter()
            .filter(|r| r.expected_args().is_some())
            .zip(&whole.commands)
            .filter(|(r, _)| matches!(r, Request::Multibulk(_)))
            .map(|(_, c)| c.raw().to_vec())
            .collect();
        prop_assert_eq!(forwarded, sent);

        let at = split.index(input.len() + 1);
        prop_assert_eq!(&decode_split(&input, at, &limits), &whole, "split at {}", at);
        prop_assert_eq!(&decode_fed(chunked(&input, &sizes), &limits), &whole);
        prop_assert_eq!(&decode_bytewise(&input, &limits), &whole);
    }

    /// Concatenated valid replies are framed at exactly their boundaries, whether scanned in
    /// place or arriving in reads of any size.
    #[test]
    fn valid_replies_are_framed_exactly(
        replies in replies(),
        sizes in chunk_sizes(),
    ) {
        let input: Vec<u8> = replies.concat();
        let lens: Vec<usize> = replies.iter().map(Vec::len).collect();
        let expected = Scanned { replies: lens, error: None };

        prop_assert_eq!(&scan_in_place(&input), &expected);
        prop_assert_eq!(&scan_fed([input.as_slice()]), &expected);
        prop_assert_eq!(&scan_fed(chunked(&input, &sizes)), &expected);
        prop_assert_eq!(&scan_fed(input.chunks(1)), &expected);

        // Any strict prefix of the first reply is incomplete, never an error or a reply.
        let first = replies[0].len();
        for cut in 0..first {
            let mut scanner = ReplyScanner::default();
            prop_assert_eq!(scanner.scan(&input[..cut]), Ok(None), "prefix of {} bytes", cut);
        }
    }
}

proptest! {
    #![proptest_config(config(RANDOM_CASES))]

    /// Arbitrary bytes never panic or hang the decoder, and the outcome does not depend on how
    /// the bytes were split into reads.
    #[test]
    fn random_bytes_never_break_the_decoder(
        input in vec(byte_biased(SPECIAL_REQUEST_BYTES), 0..512),
        sizes in chunk_sizes(),
    ) {
        let (whole, chunks, bytewise) = within_deadline(move || {
            let limits = RequestLimits::default();
            (
                decode_at_once(&input, &limits),
                decode_fed(chunked(&input, &sizes), &limits),
                decode_bytewise(&input, &limits),
            )
        });
        prop_assert_eq!(&chunks, &whole);
        prop_assert_eq!(&bytewise, &whole);
    }

    /// A valid pipeline with a few bytes replaced, inserted, deleted or cut off never panics or
    /// hangs the decoder, with default or tiny limits, and split-independence still holds.
    #[test]
    fn corrupted_pipelines_never_break_the_decoder(
        requests in vec(request(), 1..6),
        edits in mutations(SPECIAL_REQUEST_BYTES),
        sizes in chunk_sizes(),
    ) {
        let input = mutate(encode_pipeline(&requests), &edits);
        let (results, tiny) = within_deadline(move || {
            let limits = RequestLimits::default();
            let results = (
                decode_at_once(&input, &limits),
                decode_fed(chunked(&input, &sizes), &limits),
                decode_bytewise(&input, &limits),
            );
            let small = tiny_limits();
            let tiny = (
                decode_at_once(&input, &small),
                decode_fed(chunked(&input, &sizes), &small),
                decode_bytewise(&input, &small),
            );
            (results, tiny)
        });
        let (whole, chunks, bytewise) = results;
        prop_assert_eq!(&chunks, &whole);
        prop_assert_eq!(&bytewise, &whole);
        let (twhole, tchunks, tbytewise) = tiny;
        for split in [&tchunks, &tbytewise] {
            if let Err(why) = same_up_to_line_limit(split, &twhole) {
                prop_assert!(false, "{}: {:?} vs {:?}", why, split, twhole);
            }
        }
    }

    /// Arbitrary bytes never panic or hang the scanner, and the outcome does not depend on how
    /// the bytes were split into reads.
    #[test]
    fn random_bytes_never_break_the_scanner(
        input in vec(byte_biased(SPECIAL_REPLY_BYTES), 0..512),
        sizes in chunk_sizes(),
    ) {
        let (in_place, whole, chunks, bytewise) = within_deadline(move || {
            (
                scan_in_place(&input),
                scan_fed([input.as_slice()]),
                scan_fed(chunked(&input, &sizes)),
                scan_fed(input.chunks(1)),
            )
        });
        prop_assert_eq!(&in_place, &whole);
        prop_assert_eq!(&chunks, &whole);
        prop_assert_eq!(&bytewise, &whole);
    }

    /// Valid replies with a few bytes corrupted never panic or hang the scanner, and
    /// split-independence still holds.
    #[test]
    fn corrupted_replies_never_break_the_scanner(
        replies in vec(reply(), 1..4),
        edits in mutations(SPECIAL_REPLY_BYTES),
        sizes in chunk_sizes(),
    ) {
        let input = mutate(replies.concat(), &edits);
        let (in_place, whole, chunks, bytewise) = within_deadline(move || {
            (
                scan_in_place(&input),
                scan_fed([input.as_slice()]),
                scan_fed(chunked(&input, &sizes)),
                scan_fed(input.chunks(1)),
            )
        });
        prop_assert_eq!(&in_place, &whole);
        prop_assert_eq!(&chunks, &whole);
        prop_assert_eq!(&bytewise, &whole);
    }
}
