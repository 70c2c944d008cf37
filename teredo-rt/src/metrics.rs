//! The Prometheus `/metrics` endpoint and the standard `process_*` metrics.
//!
//! Every component exposes its counters the same way: a [`prometheus::Registry`] served over
//! HTTP/1.1 by a minimal hyper 1 server. `GET /metrics` (or `HEAD`) answers the text
//! exposition format; any other path is 404, any other method on `/metrics` is 405.
//!
//! The server is deliberately small and bounded: at most [`MAX_CONNECTIONS`] concurrent
//! connections (more are closed at once), a header read timeout against idle or slow
//! clients, and on shutdown it stops accepting and drops open connections (a scrape in flight
//! is simply lost; Prometheus retries).
//!
//! `process_*` metrics come from [`crate::process::ProcessMetrics`] (sub-second CPU time,
//! `/proc/self`); they refresh at scrape time.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::core::Collector;
use prometheus::{Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The only path served.
pub const METRICS_PATH: &str = "/metrics";

/// Concurrent connections served; further connections are closed immediately.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Registers a clone of `metric` in `registry` and returns `metric`, so a metric can be
/// created, registered and kept in one expression.
///
/// Fails (instead of panicking) on a duplicate or inconsistent registration.
pub fn register<T>(registry: &Registry, metric: T) -> prometheus::Result<T>
where
    T: Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// Registers the standard process metrics of this process in `registry`:
/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds` and `process_threads`, read from `/proc/self` at each scrape.
///
/// Fails with `AlreadyReg` when `registry` has them already (components sharing a registry
/// ignore that error).
pub fn register_process_metrics(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(crate::process::ProcessMetrics::for_self()?))
}

/// `registry` in the text exposition format: what a scrape of `/metrics` returns.
pub fn render(registry: &Registry) -> prometheus::Result<String> {
    TextEncoder::new().encode_to_string(&registry.gather())
}

/// Serves `registry` on `http://addr/metrics` until `shutdown` completes.
///
/// Fails only if the address cannot be bound, with the address in the message
/// (`cannot bind metrics endpoint 127.0.0.1:9100: Address already in use (os error 98)`);
/// per-connection errors are logged at debug.
pub async fn serve_metrics(
    addr: SocketAddr,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let listener = bind(addr).await?;
    serve(listener, registry, shutdown).await
}

/// Binds `addr` now and serves `registry` on a spawned task until `shutdown` completes.
///
/// Returns the bound address (useful with port 0) and the task, whose output is that of
/// [`serve_metrics`]. A bind failure is returned here, not through the task.
pub async fn spawn_metrics(
    addr: SocketAddr,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    let listener = bind(addr).await?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address of metrics endpoint {addr}"))?;
    Ok((local, tokio::spawn(serve(listener, registry, shutdown))))
}

pub(crate) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind metrics endpoint {addr}"))
}

pub(crate) async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "metrics endpoint listening");
    let mut shutdown = pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "metrics endpoint at connection cap, closing");
                        continue;
                    }
                    connections.spawn(serve_connection(stream, peer, registry.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint cannot accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    connections.shutdown().await;
    tracing::info!(addr = ?local, "metrics endpoint stopped");
    Ok(())
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, registry: Registry) {
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        ready(Ok::<_, Infallible>(respond(
            request.method(),
            request.uri().path(),
            &registry,
        )))
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "metrics connection ended with an error");
    }
}

fn respond(method: &Method, path: &str, registry: &Registry) -> Response<Full<Bytes>> {
    if path != METRICS_PATH {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match render(registry) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            );
            response
        }
        Err(error) => {
            tracing::warn!(%error, "cannot encode metrics");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n")
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use prometheus::{IntCounter, Registry};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    use super::{register, register_process_metrics, serve_metrics, spawn_metrics};
    use crate::shutdown::Shutdown;

    const LIMIT: Duration = Duration::from_secs(10);
    const ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

    /// One HTTP/1.1 request with `Connection: close`; returns (status, head, body).
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = timeout(LIMIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        timeout(LIMIT, stream.read_to_end(&mut raw))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    fn test_registry() -> (Registry, IntCounter) {
        let registry = Registry::new();
        let counter = register(
            &registry,
            IntCounter::new("teredo_test_packets_total", "Packets seen by the test.").unwrap(),
        )
        .unwrap();
        register_process_metrics(&registry).unwrap();
        (registry, counter)
    }

    #[tokio::test]
    async fn serves_registered_and_process_metrics() {
        let (registry, counter) = test_registry();
        counter.inc_by(42);
        let (trigger, shutdown) = Shutdown::new();
        let (addr, task) = spawn_metrics(ANY_PORT, registry, shutdown.wait_owned())
            .await
            .unwrap();
        assert_ne!(addr.port(), 0);

        let (status, head, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.contains("# TYPE teredo_test_packets_total counter"),
            "{body}"
        );
        assert!(body.contains("\nteredo_test_packets_total 42\n"), "{body}");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                body.contains(&format!("\n{name} ")),
                "{name} missing:\n{body}"
            );
        }
        let rss: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 0.0);

        // Refreshed at scrape time.
        counter.inc();
        let (_, _, body) = request(addr, "GET", "/metrics").await;
        assert!(body.contains("\nteredo_test_packets_total 43\n"), "{body}");

        let (status, head, body) = request(addr, "HEAD", "/metrics").await;
        assert_eq!(status, 200, "{head}");
        assert!(body.is_empty());

        trigger.trigger();
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_rejected() {
        let (registry, _) = test_registry();
        let (trigger, shutdown) = Shutdown::new();
        let (addr, task) = spawn_metrics(ANY_PORT, registry, shutdown.wait_owned())
            .await
            .unwrap();
        for path in ["/", "/metrics/", "/metricsx", "/favicon.ico"] {
            let (status, _, _) = request(addr, "GET", path).await;
            assert_eq!(status, 404, "{path}");
        }
        let (status, head, _) = request(addr, "POST", "/metrics").await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"), "{head}");
        trigger.trigger();
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutdown_stops_listening_and_drops_idle_connections() {
        let (registry, _) = test_registry();
        let (trigger, shutdown) = Shutdown::new();
        // serve_metrics itself (not spawn_metrics), on a port learnt from a probe bind.
        let probe = std::net::TcpListener::bind(ANY_PORT).unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let task = tokio::spawn(serve_metrics(addr, registry, shutdown.wait_owned()));
        // Wait until it listens.
        let idle = timeout(LIMIT, async {
            loop {
                if let Ok(stream) = TcpStream::connect(addr).await {
                    break stream;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(request(addr, "GET", "/metrics").await.0, 200);

        trigger.trigger();
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
        // The idle keep-alive connection was closed by the server.
        let mut idle = idle;
        let mut buf = [0u8; 1];
        let n = timeout(LIMIT, idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let taken = tokio::net::TcpListener::bind(ANY_PORT).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = spawn_metrics(addr, Registry::new(), std::future::pending())
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with(&format!("cannot bind metrics endpoint {addr}: ")),
            "{message}"
        );
        let err = serve_metrics(addr, Registry::new(), std::future::pending())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains(&addr.to_string()));
    }

    #[test]
    fn register_reports_duplicates() {
        let registry = Registry::new();
        let counter = IntCounter::new("teredo_test_dup_total", "Duplicate.").unwrap();
        register(&registry, counter.clone()).unwrap();
        assert!(register(&registry, counter).is_err());
        register_process_metrics(&registry).unwrap();
        assert!(register_process_metrics(&registry).is_err());
    }
}
