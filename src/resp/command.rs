//! [`Command`]: one client request as received, kept as its exact RESP bytes plus the offsets
//! of each argument. Arguments are views into those bytes, so a command is forwarded to a
//! backend without re-encoding and its keys are read without copying.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::encode;

/// `(start, end)` byte offsets of a command's arguments. Three fit in place (`GET key`,
/// `SET key value`, most commands a proxy sees): decoding them then allocates nothing, where a
/// `Vec` cost an allocation and a free per request (about 70 instructions at `-P 1`,
/// callgrind).
pub(crate) type ArgSpans = SmallVec<[(usize, usize); 3]>;

/// One client request: the RESP array it arrived as, and where each argument sits in it.
///
/// `raw` is always a well-formed RESP array of bulk strings (inline requests are re-encoded
/// once, when decoded), so it can be written to a backend verbatim.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    raw: Bytes,
    /// `(start, end)` byte offsets of each argument's payload in `raw`.
    args: ArgSpans,
}

impl Command {
    /// Assembles a command from bytes the decoder has validated. Offsets outside `raw` cannot
    /// panic later (accessors use checked slicing) but would hide arguments, hence the assert.
    pub(crate) fn from_parts(raw: Bytes, args: ArgSpans) -> Command {
        debug_assert!(args.iter().all(|&(s, e)| s <= e && e <= raw.len()));
        Command { raw, args }
    }

    /// Encodes `args` as a RESP array of bulk strings. Used for inline requests and for the
    /// sub-commands the proxy builds itself (for example one `MGET` per slot of a fan-out).
    ///
    /// An empty `args` gives `*0\r\n` with no name; callers always pass at least the name.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Command {
        let payload: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
        let mut out = BytesMut::with_capacity(payload + 16);
        encode::array_header(&mut out, args.len());
        let mut spans = ArgSpans::with_capacity(args.len());
        for arg in args {
            let arg = arg.as_ref();
            encode::bulk_header(&mut out, arg.len());
            let start = out.len();
            out.put_slice(arg);
            spans.push((start, out.len()));
            out.put_slice(b"\r\n");
        }
        Command::from_parts(out.freeze(), spans)
    }

    /// The exact RESP bytes of the request, to forward verbatim.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the command, returning its RESP bytes without touching the reference count.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Number of arguments, including the command name. At least 1 for decoded commands.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name as sent), or `None` past the end.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let &(start, end) = self.args.get(i)?;
        self.raw.get(start..end)
    }

    /// Argument `i` as a zero-copy slice of the request bytes.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        let &(start, end) = self.args.get(i)?;
        (start <= end && end <= self.raw.len()).then(|| self.raw.slice(start..end))
    }

    /// Argument `i` as the request encodes it (`$len\r\n` payload `\r\n`), to copy into a
    /// sub-command without encoding it again; `None` past the end. `raw` is one array of bulk
    /// strings laid end to end, so argument `i` starts where argument `i - 1` (or the array
    /// header) ends.
    pub fn arg_encoded(&self, i: usize) -> Option<&[u8]> {
        let &(_, end) = self.args.get(i)?;
        let start = match i.checked_sub(1) {
            Some(previous) => self.args.get(previous)?.1 + 2,
            None => self.raw.iter().position(|&b| b == b'\n')? + 1,
        };
        self.raw.get(start..end + 2)
    }

    /// All arguments in order, starting with the name.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.args
            .iter()
            .filter_map(move |&(start, end)| self.raw.get(start..end))
    }

    /// `argv[0]` exactly as sent (any case). Empty only for a command built from no arguments.
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }
}

/// Shows the name and argument count only: arguments carry keys and values, which must not
/// reach logs above trace level.
impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("name", &String::from_utf8_lossy(self.name()))
            .field("argc", &self.argc())
            .finish()
    }
}
