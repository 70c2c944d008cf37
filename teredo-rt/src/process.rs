//! The standard `process_*` metrics of this process, read at scrape time.
//!
//! Our own collector rather than the prometheus crate's `ProcessCollector`, because that one
//! counts CPU time in whole seconds: over a ten-second load run, a relay busy for 2.9 s
//! showed 2. Here CPU time comes from `getrusage` (microseconds) and the rest from
//! `/proc/self`, under the names every Prometheus client library uses (so dashboards and
//! queries written for other exporters work unchanged):
//!
//! | name | type | source |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | `getrusage(RUSAGE_SELF)` user + system |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/stat` rss × page size |
//! | `process_virtual_memory_bytes` | gauge | `/proc/self/stat` vsize |
//! | `process_open_fds` | gauge | entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | `RLIMIT_NOFILE` soft limit |
//! | `process_start_time_seconds` | gauge | starttime / CLK_TCK + `btime` of `/proc/stat` |
//! | `process_threads` | gauge | `/proc/self/stat` num_threads |
//!
//! A value that cannot be read (no `/proc`) keeps its last value; the series never vanish.

use std::fs;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, Opts};

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Threads in the process (field 20).
    pub num_threads: u64,
    /// Start time after boot, in clock ticks (field 22).
    pub starttime_ticks: u64,
    /// Virtual memory size in bytes (field 23).
    pub vsize_bytes: u64,
    /// Resident set size in pages (field 24).
    pub rss_pages: u64,
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so the fields are counted from the last
/// `)`. `None` on anything unexpected.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name, field 3 (state) comes first: field n is at index n - 3.
    let fields: Vec<&str> = after.split_ascii_whitespace().take(22).collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let num_threads = field(20)?;
    let starttime_ticks = field(22)?;
    let vsize_bytes = field(23)?;
    let rss_pages = field(24)?;
    Some(ProcStat {
        num_threads,
        starttime_ticks,
        vsize_bytes,
        rss_pages,
    })
}

/// Parses the boot time (`btime`, seconds since the epoch) out of `/proc/stat`.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The collector: register it once per registry (`teredo_rt::register_process_metrics`).
#[derive(Clone, Debug)]
pub struct ProcessMetrics {
    cpu: Counter,
    resident: IntGauge,
    virtual_: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
    descs: Vec<Desc>,
}

impl ProcessMetrics {
    /// Creates the metrics of the calling process, with the start time already set (it
    /// never changes).
    pub fn for_self() -> prometheus::Result<Self> {
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))?;
        let int = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let resident = int(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let virtual_ = int(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )?;
        let open_fds = int("process_open_fds", "Number of open file descriptors.")?;
        let max_fds = int(
            "process_max_fds",
            "Maximum number of open file descriptors (soft limit).",
        )?;
        let start_time = Gauge::with_opts(Opts::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        ))?;
        let threads = int("process_threads", "Number of OS threads in the process.")?;
        let descs = [
            cpu.desc(),
            resident.desc(),
            virtual_.desc(),
            open_fds.desc(),
            max_fds.desc(),
            start_time.desc(),
            threads.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let m = Self {
            cpu,
            resident,
            virtual_,
            open_fds,
            max_fds,
            start_time,
            threads,
            descs,
        };
        let stat = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t));
        let btime = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_btime(&t));
        if let (Some(stat), Some(btime), Some(tck)) = (stat, btime, sysconf(libc::_SC_CLK_TCK)) {
            m.start_time
                .set(btime as f64 + stat.starttime_ticks as f64 / tck as f64);
        }
        m.refresh();
        Ok(m)
    }

    /// Reads the current values.
    fn refresh(&self) {
        if let Some(cpu) = cpu_seconds() {
            // A counter only goes up; rusage never goes back either.
            let delta = cpu - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
        }
        if let Some(stat) = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
            self.resident
                .set(saturate(stat.rss_pages.saturating_mul(page)));
            self.virtual_.set(saturate(stat.vsize_bytes));
            self.threads.set(saturate(stat.num_threads));
        }
        if let Ok(dir) = fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries, as in other clients.
            self.open_fds.set(saturate(dir.count() as u64));
        }
        if let Some(max) = max_fds() {
            self.max_fds.set(saturate(max));
        }
    }
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        [
            self.cpu.collect(),
            self.resident.collect(),
            self.virtual_.collect(),
            self.open_fds.collect(),
            self.max_fds.collect(),
            self.start_time.collect(),
            self.threads.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn saturate(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

/// User plus system CPU time of the whole process (every thread), in seconds.
fn cpu_seconds() -> Option<f64> {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(tv(u.ru_utime) + tv(u.ru_stime))
}

fn max_fds() -> Option<u64> {
    // SAFETY: an all-zero rlimit is a valid value; getrlimit only writes into it.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `r` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some(r.rlim_cur)
}

#[cfg(test)]
mod tests {
    use prometheus::{Registry, TextEncoder};

    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A name with spaces and a ')' in it must not shift the fields.
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    12 3 0 0 20 0 7 0 123456 99999744 2500 18446744073709551615 1 1 0 0 0 0 0 \
                    0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                num_threads: 7,
                starttime_ticks: 123456,
                vsize_bytes: 99999744,
                rss_pages: 2500,
            })
        );
        assert_eq!(parse_stat("4242 (no fields)"), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 x"),
            None
        );
    }

    #[test]
    fn btime_is_read_from_proc_stat() {
        let text = "cpu  1 2 3\nintr 0\nctxt 10\nbtime 1700000000\nprocesses 5\n";
        assert_eq!(parse_btime(text), Some(1_700_000_000));
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn this_process_is_measured_with_sub_second_cpu_time() {
        let registry = Registry::new();
        registry
            .register(Box::new(ProcessMetrics::for_self().unwrap()))
            .unwrap();
        // Burn a little CPU so that the counter is not zero.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let text = TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap()
        };
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
        let cpu = value("process_cpu_seconds_total");
        assert!(cpu > 0.0 && cpu.fract() != 0.0, "{cpu}");
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start > 1e9 && start <= now + 1.0, "{start} vs {now}");
    }
}
