//! The two things `prom-check` asks a Prometheus: a page or file (`GET`, with its status and
//! content type, since a browser refuses a script served as `text/plain`), and a range query
//! of the HTTP API (`/api/v1/query_range`), summed up per expression.
//!
//! HTTP/1.0 over a plain `TcpStream`: Prometheus answers it without chunking and closes the
//! connection, so the body is everything after the header. Bounded: 16 MiB per answer and a
//! timeout on connect, send and every read.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;

/// Connect, send and per-read timeout.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read.
const MAX_BODY: u64 = 16 << 20;

/// One HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code (0 when the status line is not HTTP).
    pub status: u16,
    /// The `Content-Type` header, empty when absent.
    pub content_type: String,
    /// The body, as text (lossy: only text is looked into).
    pub body: String,
}

/// `GET path` from `authority` (`HOST:PORT`).
pub fn get(authority: &str, path: &str) -> anyhow::Result<Answer> {
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("no address for {authority}"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.take(MAX_BODY)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading {path} from {authority}"))?;
    parse_answer(&String::from_utf8_lossy(&raw)).with_context(|| format!("{path} from {authority}"))
}

/// Status, content type and body of a raw HTTP/1.x answer.
pub fn parse_answer(raw: &str) -> anyhow::Result<Answer> {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        bail!("no HTTP header");
    };
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split_whitespace().collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/") => code.parse().unwrap_or(0),
        _ => 0,
    };
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// `s` percent-encoded for a URL query value (everything but RFC 3986's unreserved
/// characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a range query returned, summed over its series.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RangeSummary {
    /// Series returned.
    pub series: usize,
    /// Series with at least one finite sample: the ones a graph can draw.
    pub with_data: usize,
    /// Series with a finite sample other than zero.
    pub nonzero: usize,
    /// Samples over all series.
    pub samples: usize,
    /// The largest finite sample, if any.
    pub peak: Option<f64>,
    /// The labels of each series with data (`__name__` left out), at most [`MAX_LABELS`].
    pub labels: Vec<String>,
}

/// Series labels kept per expression in the report.
pub const MAX_LABELS: usize = 12;

/// `expr` over `[start, end]` every `step_s` seconds.
pub fn query_range(
    authority: &str,
    expr: &str,
    (start, end): (u64, u64),
    step_s: u64,
) -> anyhow::Result<RangeSummary> {
    let path = format!(
        "/api/v1/query_range?query={}&start={start}&end={end}&step={step_s}",
        encode(expr)
    );
    let answer = get(authority, &path)?;
    summarize(&answer.body).with_context(|| format!("HTTP {}", answer.status))
}

/// The summary of a `/api/v1/query_range` answer (an error when Prometheus says so).
pub fn summarize(body: &str) -> anyhow::Result<RangeSummary> {
    let json: serde_json::Value = serde_json::from_str(body).context("not JSON")?;
    if json["status"] != "success" {
        bail!(
            "{}: {}",
            json["errorType"].as_str().unwrap_or("error"),
            json["error"].as_str().unwrap_or("no message")
        );
    }
    let result = json["data"]["result"]
        .as_array()
        .context("no data.result")?;
    let mut sum = RangeSummary {
        series: result.len(),
        ..RangeSummary::default()
    };
    for series in result {
        let values: Vec<f64> = series["values"]
            .as_array()
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| pair[1].as_str()?.parse::<f64>().ok())
            .collect();
        sum.samples += values.len();
        let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if finite.is_empty() {
            continue;
        }
        sum.with_data += 1;
        if finite.iter().any(|v| *v != 0.0) {
            sum.nonzero += 1;
        }
        let peak = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        sum.peak = Some(sum.peak.map_or(peak, |p| p.max(peak)));
        if sum.labels.len() < MAX_LABELS {
            sum.labels.push(labels(&series["metric"]));
        }
    }
    Ok(sum)
}

/// `{a="x", b="y"}` of a series' labels, `__name__` left out.
fn labels(metric: &serde_json::Value) -> String {
    let pairs: Vec<String> = metric
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_type_and_body() {
        let a = parse_answer(
            "HTTP/1.0 200 OK\r\nContent-Type: text/javascript; charset=utf-8\r\n\r\nvar x;",
        )
        .unwrap();
        assert_eq!(
            (a.status, a.content_type.as_str(), a.body.as_str()),
            (200, "text/javascript; charset=utf-8", "var x;")
        );
        let a = parse_answer("HTTP/1.1 404 Not Found\r\n\r\n").unwrap();
        assert_eq!((a.status, a.content_type.as_str()), (404, ""));
        assert_eq!(parse_answer("garbage\r\n\r\n").unwrap().status, 0);
        assert!(parse_answer("no header end").is_err());
    }

    #[test]
    fn encodes_promql_for_a_query_string() {
        assert_eq!(
            encode(r#"sum(x{d="a|b"}) > 0"#),
            "sum%28x%7Bd%3D%22a%7Cb%22%7D%29%20%3E%200"
        );
        assert_eq!(encode("job:a_b:rate5s"), "job%3Aa_b%3Arate5s");
    }

    #[test]
    fn summarizes_a_matrix() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
          {"metric":{"__name__":"x","job":"a"},"values":[[1,"0"],[2,"3.5"]]},
          {"metric":{"job":"b"},"values":[[1,"0"],[2,"0"]]},
          {"metric":{"job":"c"},"values":[[1,"NaN"]]}]}}"#;
        let s = summarize(body).unwrap();
        assert_eq!(
            (s.series, s.with_data, s.nonzero, s.samples, s.peak),
            (3, 2, 1, 5, Some(3.5))
        );
        assert_eq!(s.labels, ["{job=a}", "{job=b}"]);
        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(summarize(empty).unwrap(), RangeSummary::default());
        let err = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            summarize(err).unwrap_err().to_string(),
            "bad_data: parse error"
        );
    }
}
