//! When a client's ready replies are written: at once, or held for the rest of their batch.
//!
//! A batch is what one read of the client's socket brought: commands the client sent together,
//! a pipeline. Its commands go to different nodes, which answer at different times, and
//! writing each ready prefix as it comes cost 1.7 sends per 16-command pipeline over three
//! nodes (against one when the batch goes out whole; each send to a client costs the proxy the
//! client's side of the TCP receive too). Redis itself answers a read's commands in one write.
//!
//! The first replies of a batch are therefore held while the reply owed next is a request of
//! the same batch still at its node, which answers within a round trip. They are never held
//! for a command that may wait without bound (a blocking command, WAIT), for a command carried
//! out in steps, or for another batch: replies of a batch the client sent earlier go out as
//! soon as that batch is complete, whatever came after it. So a reply waits at most for the
//! slowest request the client sent with it.

/// Replies held for the rest of their batch go out anyway once they reach this much: a large
/// read of small commands (thousands of GETs) is answered in several sends of this size rather
/// than held whole.
pub const HOLD_LIMIT: usize = 16 * 1024;

/// How much may be held under a `client_output_buffer_limit` of `output_limit` bytes (0: no
/// limit): a quarter of it at most, so replies held for a client that reads them never bring
/// it near the limit that closes a client that does not.
pub fn hold_limit(output_limit: usize) -> usize {
    if output_limit == 0 {
        HOLD_LIMIT
    } else {
        HOLD_LIMIT.min(output_limit / 4)
    }
}

/// The reply owed next, after the ones in the output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Nothing more is owed.
    Nothing,
    /// A request at its node, waiting only for the node's reply.
    Request,
    /// Anything else: a command carried out in steps (a split, a retry after a redirect), one
    /// that may block (BLPOP, WAIT), or a reply ready but not yet moved out.
    Other,
}

/// Whether the `held` bytes of ready replies in the output buffer are written now, at most
/// `limit` of them being held ([`hold_limit`]). `batch_ended`: they include the last reply of a
/// batch (the replies after it, if any, belong to a later batch, which does not hold an earlier
/// one back). `head` tells what is owed next; it is asked only when the rest does not decide.
pub fn sends_now(
    held: usize,
    limit: usize,
    batch_ended: bool,
    head: impl FnOnce() -> Head,
) -> bool {
    batch_ended || held >= limit || head() != Head::Request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_written_whole_unless_it_must_not_wait() {
        use Head::*;
        let table = [
            // (bytes held, a batch ended in them, the reply owed next) -> written now
            ((75, false, Request), false), // a pipeline's first replies, the rest at its nodes
            ((75, true, Request), true),   // a whole batch; the next one is another batch
            ((75, false, Nothing), true),  // everything owed is in the buffer
            ((75, true, Nothing), true),
            ((75, false, Other), true), // a blocking command or a retry is next: no waiting on it
            ((HOLD_LIMIT - 1, false, Request), false),
            ((HOLD_LIMIT, false, Request), true), // enough for one send
            ((0, false, Request), false),
        ];
        for ((held, batch_ended, head), want) in table {
            assert_eq!(
                sends_now(held, HOLD_LIMIT, batch_ended, || head),
                want,
                "held={held} batch_ended={batch_ended} head={head:?}"
            );
        }
    }

    #[test]
    fn what_is_held_stays_far_below_the_output_limit() {
        let table = [
            // client_output_buffer_limit -> most held
            (0, HOLD_LIMIT), // no limit
            (64 * 1024 * 1024, HOLD_LIMIT),
            (4 * HOLD_LIMIT, HOLD_LIMIT),
            (4 * HOLD_LIMIT - 4, HOLD_LIMIT - 1),
            (1024, 256),
            (3, 0), // nothing held: every reply goes out at once
        ];
        for (output_limit, want) in table {
            assert_eq!(
                hold_limit(output_limit),
                want,
                "output_limit={output_limit}"
            );
        }
    }
}
