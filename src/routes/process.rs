//! The process series of `/pools/metrics`, with the names Prometheus'
//! client libraries give them, read from `/proc/self` (Linux; elsewhere
//! they are left out), and the tokio runtime's workers and alive tasks.

use prometheus_client::{
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::{MetricType, exemplar::Exemplar},
};

/// Clock ticks per second of `/proc/*/stat` (the kernel's `USER_HZ`, 100
/// on every Linux architecture it exports to user space).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` tells of this process.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Process {
    pub(super) cpu_seconds: f64,
    pub(super) resident_bytes: i64,
    pub(super) threads: i64,
    pub(super) start_time_seconds: f64,
    pub(super) open_fds: i64,
    pub(super) max_fds: Option<i64>,
}

impl Process {
    /// Reads `/proc/self`; `None` where there is none.
    pub(super) fn read() -> Option<Self> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut process = Self::parse(
            &read("/proc/self/stat")?,
            &read("/proc/self/status")?,
            &read("/proc/stat")?,
            read("/proc/self/limits").as_deref(),
        )?;
        process.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        Some(process)
    }

    /// The figures of `/proc/self/stat`, `/proc/self/status`, `/proc/stat`
    /// and `/proc/self/limits` as they read.
    fn parse(stat: &str, status: &str, system: &str, limits: Option<&str>) -> Option<Self> {
        // `pid (comm) state ...`: the name may hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        // Fields counted from 3 (the state) on.
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let cpu_seconds = (field(14)? + field(15)?) / USER_HZ;
        let started_ticks = field(22)?;
        let line_value = |text: &str, key: &str| -> Option<i64> {
            text.lines()
                .find_map(|line| line.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let boot_time = line_value(system, "btime")? as f64;
        let max_fds = limits.and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))?
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok()
        });
        Some(Self {
            cpu_seconds,
            resident_bytes: line_value(status, "VmRSS:")? * 1024,
            threads: line_value(status, "Threads:")?,
            start_time_seconds: boot_time + started_ticks / USER_HZ,
            open_fds: 0,
            max_fds,
        })
    }
}

type Encoded = Result<(), std::fmt::Error>;

/// Writes the process and runtime series.
pub(super) fn encode(encoder: &mut DescriptorEncoder) -> Encoded {
    if let Some(p) = Process::read() {
        encoder
            .encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, f64, f64>(
                &p.cpu_seconds,
                None::<&Exemplar<NoLabelSet, f64>>,
            )?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Encoded {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        )?;
        gauge(
            "process_threads",
            "Number of OS threads in the process.",
            p.threads as f64,
        )?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        )?;
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds as f64,
        )?;
        if let Some(max) = p.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max as f64,
            )?;
        }
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let metrics = runtime.metrics();
        for (name, help, value) in [
            (
                "tokio_workers",
                "Worker threads of the tokio runtime serving the scrape.",
                metrics.num_workers(),
            ),
            (
                "tokio_alive_tasks",
                "Tasks alive in the tokio runtime serving the scrape.",
                metrics.num_alive_tasks(),
            ),
        ] {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&(value as i64))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_read_as_the_prometheus_clients_read_them() {
        // A name with a space and a parenthesis; utime 250, stime 150
        // ticks; started 12345 ticks after boot.
        let stat = "4242 (my (app) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 7 0 12345 1000000 500 18446744073709551615";
        let status = "Name:\tapp\nVmRSS:\t   2048 kB\nThreads:\t7\n";
        let system = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n";
        let p = Process::parse(stat, status, system, Some(limits)).unwrap();
        assert_eq!(
            p,
            Process {
                cpu_seconds: 4.0,
                resident_bytes: 2048 * 1024,
                threads: 7,
                start_time_seconds: 1_700_000_000.0 + 123.45,
                open_fds: 0,
                max_fds: Some(1024),
            }
        );
        assert_eq!(Process::parse("garbage", status, system, None), None);
    }
}
