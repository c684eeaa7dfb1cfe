//! TLS on the client listener: the handshake, then a small bridge between the TLS stream and
//! the session.
//!
//! The session reads by readiness into its worker's scratch buffer and writes with
//! `try_write`, which a TLS stream cannot do (decryption needs a buffer of its own). So each
//! TLS client gets a socket pair: this task decrypts into one end and encrypts what comes out
//! of it, and the ordinary session serves the other end, unchanged. Plain TCP clients never
//! pass through here. A failed handshake, a plain-text client on the TLS port, or a client
//! without the required certificate only ends its own task.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::session;
use crate::dispatch::Worker;

/// A client that has not finished its handshake by then is dropped: it holds a socket and a
/// task, and a slow or silent peer must not pin them.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one TLS client: handshake, then the session on a socket pair bridged to it.
pub async fn serve(
    acceptor: TlsAcceptor,
    worker: Rc<Worker>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    // What CLIENT LIST shows: the TCP connection's end, not the socket pair's.
    let local = session::LocalEnd::of(&tcp);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                metrics::counter!("slotproxy_errors_total", "kind" => "client_tls_handshake").increment(1);
                tracing::debug!(%peer, %error, "client TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!("slotproxy_errors_total", "kind" => "client_tls_handshake").increment(1);
                tracing::debug!(%peer, "client TLS handshake timed out");
                return;
            }
        },
        _ = shutdown.cancelled() => return,
    };
    let (ours, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot create a socket pair for a TLS client");
            return;
        }
    };
    tokio::task::spawn_local(session::serve(worker, theirs, peer, local));
    bridge(tls, ours).await;
}

/// Copies plaintext both ways until the session is done.
///
/// When the client stops sending, the session's end is shut for writing, so the session
/// answers what it already read and closes, as it does for a TCP client that half-closes.
/// When the session closes (QUIT, a protocol error, shutdown), the client gets a TLS
/// close_notify and the bridge ends.
async fn bridge(tls: tokio_rustls::server::TlsStream<TcpStream>, mut session: UnixStream) {
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let (mut session_read, mut session_write) = session.split();
    // tokio::io::copy flushes whenever its reader has nothing more, so TLS records never wait
    // in rustls's buffer for a later write.
    let to_session = async {
        let _ = tokio::io::copy(&mut tls_read, &mut session_write).await;
        let _ = session_write.shutdown().await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut session_read, &mut tls_write).await;
        let _ = tls_write.shutdown().await;
    };
    tokio::pin!(to_session, to_client);
    let mut client_done = false;
    loop {
        tokio::select! {
            () = &mut to_client => return,
            () = &mut to_session, if !client_done => client_done = true,
        }
    }
}
