//! Counters from /proc: interface statistics and UDP errors *of the calling thread's network
//! namespace* (`/proc/thread-self/net/…`: /sys/class/net would show the namespace that
//! mounted /sys instead), process CPU time and memory, per-CPU busy time, load average.

use std::fs;

/// One interface's line of `/proc/net/dev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DevCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Received packets dropped (`drop`: rx_dropped + rx_missed_errors).
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets dropped on transmit (e.g. a full TUN queue).
    pub tx_dropped: u64,
}

impl DevCounters {
    /// Field-wise `self - before` (saturating).
    pub fn since(&self, before: &Self) -> Self {
        Self {
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
            rx_dropped: self.rx_dropped.saturating_sub(before.rx_dropped),
            tx_packets: self.tx_packets.saturating_sub(before.tx_packets),
            tx_dropped: self.tx_dropped.saturating_sub(before.tx_dropped),
        }
    }
}

/// Parses `dev`'s line of a `/proc/net/dev` text.
pub fn parse_net_dev(text: &str, dev: &str) -> Option<DevCounters> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        // rx: bytes packets errs drop fifo frame compressed multicast;
        // tx: bytes packets errs drop fifo colls carrier compressed
        (v.len() >= 16).then(|| DevCounters {
            rx_packets: v[1],
            rx_dropped: v[3],
            tx_packets: v[9],
            tx_dropped: v[11],
        })
    })
}

/// `dev`'s counters in the calling thread's namespace (zeros if it does not exist).
pub fn dev_counters(dev: &str) -> DevCounters {
    fs::read_to_string("/proc/thread-self/net/dev")
        .ok()
        .and_then(|t| parse_net_dev(&t, dev))
        .unwrap_or_default()
}

/// UDP receive-buffer errors (`Udp: RcvbufErrors`) in a `/proc/net/snmp` text.
pub fn parse_udp_rcvbuf_errors(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|w| w == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// UDP receive-buffer errors in the calling thread's namespace.
pub fn udp_rcvbuf_errors() -> u64 {
    fs::read_to_string("/proc/thread-self/net/snmp")
        .ok()
        .and_then(|t| parse_udp_rcvbuf_errors(&t))
        .unwrap_or(0)
}

/// utime + stime (clock ticks) in a `/proc/<pid>/stat` text (all threads of the process).
pub fn parse_stat_cpu_ticks(text: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks (user + system) used so far by process `pid`.
pub fn process_cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat_cpu_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Resident set size of `pid` in KiB (`VmRSS`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let t = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command name of `pid`.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// (busy, total) ticks of `cpu` in a `/proc/stat` text; busy excludes idle and iowait.
pub fn parse_cpu_times(text: &str, cpu: usize) -> Option<(u64, u64)> {
    let tag = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tag.as_str()))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU ticks (utime + stime) of every user-space process except `exclude` (kernel threads,
/// children of kthreadd, are left out), by pid.
pub fn user_process_ticks(exclude: &[u32]) -> std::collections::HashMap<u32, u64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == 2 || exclude.contains(&pid) {
            continue;
        }
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parse_stat_ppid(&text) == Some(2) {
            continue;
        }
        if let Some(t) = parse_stat_cpu_ticks(&text) {
            out.insert(pid, t);
        }
    }
    out
}

/// The parent pid in a `/proc/<pid>/stat` text.
pub fn parse_stat_ppid(text: &str) -> Option<u32> {
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Ticks used between two [`user_process_ticks`] snapshots (processes that appeared
/// count from zero; those that exited are lost).
pub fn ticks_between(
    before: &std::collections::HashMap<u32, u64>,
    after: &std::collections::HashMap<u32, u64>,
) -> u64 {
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// (busy, total) ticks of `cpu` so far.
pub fn cpu_times(cpu: usize) -> (u64, u64) {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_cpu_times(&t, cpu))
        .unwrap_or((0, 0))
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let t = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = t.split_whitespace().map(|w| w.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Number of online CPUs.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev() {
        let t = "Inter-|   Receive                                                |  Transmit\n \
                 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
                 \x20   lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
                 \x20inet0: 1420000   10000    0    5    0     0          0         0     1000      20    0    7    0     0       0          0\n";
        let c = parse_net_dev(t, "inet0").unwrap();
        assert_eq!(
            c,
            DevCounters {
                rx_packets: 10000,
                rx_dropped: 5,
                tx_packets: 20,
                tx_dropped: 7
            }
        );
        assert!(parse_net_dev(t, "nat0").is_none());
        let d = c.since(&DevCounters {
            rx_packets: 100,
            ..DevCounters::default()
        });
        assert_eq!(d.rx_packets, 9900);
    }

    #[test]
    fn snmp_stat_cpu() {
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 10 0 3 5 3 0\n";
        assert_eq!(parse_udp_rcvbuf_errors(snmp), Some(3));
        let stat = "1234 (tokio (rt) x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        let cpus = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\n\
                    cpu1 5 0 3 50 2 0 2 0 0 0\n";
        assert_eq!(parse_cpu_times(cpus, 1), Some((10, 62)));
        assert_eq!(parse_stat_ppid(stat), Some(1));
        let a = std::collections::HashMap::from([(1, 10), (2, 5)]);
        let b = std::collections::HashMap::from([(1, 15), (3, 7)]);
        assert_eq!(ticks_between(&a, &b), 12);
        assert!(parse_cpu_times(cpus, 2).is_none());
    }
}
