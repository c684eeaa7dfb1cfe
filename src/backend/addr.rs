//! The address of a node as the proxy dials it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A node address as the proxy dials it: `host:port` (IPv6 hosts in brackets). Cheap to clone
/// (shared), compared and hashed as its text, so it keys the per-node pools.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(Arc<str>);

impl NodeAddr {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without the port and without IPv6 brackets.
    pub fn host(&self) -> &str {
        host_of(&self.0)
    }

    /// Whether both are clones of one address value (a pointer comparison): equal then, but
    /// equal addresses made apart (by two topology refreshes) are not the same value.
    pub fn same_value(&self, other: &NodeAddr) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The host part of `host:port`, without IPv6 brackets.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl From<&str> for NodeAddr {
    fn from(addr: &str) -> NodeAddr {
        NodeAddr(Arc::from(addr))
    }
}

impl From<String> for NodeAddr {
    fn from(addr: String) -> NodeAddr {
        NodeAddr(Arc::from(addr))
    }
}

impl Deref for NodeAddr {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeAddr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeAddr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for NodeAddr {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for NodeAddr {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for (addr, host) in [
            ("127.0.0.1:7000", "127.0.0.1"),
            ("[::1]:7000", "::1"),
            ("cache.example:6379", "cache.example"),
            ("nohost", "nohost"),
        ] {
            assert_eq!(NodeAddr::from(addr).host(), host, "{addr}");
        }
    }
}
