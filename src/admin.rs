//! The admin HTTP listener: `/healthz`, `/readyz` and `/metrics`. A handful of GET endpoints
//! for probes and scrapers, so a minimal HTTP/1.1 responder is enough (no HTTP stack needed).

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

/// Longest request head accepted; probes and scrapers send a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = respond(stream, &shared, metrics.as_ref()).await {
                tracing::debug!(%error, "admin request failed");
            }
        });
    }
}

async fn respond(
    mut stream: TcpStream,
    shared: &Shared,
    metrics: Option<&PrometheusHandle>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return write(&mut stream, 431, "text/plain", "request header too large\n").await;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return write(&mut stream, 405, "text/plain", "only GET is supported\n").await;
    }
    match path {
        "/healthz" => write(&mut stream, 200, "text/plain", "ok\n").await,
        "/readyz" => {
            let map = shared.topology.map();
            if map.is_complete() {
                write(&mut stream, 200, "application/json", "{\"ready\":true}\n").await
            } else {
                let body = format!(
                    "{{\"ready\":false,\"reason\":\"{} of 16384 slots have a known primary\"}}\n",
                    map.covered_slots()
                );
                write(&mut stream, 503, "application/json", &body).await
            }
        }
        "/metrics" => match metrics {
            Some(handle) => {
                write(
                    &mut stream,
                    200,
                    "text/plain; version=0.0.4",
                    &handle.render(),
                )
                .await
            }
            None => {
                write(
                    &mut stream,
                    503,
                    "text/plain",
                    "metrics recorder not installed\n",
                )
                .await
            }
        },
        _ => write(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

async fn write(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
