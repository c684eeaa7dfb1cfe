//! A minimal RESP2/RESP3 client over a raw TCP socket, for byte-exact checks (error texts, inline
//! commands, malformed input) that the `redis` crate would hide or refuse to send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One reply, exactly as received (the RESP3 types after `HELLO 3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    /// RESP3 `_`.
    Null,
    /// RESP3 `%`: key/value pairs in the order sent.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`.
    Set(Vec<Reply>),
    /// RESP3 `>`: out-of-band data such as Pub/Sub messages.
    Push(Vec<Reply>),
    /// RESP3 `,`, as its text.
    Double(String),
    /// RESP3 `#`.
    Bool(bool),
    /// RESP3 `=`: the format (e.g. `txt`) and the text.
    Verbatim(String, Vec<u8>),
}

impl Reply {
    /// The error text, panicking if this is not an error reply.
    pub fn error(&self) -> &str {
        match self {
            Reply::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// The bulk string as UTF-8, panicking on anything else (nil included).
    pub fn text(&self) -> String {
        match self {
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Reply::Simple(s) => s.clone(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }
}

/// A raw connection to a RESP server.
pub struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RawClient {
    /// Connects with read/write timeouts of [`super::IO_TIMEOUT`].
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(super::IO_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(super::IO_TIMEOUT))
            .expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        let writer = stream.try_clone().expect("clone stream");
        RawClient {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Changes the read timeout (e.g. short, to poll for a message that may not come).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    /// The bytes received but not yet read as replies: what arrived together with the last
    /// reply read (or after it, up to the buffer's size).
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to server");
    }

    /// Shuts the sending side (half-close): the server sees the end of input and still owes
    /// the replies to what was sent.
    pub fn shutdown_write(&mut self) {
        self.writer
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the sending side");
    }

    /// Sends one command encoded as a RESP array of bulk strings.
    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&encode(args));
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read_reply()
    }

    /// Reads one reply; panics on EOF, timeout or malformed data.
    pub fn read_reply(&mut self) -> Reply {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// Reads one reply, or says why none could be read (EOF, timeout, bad syntax).
    pub fn try_read_reply(&mut self) -> Result<Reply, String> {
        let line = self.read_line()?;
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => rest
                .parse()
                .map(Reply::Int)
                .map_err(|e| format!("bad integer {rest:?}: {e}")),
            "$" | "=" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|e| format!("bad length {rest:?}: {e}"))?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0; len as usize + 2];
                self.reader
                    .read_exact(&mut buf)
                    .map_err(|e| format!("reading a bulk string: {e}"))?;
                buf.truncate(len as usize);
                if kind == "=" {
                    let text = buf.split_off(4.min(buf.len()));
                    let format = String::from_utf8_lossy(&buf)
                        .trim_end_matches(':')
                        .to_string();
                    return Ok(Reply::Verbatim(format, text));
                }
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" | "~" | ">" => {
                let len: i64 = rest
                    .parse()
                    .map_err(|e| format!("bad length {rest:?}: {e}"))?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                let items: Vec<Reply> = (0..len)
                    .map(|_| self.try_read_reply())
                    .collect::<Result<_, _>>()?;
                Ok(match kind {
                    "~" => Reply::Set(items),
                    ">" => Reply::Push(items),
                    _ => Reply::Array(Some(items)),
                })
            }
            "%" => {
                let len: usize = rest
                    .parse()
                    .map_err(|e| format!("bad length {rest:?}: {e}"))?;
                let mut pairs = Vec::with_capacity(len);
                for _ in 0..len {
                    let key = self.try_read_reply()?;
                    pairs.push((key, self.try_read_reply()?));
                }
                Ok(Reply::Map(pairs))
            }
            "_" => Ok(Reply::Null),
            "," => Ok(Reply::Double(rest.to_string())),
            "#" => Ok(Reply::Bool(rest == "t")),
            _ => Err(format!("unexpected reply line {line:?}")),
        }
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        if !line.ends_with("\r\n") || line.len() < 3 {
            return Err(format!("reply line without CRLF: {line:?}"));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// Whether the server closed the connection: a read returns EOF (or a reset) within the
    /// read timeout. Any data instead is a failure.
    pub fn is_closed_by_server(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 64];
        match self.reader.read(&mut buf) {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!(
                "expected the connection to be closed, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(format!("expected the connection to be closed: {e}")),
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}
