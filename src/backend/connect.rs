//! Opening an authenticated connection to a node (TCP, then TLS when the cluster speaks it,
//! then AUTH), and one-off queries for the control path.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::BackendStream;
use super::tls::BackendTls;
use super::BackendError;
use crate::config::{Secret, Upstream};
use crate::resp::{Command, Protocol, Value};

/// What every new backend connection needs to be let in: the password or ACL user sent with
/// `AUTH`, and the TLS client set-up (CA, client certificate) when the cluster speaks TLS.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Built once at start-up (`Proxy::start`); `None` = plain TCP.
    pub tls: Option<Arc<BackendTls>>,
}

impl Credentials {
    /// The user and password of the first seed that names any (the cluster has one set of
    /// credentials; the seeds are only ways in), without TLS.
    pub fn from_seeds(seeds: &[Upstream]) -> Credentials {
        seeds
            .iter()
            .find(|s| s.password.is_some() || s.username.is_some())
            .map(|s| Credentials {
                username: s.username.clone(),
                password: s.password.clone(),
                tls: None,
            })
            .unwrap_or_default()
    }
}

/// Written by hand so that a stray `{:?}` can never print the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";

/// Connects to `addr`, sets TCP_NODELAY, runs the TLS handshake when `creds` carry TLS, and
/// authenticates (then sends READONLY when asked, so a replica serves reads, and `HELLO 3` for
/// the connections of RESP3 clients, so their replies pass through raw), all within `timeout`.
pub async fn connect(
    addr: &str,
    creds: &Credentials,
    timeout: Duration,
    readonly: bool,
    protocol: Protocol,
) -> Result<BackendStream, BackendError> {
    let work = async {
        let mut stream = connect_inner(addr, creds).await?;
        if protocol == Protocol::Resp3 {
            if let Value::Error(e) = round_trip(&mut stream, addr, HELLO3).await? {
                return Err(BackendError::Protocol {
                    addr: addr.to_string(),
                    reason: format!(
                        "the node refused RESP3 (HELLO 3): {}",
                        String::from_utf8_lossy(&e)
                    ),
                });
            }
        }
        if readonly {
            // The answer does not matter: a standalone Redis refuses READONLY, and serves
            // reads anyway.
            round_trip(&mut stream, addr, b"*1\r\n$8\r\nREADONLY\r\n").await?;
        }
        Ok(stream)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Connect {
            addr: addr.to_string(),
            reason: format!("timed out after {} ms", timeout.as_millis()),
        }),
    }
}

async fn connect_inner(addr: &str, creds: &Credentials) -> Result<BackendStream, BackendError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| BackendError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let _ = tcp.set_nodelay(true);
    let mut stream = match &creds.tls {
        None => BackendStream::Plain(tcp),
        Some(tls) => tls.handshake(tcp, addr).await?,
    };
    if let Some(Secret(password)) = &creds.password {
        let auth = match &creds.username {
            Some(user) => {
                Command::from_args(&[b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()])
            }
            None => Command::from_args(&[b"AUTH".as_slice(), password.as_bytes()]),
        };
        if let Value::Error(e) = round_trip(&mut stream, addr, auth.raw()).await? {
            // The reply names no secret (Redis says WRONGPASS/NOAUTH); pass it on for the log.
            return Err(BackendError::Auth {
                addr: addr.to_string(),
                reason: String::from_utf8_lossy(&e).into_owned(),
            });
        }
    }
    Ok(stream)
}

/// Writes one request and reads one whole reply.
async fn round_trip(
    stream: &mut BackendStream,
    addr: &str,
    request: &[u8],
) -> Result<Value, BackendError> {
    // Only connection set-up (AUTH, READONLY) and one-off queries come here, so a failed
    // read or write is a failed connection: with TLS 1.3 that is also where a node refusing
    // the proxy's client certificate shows (its alert arrives after the handshake).
    let lost = |e: std::io::Error| BackendError::Connect {
        addr: addr.to_string(),
        reason: e.to_string(),
    };
    stream.write_all(request).await.map_err(lost)?;
    // TLS keeps what the socket did not take yet; plain TCP returns at once.
    stream.flush().await.map_err(lost)?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match Value::parse(&buf) {
            Ok(Some((value, _))) => return Ok(value),
            Ok(None) => {}
            Err(e) => {
                return Err(BackendError::Protocol {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(buf.len().max(16 * 1024));
        }
        if stream.read_buf(&mut buf).await.map_err(lost)? == 0 {
            return Err(BackendError::Lost {
                addr: addr.to_string(),
            });
        }
    }
}

/// Runs one command on a fresh connection (topology and command-table queries: rare, so a
/// connection of their own keeps them off the data path's pipes).
pub async fn query(
    addr: &str,
    creds: &Credentials,
    timeout: Duration,
    args: &[&[u8]],
) -> Result<Value, BackendError> {
    let request = Command::from_args(args);
    let work = async {
        let mut stream = connect_inner(addr, creds).await?;
        round_trip(&mut stream, addr, request.raw()).await
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Timeout {
            addr: addr.to_string(),
            ms: timeout.as_millis() as u64,
        }),
    }
}

/// Runs one command on a connection kept for such queries (the topology watch), within
/// `timeout`. After an error the connection is unusable (a reply may still be due).
pub async fn query_on(
    stream: &mut BackendStream,
    addr: &str,
    timeout: Duration,
    args: &[&[u8]],
) -> Result<Value, BackendError> {
    let request = Command::from_args(args);
    match tokio::time::timeout(timeout, round_trip(stream, addr, request.raw())).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Timeout {
            addr: addr.to_string(),
            ms: timeout.as_millis() as u64,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_upstreams;

    #[test]
    fn credentials_come_from_the_first_seed_that_names_any() {
        let seeds =
            parse_upstreams(&["redis://a:1,redis://bob:s3cret@b:2,redis://:x@c:3".into()]).unwrap();
        let creds = Credentials::from_seeds(&seeds);
        assert_eq!(creds.username.as_deref(), Some("bob"));
        assert_eq!(creds.password, Some(Secret("s3cret".into())));
        assert!(!format!("{creds:?}").contains("s3cret"));
        let none = Credentials::from_seeds(&parse_upstreams(&["a:1".into()]).unwrap());
        assert!(none.username.is_none() && none.password.is_none() && none.tls.is_none());
    }
}
