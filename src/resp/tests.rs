//! Codec tests: every frame split at every byte, malformed and over-limit input, round trips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::{Bytes, BytesMut};

use super::*;

fn args_of(cmd: &Command) -> Vec<Vec<u8>> {
    cmd.args().map(<[u8]>::to_vec).collect()
}

fn strs(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Decodes everything in `input` fed in one go.
fn decode_all(input: &[u8], limits: RequestLimits) -> Result<Vec<Command>, ProtocolError> {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(cmd) = decoder.decode(&mut buf)? {
        out.push(cmd);
    }
    Ok(out)
}

/// Decodes `input` fed one byte at a time.
fn decode_bytewise(input: &[u8]) -> Result<Vec<Command>, ProtocolError> {
    let mut decoder = RequestDecoder::new(RequestLimits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for &b in input {
        buf.extend_from_slice(&[b]);
        while let Some(cmd) = decoder.decode(&mut buf)? {
            out.push(cmd);
        }
    }
    Ok(out)
}

const PIPELINE: &[u8] = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*0\r\n*-1\r\n\r\n\n  \r\n\
*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$0\r\n\r\n$3\r\nc\r\n\r\n\
PING\r\nset \"a b\" 'c\\'d' \"\\x41\\n\"\n*1\r\n$4\r\nPING\r\n";

fn pipeline_expected() -> Vec<Vec<Vec<u8>>> {
    vec![
        strs(&["GET", "a"]),
        strs(&["MGET", "a", "", "c\r\n"]),
        strs(&["PING"]),
        strs(&["set", "a b", "c'd", "A\n"]),
        strs(&["PING"]),
    ]
}

#[test]
fn pipelined_commands_decode_in_order() {
    let cmds = decode_all(PIPELINE, RequestLimits::default()).unwrap();
    let got: Vec<_> = cmds.iter().map(args_of).collect();
    assert_eq!(got, pipeline_expected());
    // Multibulk requests are forwarded byte for byte.
    assert_eq!(cmds[0].raw().as_ref(), b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n");
    // Inline requests are re-encoded as RESP arrays.
    assert_eq!(cmds[2].raw().as_ref(), b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(cmds[0].name(), b"GET");
    assert_eq!(cmds[1].argc(), 4);
    assert_eq!(cmds[1].arg(3), Some(&b"c\r\n"[..]));
    assert_eq!(cmds[1].arg(4), None);
    assert_eq!(cmds[1].arg_bytes(1), Some(Bytes::from_static(b"a")));
}

#[test]
fn every_split_point_gives_the_same_commands() {
    let expected = pipeline_expected();
    let bytewise: Vec<_> = decode_bytewise(PIPELINE)
        .unwrap()
        .iter()
        .map(args_of)
        .collect();
    assert_eq!(bytewise, expected);
    for split in 0..=PIPELINE.len() {
        let mut decoder = RequestDecoder::new(RequestLimits::default());
        let mut buf = BytesMut::from(&PIPELINE[..split]);
        let mut got = Vec::new();
        while let Some(cmd) = decoder.decode(&mut buf).unwrap() {
            got.push(args_of(&cmd));
        }
        buf.extend_from_slice(&PIPELINE[split..]);
        while let Some(cmd) = decoder.decode(&mut buf).unwrap() {
            got.push(args_of(&cmd));
        }
        assert_eq!(got, expected, "split at {split}");
        assert!(buf.is_empty());
    }
}

#[test]
fn incomplete_input_leaves_the_request_in_the_buffer() {
    let mut decoder = RequestDecoder::new(RequestLimits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\n"[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 17);
    buf.extend_from_slice(b"k\r\n");
    let cmd = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(args_of(&cmd), strs(&["GET", "k"]));
    assert!(buf.is_empty());
}

#[test]
fn payloads_are_not_copied() {
    let mut decoder = RequestDecoder::new(RequestLimits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$5\r\nhello\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let cmd = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(cmd.raw().as_ptr() as usize, base);
    assert_eq!(cmd.arg_bytes(1).unwrap().as_ptr() as usize, base + 17);
}

#[test]
fn large_bulk_in_small_reads_is_linear() {
    // 8 MiB in 1 KiB reads: each call while the payload is incomplete is one comparison.
    let payload = vec![b'x'; 8 * 1024 * 1024];
    let mut input = format!("*2\r\n$3\r\nSET\r\n${}\r\n", payload.len()).into_bytes();
    input.extend_from_slice(&payload);
    input.extend_from_slice(b"\r\n");
    let mut decoder = RequestDecoder::new(RequestLimits::default());
    let mut buf = BytesMut::new();
    let mut got = None;
    for chunk in input.chunks(1024) {
        buf.extend_from_slice(chunk);
        if let Some(cmd) = decoder.decode(&mut buf).unwrap() {
            got = Some(cmd);
        }
    }
    let cmd = got.unwrap();
    assert_eq!(cmd.arg(1).unwrap().len(), payload.len());
}

#[test]
fn inline_quoting_follows_sdssplitargs() {
    let cases: &[(&[u8], &[&str])] = &[
        (b"get  a\tb\r\n", &["get", "a", "b"]),
        (
            b"set k \"\\x41\\x4a\\n\\r\\t\\\\\\\"\"\n",
            &["set", "k", "AJ\n\r\t\\\""],
        ),
        (b"echo \"\\xZZ\"\n", &["echo", "xZZ"]),
        (b"echo 'it\\'s' \"\"\n", &["echo", "it's", ""]),
        (b"echo a\"b c\"\n", &["echo", "ab c"]),
        (b"echo \"\\a\\b\"\n", &["echo", "\x07\x08"]),
    ];
    for (input, expected) in cases {
        let cmds = decode_all(input, RequestLimits::default()).unwrap();
        assert_eq!(cmds.len(), 1, "{input:?}");
        assert_eq!(args_of(&cmds[0]), strs(expected), "{input:?}");
    }
}

#[test]
fn protocol_errors_use_redis_wording() {
    let cases: &[(&[u8], &str)] = &[
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*03\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\rx", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n:4\r\n", "Protocol error: expected '$', got ':'"),
        (
            b"*1\r\n$4\r\nPINGxx",
            "Protocol error: expected CRLF after bulk payload",
        ),
        (
            b"set \"a\"b\n",
            "Protocol error: unbalanced quotes in request",
        ),
        (
            b"set \"ab\n",
            "Protocol error: unbalanced quotes in request",
        ),
        (b"set 'ab\n", "Protocol error: unbalanced quotes in request"),
        (
            b"set 'a'b\n",
            "Protocol error: unbalanced quotes in request",
        ),
    ];
    for (input, message) in cases {
        let err = decode_all(input, RequestLimits::default()).unwrap_err();
        assert_eq!(err.to_string(), *message, "{input:?}");
    }
}

/// A request that arrives whole takes the one-pass parse; one that trickles in, the resumable
/// one. Both must give the same commands and the same errors for anything a client may send.
#[test]
fn whole_and_trickled_requests_decode_alike() {
    let inputs: &[&[u8]] = &[
        b"*1\r\n$0\r\n\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n",
        b"*0\r\n*1\r\n$4\r\nPING\r\n",
        b"*-1\r\n*1\r\n$4\r\nPING\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*+1\r\n$4\r\nPING\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"*1\r\n$+4\r\nPING\r\n",
        b"*1\r\n$-0\r\n\r\n",
        b"*1\r\n$\r\n\r\n",
        b"*\r\n",
        b"*1\r\n$4\r\nPINGxx",
        b"*1\r\n$4\r\nPING\r\r",
        b"*1\r\n$4\rxPING\r\n",
        b"*1\rx$4\r\nPING\r\n",
        b"*1\r\n:4\r\n",
        b"*2\r\n$4\r\nPING\r\n",
        b"*1\r\n$999999999999999999\r\n",
        b"*1\r\n$9999999999999999999999\r\n",
        b"*99999999999999999999\r\n",
        b"*1\r\n$4\r\nPI",
    ];
    let outcome = |decoded: Result<Vec<Command>, ProtocolError>| match decoded {
        Ok(commands) => Ok(commands.iter().map(args_of).collect::<Vec<_>>()),
        Err(error) => Err(error.to_string()),
    };
    for input in inputs {
        assert_eq!(
            outcome(decode_all(input, RequestLimits::default())),
            outcome(decode_bytewise(input)),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn limits_are_enforced_before_buffering() {
    let limits = RequestLimits {
        max_bulk_len: 10,
        max_array_len: 3,
        max_query_buffer: 40,
        max_inline_len: 16,
    };
    let err = |input: &[u8]| decode_all(input, limits.clone()).unwrap_err().to_string();
    assert_eq!(err(b"*4\r\n"), "Protocol error: invalid multibulk length");
    assert_eq!(err(b"*1\r\n$11\r\n"), "Protocol error: invalid bulk length");
    assert_eq!(
        err(b"*3\r\n$3\r\nSET\r\n$10\r\n0123456789\r\n$10\r\n"),
        "Protocol error: query buffer limit exceeded"
    );
    assert_eq!(
        err(&[b'*'; 17]),
        "Protocol error: too big mbulk count string"
    );
    assert_eq!(
        err(b"*1\r\n$11111111111111111"),
        "Protocol error: too big bulk count string"
    );
    assert_eq!(err(&[b'a'; 17]), "Protocol error: too big inline request");
    assert_eq!(
        err(b"get aaaaaaaaaaaaaaaaaa\r\n"),
        "Protocol error: too big inline request"
    );
    // At the limits everything is accepted.
    assert!(decode_all(
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n",
        limits.clone()
    )
    .is_ok());
    assert!(decode_all(b"*1\r\n$1111111111111", limits.clone())
        .unwrap()
        .is_empty());
}

#[test]
fn from_args_round_trips_through_the_decoder() {
    let cmd = Command::from_args(&[&b"MGET"[..], b"", b"a\r\nb", &[0u8, 255]]);
    let again = decode_all(cmd.raw(), RequestLimits::default()).unwrap();
    assert_eq!(again, vec![cmd.clone()]);
    assert_eq!(cmd.arg(2), Some(&b"a\r\nb"[..]));
}

#[test]
fn parse_integer_matches_string2ll() {
    assert_eq!(parse_integer(b"0"), Some(0));
    assert_eq!(parse_integer(b"-12"), Some(-12));
    assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"01",
        b"+1",
        b" 1",
        b"1 ",
        b"9223372036854775808",
        b"1a",
    ] {
        assert_eq!(parse_integer(bad), None, "{bad:?}");
    }
}

// --- reply scanner ---

const REPLIES: &[&[u8]] = &[
    b"+OK\r\n",
    b"-ERR wrong\r\n",
    b":-42\r\n",
    b"$5\r\nhello\r\n",
    b"$0\r\n\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n:1\r\n$2\r\nab\r\n*2\r\n+x\r\n*1\r\n$-1\r\n",
    b"_\r\n",
    b",3.14\r\n",
    b"#t\r\n",
    b"(12345678901234567890\r\n",
    b"!9\r\nERR oops!\r\n",
    b"=8\r\ntxt:abcd\r\n",
    b"%2\r\n+a\r\n:1\r\n+b\r\n*2\r\n:1\r\n:2\r\n",
    b"~2\r\n+a\r\n+b\r\n",
    b">3\r\n+message\r\n+ch\r\n$2\r\nhi\r\n",
    b"|1\r\n+ttl\r\n:3\r\n$3\r\nval\r\n",
    b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n",
];

#[test]
fn scanner_finds_each_reply_in_a_concatenation() {
    let all: Vec<u8> = REPLIES.concat();
    let mut scanner = ReplyScanner::default();
    let mut rest = &all[..];
    for reply in REPLIES {
        let len = scanner.scan(rest).unwrap().unwrap();
        assert_eq!(&rest[..len], *reply);
        rest = &rest[len..];
    }
    assert!(rest.is_empty());
    assert_eq!(scanner.scan(rest).unwrap(), None);
}

#[test]
fn scanner_resumes_at_every_split_point() {
    for reply in REPLIES {
        let mut padded = reply.to_vec();
        padded.extend_from_slice(b"+NEXT\r\n");
        for split in 0..reply.len() {
            let mut scanner = ReplyScanner::default();
            assert_eq!(
                scanner.scan(&padded[..split]).unwrap(),
                None,
                "{reply:?} at {split}"
            );
            assert_eq!(
                scanner.scan(&padded).unwrap(),
                Some(reply.len()),
                "{reply:?} at {split}"
            );
        }
        // Byte by byte, resuming each time.
        let mut scanner = ReplyScanner::default();
        let mut found = None;
        for end in 1..=padded.len() {
            if let Some(len) = scanner.scan(&padded[..end]).unwrap() {
                found = Some((len, end));
                break;
            }
        }
        assert_eq!(found, Some((reply.len(), reply.len())), "{reply:?}");
    }
}

#[test]
fn scanner_handles_deep_nesting_without_recursion() {
    let depth = 100_000;
    let mut reply = b"*1\r\n".repeat(depth);
    reply.extend_from_slice(b":1\r\n");
    assert_eq!(
        ReplyScanner::default().scan(&reply).unwrap(),
        Some(reply.len())
    );
}

#[test]
fn scanner_rejects_garbage() {
    let err = |input: &[u8]| ReplyScanner::default().scan(input).unwrap_err().to_string();
    assert_eq!(
        err(b"hello\r\n"),
        "Protocol error: unexpected reply type byte 'h'"
    );
    assert_eq!(
        err(b"$x\r\n"),
        "Protocol error: invalid length in reply header"
    );
    assert_eq!(
        err(b"$-2\r\n"),
        "Protocol error: invalid length in reply header"
    );
    assert_eq!(
        err(b"*?\r\n"),
        "Protocol error: invalid length in reply header"
    );
    assert_eq!(
        err(b"$1\r\nab\r\n"),
        "Protocol error: reply line not terminated by CRLF"
    );
    assert_eq!(
        err(b"+OK\rX"),
        "Protocol error: reply line not terminated by CRLF"
    );
}

#[test]
fn error_replies_are_recognised() {
    assert!(is_error_reply(b"-MOVED 1 a:1\r\n"));
    assert!(is_error_reply(b"!3\r\nERR\r\n"));
    assert!(!is_error_reply(b"+OK\r\n"));
    assert!(!is_error_reply(b""));
}

// --- values ---

#[test]
fn values_parse_every_type() {
    let parse = |input: &[u8]| {
        let (value, len) = Value::parse(input).unwrap().unwrap();
        assert_eq!(len, input.len(), "{input:?}");
        value
    };
    assert_eq!(parse(b"+OK\r\n"), Value::Simple(Bytes::from_static(b"OK")));
    assert_eq!(
        parse(b"-ERR x\r\n"),
        Value::Error(Bytes::from_static(b"ERR x"))
    );
    assert_eq!(parse(b":-7\r\n"), Value::Integer(-7));
    assert_eq!(parse(b"$-1\r\n"), Value::Nil);
    assert_eq!(parse(b"*-1\r\n"), Value::Nil);
    assert_eq!(parse(b"_\r\n"), Value::Nil);
    assert_eq!(parse(b",1.5\r\n"), Value::Double(1.5));
    assert_eq!(parse(b"#f\r\n"), Value::Boolean(false));
    assert_eq!(
        parse(b"=8\r\ntxt:abcd\r\n"),
        Value::Bulk(Bytes::from_static(b"abcd"))
    );
    assert_eq!(
        parse(b"!3\r\nERR\r\n"),
        Value::Error(Bytes::from_static(b"ERR"))
    );
    assert_eq!(
        parse(b"|1\r\n+k\r\n+v\r\n~1\r\n:1\r\n"),
        Value::Array(vec![Value::Integer(1)])
    );
    let map = parse(b"%2\r\n+id\r\n$3\r\nabc\r\n+port\r\n:7000\r\n");
    assert_eq!(map.field("port").and_then(Value::as_int), Some(7000));
    assert_eq!(map.field("ID").and_then(Value::as_str), Some("abc"));
    let flat = parse(b"*4\r\n$2\r\nid\r\n$3\r\nabc\r\n$4\r\nport\r\n$4\r\n7000\r\n");
    assert_eq!(flat.field("port").and_then(Value::as_int), Some(7000));
    assert_eq!(flat.field("missing"), None);
    assert_eq!(flat.as_array().map(<[Value]>::len), Some(4));
}

#[test]
fn values_wait_for_complete_input_and_limit_depth() {
    let input = b"*2\r\n$3\r\nabc\r\n:1\r\n";
    for split in 0..input.len() {
        assert_eq!(
            Value::parse(&input[..split]).unwrap(),
            None,
            "split {split}"
        );
    }
    let mut deep = b"*1\r\n".repeat(MAX_VALUE_DEPTH + 1);
    deep.extend_from_slice(b":1\r\n");
    assert_eq!(
        Value::parse(&deep),
        Err(ProtocolError::NestingTooDeep(MAX_VALUE_DEPTH))
    );
    let mut ok = b"*1\r\n".repeat(MAX_VALUE_DEPTH);
    ok.extend_from_slice(b":1\r\n");
    assert!(Value::parse(&ok).unwrap().is_some());
    // A huge declared length does not allocate up front.
    assert_eq!(Value::parse(b"*1000000000\r\n").unwrap(), None);
}

/// Sub-commands copy arguments as the request encoded them: every argument of every way a
/// command comes about (whole, byte by byte, inline, built) reads back as its bulk string.
#[test]
fn each_argument_reads_back_as_its_bulk_string() {
    let mut commands = decode_all(PIPELINE, RequestLimits::default()).unwrap();
    commands.extend(decode_bytewise(PIPELINE).unwrap());
    commands.push(Command::from_args(&["MSET", "k1", "v", "", "x\r\ny"]));
    for cmd in &commands {
        for i in 0..cmd.argc() {
            let mut want = BytesMut::new();
            encode::bulk(&mut want, cmd.arg(i).unwrap());
            assert_eq!(cmd.arg_encoded(i), Some(&want[..]), "{cmd:?} argument {i}");
        }
        assert_eq!(cmd.arg_encoded(cmd.argc()), None);
    }
}
