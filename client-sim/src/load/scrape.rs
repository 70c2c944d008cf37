//! `load --scrape URL`: the server's and the relay's own `/metrics` (any Prometheus text
//! endpoint) read once a second during the run, for the `--html` page: the counter families,
//! summed over their labels, whose per-second rates show what the device did with the load.
//!
//! Bounded: at most [`MAX_FAMILIES`] counter families per endpoint, and past [`MAX_SAMPLES`]
//! samples every other one is dropped and the interval doubles (counters are cumulative, so
//! the rates over the longer intervals lose nothing).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Counter families kept per endpoint (the first seen).
pub const MAX_FAMILIES: usize = 256;

/// Samples kept per endpoint before thinning.
pub const MAX_SAMPLES: usize = 1800;

/// Connect, send and answer time of one scrape.
const TIMEOUT: Duration = Duration::from_secs(2);

/// An endpoint: `http://HOST:PORT[/PATH]` (path default `/metrics`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// As given.
    pub url: String,
    /// `HOST:PORT`.
    pub authority: String,
    /// Request path.
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if rest.contains("://") {
            return Err(format!("{s}: only http:// endpoints"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        if !authority.contains(':') || authority.ends_with(':') {
            return Err(format!("{s}: expected http://HOST:PORT[/PATH]"));
        }
        Ok(Self {
            url: s.to_owned(),
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// Counter families of a text exposition, each summed over its labels.
pub fn counters(text: &str) -> BTreeMap<String, f64> {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut it = t.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                kinds.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match (line.find('{'), line.rfind('}')) {
            (Some(a), Some(b)) if a < b => (&line[..a], &line[b + 1..]),
            _ => match line.split_once(char::is_whitespace) {
                Some(p) => p,
                None => continue,
            },
        };
        if kinds.get(name) != Some(&"counter") {
            continue;
        }
        let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if v.is_finite() {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// One endpoint's samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// The endpoint's URL.
    pub url: String,
    /// Family names, the index of the values.
    pub families: Vec<String>,
    /// (seconds since the run started, value per family; `NaN` where absent).
    pub samples: Vec<(f64, Vec<f64>)>,
    /// Scrapes that failed.
    pub failures: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Seconds between kept samples (doubles when thinned).
    pub every_s: u64,
}

impl Series {
    fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            every_s: 1,
            ..Self::default()
        }
    }

    /// Adds a scrape at `t_s`.
    pub fn push(&mut self, t_s: f64, values: &BTreeMap<String, f64>) {
        for name in values.keys() {
            if self.families.len() < MAX_FAMILIES && !self.families.contains(name) {
                self.families.push(name.clone());
            }
        }
        let row = self
            .families
            .iter()
            .map(|f| values.get(f).copied().unwrap_or(f64::NAN))
            .collect();
        self.samples.push((t_s, row));
        if self.samples.len() >= MAX_SAMPLES {
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.every_s *= 2;
        }
    }

    /// The `n` families that grew most, each as (name, [(t, per-second rate)]).
    pub fn top_rates(&self, n: usize) -> Vec<(String, Vec<(f64, f64)>)> {
        let growth = |i: usize| {
            let v: Vec<f64> = self
                .samples
                .iter()
                .filter_map(|s| s.1.get(i).copied().filter(|v| !v.is_nan()))
                .collect();
            v.last().zip(v.first()).map_or(0.0, |(l, f)| l - f)
        };
        let mut idx: Vec<(usize, f64)> = (0..self.families.len())
            .map(|i| (i, growth(i)))
            .filter(|(_, g)| *g > 0.0)
            .collect();
        idx.sort_by(|a, b| b.1.total_cmp(&a.1));
        idx.truncate(n);
        idx.into_iter()
            .map(|(i, _)| {
                let rates = self
                    .samples
                    .windows(2)
                    .filter_map(|w| {
                        let (a, b) = (w[0].1.get(i)?, w[1].1.get(i)?);
                        let dt = w[1].0 - w[0].0;
                        (dt > 0.0 && !a.is_nan() && !b.is_nan())
                            .then(|| (w[1].0, ((b - a) / dt).max(0.0)))
                    })
                    .collect();
                (self.families[i].clone(), rates)
            })
            .collect()
    }
}

/// `GET` of the endpoint's path (HTTP/1.0: the server closes after answering), bounded to
/// 8 MiB and two-second timeouts.
pub fn fetch(e: &Endpoint) -> anyhow::Result<String> {
    let addr: SocketAddr = e
        .authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", e.authority))?
        .next()
        .with_context(|| format!("no address for {}", e.authority))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(format!("GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", e.path, e.authority).as_bytes())?;
    let mut body = Vec::new();
    s.take(8 << 20).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        bail!("no HTTP header from {}", e.url);
    };
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        bail!("{} answered {status}", e.url);
    }
    Ok(rest.to_owned())
}

/// A scraping thread; [`Scraper::finish`] stops it and returns what it read.
#[derive(Debug)]
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Series>>,
}

impl Scraper {
    /// Scrapes every endpoint once a second from `started` on, in its own thread (a slow
    /// endpoint must not delay the load).
    pub fn start(endpoints: Vec<Endpoint>, started: Instant) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("load-scrape".into())
            .spawn(move || {
                let mut all: Vec<Series> = endpoints.iter().map(|e| Series::new(&e.url)).collect();
                let mut tick = 0u64;
                loop {
                    let last = flag.load(Ordering::Relaxed);
                    for (e, s) in endpoints.iter().zip(all.iter_mut()) {
                        if tick % s.every_s != 0 && !last {
                            continue;
                        }
                        match fetch(e) {
                            Ok(text) => s.push(started.elapsed().as_secs_f64(), &counters(&text)),
                            Err(err) => {
                                s.failures += 1;
                                s.last_error = Some(format!("{err:#}"));
                            }
                        }
                    }
                    if last {
                        return all;
                    }
                    tick += 1;
                    let next = started + Duration::from_secs(tick);
                    while !flag.load(Ordering::Relaxed) && Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
            .context("cannot start the scraping thread")?;
        Ok(Self { stop, thread })
    }

    /// Takes a last sample, stops and returns every endpoint's series.
    pub fn finish(self) -> Vec<Series> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP teredo_ra_sent_total RAs.
# TYPE teredo_ra_sent_total counter
teredo_ra_sent_total{origin=\"primary\"} 10
teredo_ra_sent_total{origin=\"secondary\",x=\"a b}\"} 5
# TYPE relay_peers gauge
relay_peers 7
# TYPE plain_total counter
plain_total 3 1700000000
";

    #[test]
    fn endpoints() {
        let e: Endpoint = "http://198.51.100.1:9101".parse().unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("198.51.100.1:9101", "/metrics")
        );
        let e: Endpoint = "127.0.0.1:9090/federate".parse().unwrap();
        assert_eq!(e.path, "/federate");
        assert!("https://x:1".parse::<Endpoint>().is_err());
        assert!("http://host".parse::<Endpoint>().is_err());
    }

    #[test]
    fn counters_summed_over_labels_gauges_ignored() {
        let c = counters(TEXT);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c["teredo_ra_sent_total"], 15.0);
        assert_eq!(c["plain_total"], 3.0);
    }

    #[test]
    fn rates_of_the_families_that_grew_most_in_bounded_memory() {
        let mut s = Series::new("x");
        let n = MAX_SAMPLES as u64 + 100;
        for t in 0..n {
            // As the scraper does: one sample per `every_s`.
            if t % s.every_s != 0 {
                continue;
            }
            let mut v = BTreeMap::new();
            v.insert("fast_total".to_owned(), (t * 100) as f64);
            v.insert("slow_total".to_owned(), t as f64);
            v.insert("flat_total".to_owned(), 4.0);
            s.push(t as f64, &v);
        }
        assert!(s.samples.len() < MAX_SAMPLES);
        assert_eq!(s.every_s, 2);
        let top = s.top_rates(5);
        let names: Vec<&str> = top.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["fast_total", "slow_total"]);
        assert!(top[0].1.iter().all(|(_, r)| (*r - 100.0).abs() < 1e-9));
    }

    #[test]
    fn a_scrape_of_a_closed_port_is_an_error() {
        let e: Endpoint = "127.0.0.1:1".parse().unwrap();
        assert!(fetch(&e).is_err());
    }
}
