//! Reading Prometheus metrics: scraping a `/metrics` endpoint (from here or from inside a
//! namespace) or an in-process registry, and reading a series out of the text format.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use prometheus::{Registry, TextEncoder};

use crate::netns::Netns;

/// How long a scrape may take to connect, and then to answer (generous: a relay under a
/// flood answers late).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of `GET /metrics` on `addr` (HTTP/1.0: the server closes after answering;
/// bounded to 4 MiB and [`SCRAPE_TIMEOUT`]). Anything but `200` is an error.
pub fn fetch(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    s.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    // One write: the request in one segment.
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut body = Vec::new();
    s.take(4 << 20).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP header from {addr}");
    };
    let status = head.split_whitespace().nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        bail!("{addr}: {}", head.lines().next().unwrap_or("empty answer"));
    }
    Ok(rest.to_owned())
}

/// [`fetch`] from a thread inside `ns` (an endpoint on the namespace's own addresses).
pub fn fetch_in(ns: &Netns, addr: SocketAddr) -> Result<String> {
    ns.run_in(|| fetch(addr))
}

/// One HTTP/1.1 request with `Connection: close`, each step bounded by `limit`; returns
/// (status, head in lower case, body). Panics on any failure: for tests of an endpoint
/// itself (status codes, headers), where [`fetch`] is for reading its metrics.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    limit: Duration,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::time::timeout;

    let mut stream = timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send the request");
    let mut raw = Vec::new();
    timeout(limit, stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read the answer");
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The value of one series in Prometheus text format (`name{labels}` exactly as written).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The value of label `label` in a sample line's label set (`{a="x",b="y"}`).
fn label_value<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == label).then(|| v.trim().trim_matches('"'))
        })
}

/// Sum of every sample of `metric` in a Prometheus text exposition, per value of `label`
/// (samples without it under `""`). Other labels are summed over.
pub fn sum_by_label(text: &str, metric: &str, label: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else {
            continue;
        };
        let (labels, value) = match rest.split_once('}') {
            Some((l, v)) if rest.starts_with('{') => (l, v),
            _ if rest.starts_with(' ') => ("", rest),
            _ => continue,
        };
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let key = label_value(labels, label).unwrap_or("").to_owned();
        *out.entry(key).or_insert(0) += v.max(0.0) as u64;
    }
    out
}

/// Sum of every sample of `metric`.
pub fn sum_all(text: &str, metric: &str) -> u64 {
    sum_by_label(text, metric, "").values().sum()
}

/// An in-process registry in Prometheus text format.
pub fn registry_text(registry: &Registry) -> String {
    TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# cannot encode the metrics: {e}"))
}

/// One series of an in-process registry; panics (quoting the registry) if there is none.
#[track_caller]
pub fn registry_value(registry: &Registry, series: &str) -> f64 {
    let text = registry_text(registry);
    value(&text, series).unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// Polls (every 5 ms, up to `timeout`) until `series` of an in-process registry reads `want`
/// — a driver counts after it has read the datagram, and exports some counters only
/// periodically, so the series may not exist yet; panics with the registry otherwise.
pub async fn wait_registry_value(registry: &Registry, series: &str, want: f64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = registry_text(registry);
        let got = value(&text, series);
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} = {got:?}, want {want}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    const TEXT: &str = "# HELP x_total X.\n# TYPE x_total counter\n\
        x_total{reason=\"a\",address=\"primary\"} 3\n\
        x_total{reason=\"a\",address=\"secondary\"} 2\n\
        x_total{reason=\"b\"} 1\n\
        x_total_other 9\n\
        y 1.5\n";

    #[test]
    fn series_are_read_and_summed() {
        assert_eq!(value(TEXT, "y"), Some(1.5));
        assert_eq!(value(TEXT, "x_total{reason=\"b\"}"), Some(1.0));
        assert_eq!(value(TEXT, "x_total"), None);
        let by = sum_by_label(TEXT, "x_total", "reason");
        assert_eq!(by.get("a"), Some(&5));
        assert_eq!(by.get("b"), Some(&1));
        assert_eq!(by.len(), 2);
        assert_eq!(sum_all(TEXT, "x_total"), 6);
    }

    #[test]
    fn registries_are_read() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("things_total", "Things.").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc_by(4);
        assert_eq!(registry_value(&registry, "things_total"), 4.0);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(wait_registry_value(
                &registry,
                "things_total",
                4.0,
                Duration::from_secs(1),
            ));
    }

    #[test]
    fn fetch_reads_the_body_and_checks_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.0 200 OK\r\n\r\ny 2\n",
                "HTTP/1.0 404 Not Found\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                // The whole request: closing with unread bytes would reset the connection.
                let mut request = Vec::new();
                while !request.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    s.read_exact(&mut byte).unwrap();
                    request.push(byte[0]);
                }
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        assert_eq!(value(&fetch(addr).unwrap(), "y"), Some(2.0));
        assert!(fetch(addr).is_err());
        server.join().unwrap();
    }
}
