//! Recognising the cluster's redirect and retry errors in a raw reply.

use super::Slot;

/// What a backend error reply asks the proxy to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect<'a> {
    /// The slot has a new owner for good.
    Moved { slot: Slot, addr: &'a str },
    /// Send this one request to `addr`, preceded by `ASKING`.
    Ask { slot: Slot, addr: &'a str },
    /// Multi-key request during a slot migration: retry shortly.
    TryAgain,
    /// The cluster (or the slot) is down right now: refresh, retry shortly.
    ClusterDown,
    /// The node is loading its data set: retry shortly.
    Loading,
}

/// Classifies a raw reply; `None` for replies the client should get as they are.
pub fn classify(reply: &[u8]) -> Option<Redirect<'_>> {
    let body = reply.strip_prefix(b"-")?;
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    if let Some(rest) = body.strip_prefix(b"MOVED ") {
        let (slot, addr) = slot_and_addr(rest)?;
        return Some(Redirect::Moved { slot, addr });
    }
    if let Some(rest) = body.strip_prefix(b"ASK ") {
        let (slot, addr) = slot_and_addr(rest)?;
        return Some(Redirect::Ask { slot, addr });
    }
    if body.starts_with(b"TRYAGAIN") {
        return Some(Redirect::TryAgain);
    }
    if body.starts_with(b"CLUSTERDOWN") {
        return Some(Redirect::ClusterDown);
    }
    if body.starts_with(b"LOADING") {
        return Some(Redirect::Loading);
    }
    None
}

fn slot_and_addr(rest: &[u8]) -> Option<(Slot, &str)> {
    let text = std::str::from_utf8(rest).ok()?;
    let (slot, addr) = text.split_once(' ')?;
    let slot = Slot::new(slot.parse().ok()?)?;
    let addr = addr.trim();
    if addr.is_empty() || !addr.contains(':') {
        return None;
    }
    Some((slot, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redirects() {
        assert_eq!(
            classify(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: Slot::new(3999).unwrap(),
                addr: "127.0.0.1:6381"
            })
        );
        assert_eq!(
            classify(b"-ASK 1 [::1]:7000\r\n"),
            Some(Redirect::Ask {
                slot: Slot::new(1).unwrap(),
                addr: "[::1]:7000"
            })
        );
        assert_eq!(
            classify(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(
            classify(b"-CLUSTERDOWN Hash slot not served\r\n"),
            Some(Redirect::ClusterDown)
        );
        assert_eq!(classify(b"-ERR wrong\r\n"), None);
        assert_eq!(classify(b"+OK\r\n"), None);
        assert_eq!(classify(b"-MOVED 99999 h:1\r\n"), None);
        assert_eq!(classify(b"-MOVED x\r\n"), None);
    }
}
