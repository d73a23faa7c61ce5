//! CPU and memory of processes, read from `/proc`, and the histogram
//! summaries every scenario prints.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A process whose CPU and memory a scenario reports.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Its name in the report, e.g. `gateway-1`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

impl Watch {
    /// Parses `name=pid`.
    pub fn parse(s: &str) -> Result<Self> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("expected name=pid, got {s:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            pid: pid.parse().with_context(|| format!("pid in {s:?}"))?,
        })
    }

    /// Parses a comma-separated list, adding this process as `loadgen`.
    pub fn parse_list(list: &[String]) -> Result<Vec<Self>> {
        let mut out = vec![Self {
            name: "loadgen".into(),
            pid: std::process::id(),
        }];
        for s in list
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
        {
            out.push(Self::parse(s)?);
        }
        Ok(out)
    }
}

/// User + system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields count from its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of a process, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_ascii_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Busy and total CPU ticks of the whole machine, all cores (`/proc/stat`).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_ascii_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// CPU counters of some processes at one instant.
#[derive(Debug, Clone)]
pub struct CpuSnap {
    at: Instant,
    ticks: Vec<Option<u64>>,
    machine: Option<(u64, u64)>,
}

impl CpuSnap {
    /// Reads the counters of `watches` now.
    pub fn take(watches: &[Watch]) -> Self {
        Self {
            at: Instant::now(),
            ticks: watches.iter().map(|w| cpu_ticks(w.pid)).collect(),
            machine: machine_ticks(),
        }
    }

    /// CPU use of each process between `self` and `later`, percent of one
    /// core (200 = both cores of a 2-core machine), plus `total`.
    pub fn percent_until(&self, later: &CpuSnap, watches: &[Watch]) -> BTreeMap<String, f64> {
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-6);
        let mut out = BTreeMap::new();
        let mut total = 0.0;
        for (i, w) in watches.iter().enumerate() {
            if let (Some(a), Some(b)) = (self.ticks[i], later.ticks[i]) {
                let pct = round1(b.saturating_sub(a) as f64 / hz / secs * 100.0);
                total += pct;
                *out.entry(w.name.clone()).or_insert(0.0) += pct;
            }
        }
        out.insert("total".into(), round1(total));
        // The whole machine, and what processes not watched used (other
        // work sharing the machine during the run).
        if let (Some((b0, t0)), Some((b1, t1))) = (self.machine, later.machine) {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let machine = (b1 - b0) as f64 / (t1 - t0).max(1) as f64 * cores * 100.0;
            out.insert("machine".into(), round1(machine));
            out.insert("others".into(), round1((machine - total).max(0.0)));
        }
        out
    }

    /// CPU seconds a process used between `self` and `later`.
    pub fn cpu_secs_until(&self, later: &CpuSnap, index: usize) -> f64 {
        let hz = rustix::param::clock_ticks_per_second() as f64;
        match (self.ticks[index], later.ticks[index]) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / hz,
            _ => 0.0,
        }
    }
}

/// RSS of every watched process, KiB.
pub fn rss_map(watches: &[Watch]) -> BTreeMap<String, u64> {
    watches
        .iter()
        .filter_map(|w| rss_kib(w.pid).map(|r| (w.name.clone(), r)))
        .collect()
}

/// Rounds to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant
/// digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Count and percentiles of a microsecond histogram, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    let ms = |us: u64| round3(us as f64 / 1000.0);
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": round3(h.mean() / 1000.0),
    })
}

/// Raises this process's soft limit of open files to its hard limit and
/// returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
