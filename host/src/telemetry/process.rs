//! The usual `process_*` families (resident and virtual memory, open and maximum file
//! descriptors, CPU seconds, threads, start time), read from `/proc/self` at scrape time.
//! On a system without `/proc` the families are absent.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Register the process families, read now, in `r` (unprefixed, as Prometheus expects).
pub(crate) fn register(r: &mut Registry) {
    let Some(p) = read() else {
        return;
    };
    r.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        ConstGauge::new(p.rss_bytes as i64),
    );
    r.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        ConstGauge::new(p.vsize_bytes as i64),
    );
    r.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        ConstCounter::new(p.cpu_seconds),
    );
    r.register(
        "process_open_fds",
        "Number of open file descriptors",
        ConstGauge::new(p.open_fds as i64),
    );
    if let Some(max) = p.max_fds {
        r.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            ConstGauge::new(max as i64),
        );
    }
    r.register(
        "process_threads",
        "Number of OS threads in the process",
        ConstGauge::new(p.threads as i64),
    );
    if let Some(start) = p.start_time_seconds {
        r.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            ConstGauge::new(start),
        );
    }
}

/// What `/proc/self` tells.
#[derive(Debug)]
struct Process {
    rss_bytes: u64,
    vsize_bytes: u64,
    cpu_seconds: f64,
    threads: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Numbering of proc(5) minus 3 (pid, comm and state come before `rest`'s index 1).
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    // SAFETY: sysconf only reads system constants.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    let rss_pages = field(24)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let max_fds =
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur);
    let start_time_seconds = boot_time().map(|boot| boot + start_ticks as f64 / ticks);
    Some(Process {
        rss_bytes: rss_pages * page,
        vsize_bytes: vsize,
        cpu_seconds: (utime + stime) as f64 / ticks,
        threads,
        open_fds,
        max_fds,
        start_time_seconds,
    })
}

/// Seconds since the epoch at boot (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let p = super::read().expect("/proc is there on Linux");
        assert!(p.rss_bytes > 1 << 20, "{p:?}");
        assert!(p.threads >= 1 && p.open_fds >= 3, "{p:?}");
        assert!(p.max_fds.is_some_and(|m| m >= p.open_fds), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
