//! Facts about the machine for the benchmark's header, read only: the kernel release, the
//! CPUs, the load average, the clock, and the guest's halt-polling settings (which decide
//! what a wake-up across vCPUs costs). This module never writes a sysctl or a module
//! parameter: it prints what it finds, and "absent" for what does not exist.

use std::path::Path;

/// Files that say how (and whether) a guest polls before halting an idle vCPU.
const HALT_POLL_FILES: [&str; 4] = [
    "/sys/devices/system/cpu/cpuidle/current_driver",
    "/sys/devices/system/cpu/cpuidle/current_governor_ro",
    "/sys/module/kvm/parameters/halt_poll_ns",
    "/sys/module/haltpoll/parameters",
];

/// The halt-polling settings: each file of [`HALT_POLL_FILES`] with its content, the
/// haltpoll driver's parameters one by one, "absent" for what does not exist.
pub fn halt_poll() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in HALT_POLL_FILES {
        let path = Path::new(file);
        if path.is_dir() {
            let mut params: Vec<_> = std::fs::read_dir(path)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            params.sort();
            if params.is_empty() {
                found.push((file.to_owned(), "absent".to_owned()));
            }
            for param in params {
                found.push((param.display().to_string(), read_trimmed(&param)));
            }
        } else {
            found.push((file.to_owned(), read_trimmed(path)));
        }
    }
    found
}

fn read_trimmed(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "absent".to_owned(),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Machine-wide system + irq + softirq clock ticks, all cores (`/proc/stat`).
pub fn machine_ticks() -> Option<u64> {
    stat_kernel_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// system + irq + softirq of the `cpu` line of a `/proc/stat` text.
fn stat_kernel_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq ...
    Some(fields.get(2)? + fields.get(5)? + fields.get(6)?)
}

/// Clock ticks a second (`getconf CLK_TCK`).
pub fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// Now, as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (Howard Hinnant's civil_from_days).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_615_188), "2026-12-07 03:46:28 UTC");
    }

    #[test]
    fn kernel_ticks_add_system_irq_softirq() {
        let stat = "cpu  100 5 40 9000 12 3 7 0 0 0\ncpu0 50 2 20 4500 6 1 3 0 0 0\n";
        assert_eq!(stat_kernel_ticks(stat), Some(50));
        assert_eq!(stat_kernel_ticks("intr 1 2\n"), None);
    }

    #[test]
    fn halt_poll_reports_every_place_it_looks() {
        let found = halt_poll();
        for file in HALT_POLL_FILES {
            assert!(
                found.iter().any(|(what, _)| what.starts_with(file)),
                "{file}"
            );
        }
        assert!(!cpus().to_string().is_empty() && !kernel_release().is_empty());
    }
}
