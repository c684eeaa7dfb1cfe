//! The admin HTTP listener: `/healthz`, `/readyz`, `/metrics` and the JSON views
//! `/cluster/info`, `/cluster/nodes`, `/cluster/slots`. A handful of GET endpoints for probes,
//! scrapers and scripts, so a minimal HTTP/1.1 responder is enough (no HTTP stack needed).
//! What the JSON says is built in [`views`]; this module only reads requests and writes
//! responses.

pub mod views;

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::shared::Shared;

/// Longest request head accepted; probes and scrapers send a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves admin requests until `stop`. `shutdown` only turns `/readyz` to 503: the listener
/// outlives it so that load balancers polling `/readyz` see the proxy leave while it drains,
/// rather than a refused connection they may retry elsewhere or treat as a crash.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
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
        let shutting_down = shutdown.is_cancelled();
        tokio::spawn(async move {
            if let Err(error) = respond(stream, &shared, metrics.as_ref(), shutting_down).await {
                tracing::debug!(%error, "admin request failed");
            }
        });
    }
}

/// One response: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: body.to_string(),
        }
    }

    fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_string(value) {
            Ok(mut body) => {
                body.push('\n');
                Response {
                    status,
                    content_type: "application/json",
                    body,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode an admin view");
                Response::text(500, "cannot encode the response\n")
            }
        }
    }
}

async fn respond(
    mut stream: TcpStream,
    shared: &Shared,
    metrics: Option<&PrometheusHandle>,
    shutting_down: bool,
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
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.len() > MAX_REQUEST_HEAD {
            let response = Response::text(431, "request header too large\n");
            return write(&mut stream, &response, false).await;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    // HEAD is GET without the body (RFC 9110 asks every server that has GET to take it).
    let with_body = method != "HEAD";
    let response = if method == "GET" || method == "HEAD" {
        route(path, shared, metrics, shutting_down)
    } else {
        Response::text(405, "only GET and HEAD are supported\n")
    };
    write(&mut stream, &response, with_body).await
}

fn route(
    path: &str,
    shared: &Shared,
    metrics: Option<&PrometheusHandle>,
    shutting_down: bool,
) -> Response {
    match path {
        "/healthz" => Response::text(200, "ok\n"),
        "/metrics" => match metrics {
            Some(handle) => {
                crate::metrics::record_topology(shared);
                let mut body = handle.render();
                shared.latency.render(&mut body);
                Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body,
                }
            }
            None => Response::text(
                503,
                "no metrics: `metrics = false` in the configuration, or another metrics recorder was installed first\n",
            ),
        },
        "/readyz" | "/cluster/info" | "/cluster/nodes" | "/cluster/slots" => {
            let topology = &shared.topology;
            let map = topology.map();
            let status = topology.status();
            let snap = views::Snapshot {
                map: &map,
                status: &status,
                age: topology.age(),
                refreshes: topology.refreshes(),
                generation: topology.generation(),
                shutting_down,
            };
            match path {
                "/readyz" => {
                    let ready = views::readiness(&snap);
                    Response::json(if ready.ready { 200 } else { 503 }, &ready)
                }
                "/cluster/info" => Response::json(200, &views::cluster_info(&snap)),
                "/cluster/nodes" => Response::json(200, &views::cluster_nodes(&snap)),
                _ => Response::json(200, &views::cluster_slots(&snap)),
            }
        }
        _ => Response::text(404, "not found\n"),
    }
}

async fn write(
    stream: &mut TcpStream,
    response: &Response,
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let allow = if response.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if with_body {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}
