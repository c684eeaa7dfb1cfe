//! What can go wrong between the proxy and a node, and whether a retry is safe.

/// A failed round trip to a node. A Redis error *reply* is not one of these: it is a successful
/// round trip and is forwarded as it is.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to node {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("node {addr} is unreachable ({reason})")]
    Unreachable { addr: String, reason: String },
    #[error("authentication to node {addr} failed: {reason}")]
    Auth { addr: String, reason: String },
    #[error("connection to node {addr} closed before the command was sent")]
    NotSent { addr: String },
    #[error(
        "connection to node {addr} was lost after the command was sent; it may or may not have run"
    )]
    Lost { addr: String },
    #[error("node {addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("node {addr} sent a malformed reply: {reason}")]
    Protocol { addr: String, reason: String },
}

impl BackendError {
    /// A reply channel closed without a reply: its connection task ended with the request
    /// in it, so the node may have run it.
    pub fn closed() -> BackendError {
        BackendError::Lost {
            addr: String::from("(connection closed)"),
        }
    }

    /// True when the node certainly did not receive the command, so resending cannot run it twice.
    pub fn certainly_not_sent(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Unreachable { .. }
                | Self::Auth { .. }
                | Self::NotSent { .. }
        )
    }

    /// True when the node could not be reached at all (refused, unreachable, its connection
    /// closed before the request went out): the node or its replacement may answer soon.
    /// Not an authentication refusal, which waiting does not cure.
    pub fn node_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Unreachable { .. } | Self::NotSent { .. }
        )
    }

    /// The node it concerns, as the error names it (empty when unknown).
    pub fn addr(&self) -> &str {
        match self {
            Self::Connect { addr, .. }
            | Self::Unreachable { addr, .. }
            | Self::Auth { addr, .. }
            | Self::NotSent { addr }
            | Self::Lost { addr }
            | Self::Timeout { addr, .. }
            | Self::Protocol { addr, .. } => addr,
        }
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Unreachable { .. } => "unreachable",
            Self::Auth { .. } => "auth",
            Self::NotSent { .. } => "not_sent",
            Self::Lost { .. } => "lost",
            Self::Timeout { .. } => "timeout",
            Self::Protocol { .. } => "protocol",
        }
    }
}
