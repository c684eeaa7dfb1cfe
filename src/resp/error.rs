//! Protocol errors for both directions of the wire: malformed client requests and malformed
//! backend replies. Client-facing texts copy Redis's own wording so clients and operators see
//! exactly what a single Redis server would have said; the session prefixes them with `-ERR `.

use std::fmt;

/// A byte that broke the grammar, shown the way Redis's `%c` would show it where that is safe.
///
/// Redis prints the raw byte; we cannot put CR/LF or non-UTF-8 into an error line, so those are
/// shown as a space (what Redis's error sanitiser does for CR/LF) or as `\xHH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffendingByte(pub u8);

impl fmt::Display for OffendingByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b'\r' | b'\n' => f.write_str(" "),
            b if b.is_ascii_graphic() || b == b' ' => write!(f, "{}", char::from(b)),
            b => write!(f, "\\x{b:02x}"),
        }
    }
}

/// Malformed or over-limit RESP. Any of these ends the connection that produced it: after a
/// framing error we no longer know where the next request or reply starts.
///
/// The `Display` text of the request-side variants is exactly Redis 7's reply text without the
/// leading `-ERR `, so the caller writes `-ERR {err}\r\n`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` header that is not an integer, or longer than the array limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` header that is not a non-negative integer, or longer than the bulk limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a request array did not start with `$`.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(OffendingByte),
    /// A bulk payload was not followed by CRLF. Redis silently skips two bytes here; we refuse,
    /// because the request bytes are forwarded verbatim and must be well-formed.
    #[error("Protocol error: expected CRLF after bulk payload")]
    BulkNotTerminated,
    /// An array header line grew past the inline limit without a CRLF.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A bulk header line grew past the inline limit without a CRLF.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline request line longer than the inline limit.
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// An inline request with an unterminated quote, or a closing quote glued to more text.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// One request whose total size exceeds the query buffer limit.
    #[error("Protocol error: query buffer limit exceeded")]
    QueryBufferLimitExceeded,
    /// A backend reply started with a byte that is not a RESP2/RESP3 type marker.
    #[error("Protocol error: unexpected reply type byte '{0}'")]
    UnexpectedReplyByte(OffendingByte),
    /// A length in a backend reply header was not a valid integer (or not allowed there).
    #[error("Protocol error: invalid length in reply header")]
    InvalidReplyLength,
    /// A backend reply line was not terminated by CRLF where one was required.
    #[error("Protocol error: reply line not terminated by CRLF")]
    ReplyNotTerminated,
    /// A backend reply value that could not be decoded (bad integer, double or boolean).
    #[error("Protocol error: invalid {0} in reply")]
    InvalidReplyValue(&'static str),
    /// A backend reply nested deeper than the value parser allows.
    #[error("Protocol error: reply nesting deeper than {0} levels")]
    NestingTooDeep(usize),
}
