//! Host tuning checks: kernel and process limits that the node needs for full speed.
//!
//! Each is a warning an operator should fix (see `docs/operations.md`, "Host tuning", and
//! `deploy/`); two are fatal (glommio cannot start): a memlock limit below 512 KiB and
//! `kernel.io_uring_disabled = 2`. `engine run --check-config` reports those as FAIL. Read from `/proc` and `/sys` only (no
//! syscalls, no privileges), so the checks run the same inside systemd's sandbox.
//!
//! | check | source | wanted | why |
//! |---|---|---|---|
//! | UDP receive buffer cap | `/proc/sys/net/core/rmem_max` | >= 8 MiB | the transport asks for 8 MiB socket buffers; below the cap, bursts of the 32 MiB QUIC window are dropped |
//! | UDP send buffer cap | `/proc/sys/net/core/wmem_max` | >= 8 MiB | same, send side |
//! | locked memory | `RLIMIT_MEMLOCK` (`/proc/self/limits`) | >= 512 KiB | glommio registers io_uring buffers in locked memory and fails to start below it |
//! | open files | `RLIMIT_NOFILE` | >= 65536 | RocksDB files, sockets |
//! | io_uring allowed | `/proc/sys/kernel/io_uring_disabled` | 0 (absent = ok) | 2 disables io_uring: glommio cannot run |
//! | CPU frequency governor | `/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor` | `performance` (absent = skipped) | pinned, spinning shards lose latency to frequency scaling |

use std::fmt;
use std::path::Path;

/// Wanted minimum of `net.core.rmem_max` and `net.core.wmem_max` (the transport's socket buffers).
pub const SOCKET_BUFFER_MIN: u64 = 8 * 1024 * 1024;
/// Wanted minimum of `RLIMIT_MEMLOCK` (glommio's io_uring buffers need at least this).
pub const MEMLOCK_MIN: u64 = 512 * 1024;
/// Wanted minimum of `RLIMIT_NOFILE`.
pub const NOFILE_MIN: u64 = 65536;

/// A host setting below what the node wants. `check` names the setting, `message` says what was
/// found, what is wanted and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostWarning {
    /// Short name of the setting (`net.core.rmem_max`, `RLIMIT_MEMLOCK`, ...).
    pub check: &'static str,
    /// Found value, wanted value, fix.
    pub message: String,
    /// The node cannot start with this setting (glommio refuses), not just run slower.
    pub fatal: bool,
}

impl fmt::Display for HostWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}{}", self.check, self.message, if self.fatal { " (the node cannot start with this)" } else { "" })
    }
}

/// Outcome of one host check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOutcome {
    /// Good; what was found.
    Ok(String),
    /// Below what the node wants; found, wanted, fix.
    Warn(String),
    /// The node cannot start like this (e.g. glommio refuses a memlock limit below 512 KiB).
    Fatal(String),
    /// Not applicable or not readable here (e.g. no cpufreq in a VM); why.
    Skipped(String),
}

/// One host check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    /// Short name of the setting.
    pub check: &'static str,
    /// What was found.
    pub outcome: HostOutcome,
}

/// The warnings only (fatal ones included, flagged): what `engine run` logs at start.
pub fn check_host() -> Vec<HostWarning> {
    host_checks()
        .into_iter()
        .filter_map(|c| match c.outcome {
            HostOutcome::Warn(message) => Some(HostWarning { check: c.check, message, fatal: false }),
            HostOutcome::Fatal(message) => Some(HostWarning { check: c.check, message, fatal: true }),
            _ => None,
        })
        .collect()
}

/// Every host check with its outcome (ok, warn, skipped): what `engine run --check-config` prints.
pub fn host_checks() -> Vec<HostCheck> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    vec![
        sysctl_min("net.core.rmem_max", Path::new("/proc/sys/net/core/rmem_max"), SOCKET_BUFFER_MIN),
        sysctl_min("net.core.wmem_max", Path::new("/proc/sys/net/core/wmem_max"), SOCKET_BUFFER_MIN),
        limit_min(
            "RLIMIT_MEMLOCK",
            limits.as_deref(),
            "Max locked memory",
            MEMLOCK_MIN,
            "glommio needs it for io_uring; LimitMEMLOCK=infinity in the unit (deploy/pqdag.service) or `ulimit -l unlimited`",
        ),
        limit_min(
            "RLIMIT_NOFILE",
            limits.as_deref(),
            "Max open files",
            NOFILE_MIN,
            "LimitNOFILE=1048576 in the unit (deploy/pqdag.service) or `ulimit -n 1048576`",
        ),
        io_uring_allowed(std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().as_deref()),
        governor(&read_governors(Path::new("/sys/devices/system/cpu"))),
    ]
}

fn human(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

fn sysctl_min(check: &'static str, path: &Path, min: u64) -> HostCheck {
    let outcome = match std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u64>().ok()) {
        None => HostOutcome::Skipped(format!("{} not readable", path.display())),
        Some(v) if v >= min => HostOutcome::Ok(human(v)),
        Some(v) => HostOutcome::Warn(format!(
            "{} (want >= {}; UDP bursts get dropped): install deploy/sysctl.d/60-pqdag.conf into /etc/sysctl.d/ and run `sysctl --system`",
            human(v),
            human(min)
        )),
    };
    HostCheck { check, outcome }
}

/// A soft resource limit: `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// No limit.
    Unlimited,
    /// This many (bytes or files).
    Value(u64),
}

/// The soft limit of the `/proc/<pid>/limits` row starting with `row` (e.g. "Max open files").
pub fn parse_soft_limit(limits: &str, row: &str) -> Option<Limit> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    let soft = line[row.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(Limit::Unlimited)
    } else {
        soft.parse().ok().map(Limit::Value)
    }
}

fn limit_min(check: &'static str, limits: Option<&str>, row: &str, min: u64, fix: &str) -> HostCheck {
    let outcome = match limits.and_then(|l| parse_soft_limit(l, row)) {
        None => HostOutcome::Skipped(format!("\"{row}\" not found in /proc/self/limits")),
        Some(Limit::Unlimited) => HostOutcome::Ok("unlimited".into()),
        Some(Limit::Value(v)) if v >= min => HostOutcome::Ok(if check == "RLIMIT_NOFILE" { v.to_string() } else { human(v) }),
        Some(Limit::Value(v)) => {
            let (found, want) = if check == "RLIMIT_NOFILE" { (v.to_string(), min.to_string()) } else { (human(v), human(min)) };
            let message = format!("soft limit {found} (want >= {want}): {fix}");
            // glommio refuses to start below 512 KiB ("MemLockLimit(65536/524288)"); few files only slow RocksDB down.
            if check == "RLIMIT_MEMLOCK" { HostOutcome::Fatal(message) } else { HostOutcome::Warn(message) }
        }
    };
    HostCheck { check, outcome }
}

/// `kernel.io_uring_disabled`: 0 all allowed, 1 only members of `kernel.io_uring_group`, 2 none.
fn io_uring_allowed(value: Option<&str>) -> HostCheck {
    let check = "kernel.io_uring_disabled";
    let outcome = match value.map(str::trim) {
        None => HostOutcome::Ok("absent (kernel before 6.6: io_uring allowed)".into()),
        Some("0") => HostOutcome::Ok("0 (io_uring allowed)".into()),
        Some("1") => HostOutcome::Warn(
            "1: io_uring only for members of kernel.io_uring_group; add the pqdag user to that group or set `sysctl kernel.io_uring_disabled=0`".into(),
        ),
        Some(v) => HostOutcome::Fatal(format!("{v}: io_uring is disabled for everyone: `sysctl kernel.io_uring_disabled=0`")),
    };
    HostCheck { check, outcome }
}

/// (cpu name, governor) for every CPU that has cpufreq.
fn read_governors(cpu_dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(cpu_dir) else { return Vec::new() };
    let mut out: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_cpu = name.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_cpu {
                return None;
            }
            let g = std::fs::read_to_string(e.path().join("cpufreq/scaling_governor")).ok()?;
            Some((name, g.trim().to_string()))
        })
        .collect();
    out.sort_by_key(|(n, _)| n[3..].parse::<u32>().unwrap_or(u32::MAX));
    out
}

fn governor(governors: &[(String, String)]) -> HostCheck {
    let check = "cpu scaling_governor";
    let outcome = if governors.is_empty() {
        HostOutcome::Skipped("no /sys/devices/system/cpu/cpu*/cpufreq (VM or container): nothing to tune".into())
    } else {
        let slow: Vec<String> = governors.iter().filter(|(_, g)| g != "performance").map(|(c, g)| format!("{c}={g}")).collect();
        if slow.is_empty() {
            HostOutcome::Ok(format!("performance on all {} CPUs", governors.len()))
        } else {
            HostOutcome::Warn(format!(
                "{} (want performance): `cpupower frequency-set -g performance`, or `echo performance | tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor`",
                slow.join(" ")
            ))
        }
    };
    HostCheck { check, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max open files            1024                 1048576              files     \n\
Max locked memory         65536                65536                bytes     \n\
Max stack size            unlimited            unlimited            bytes     \n";

    #[test]
    fn soft_limits_parse() {
        assert_eq!(parse_soft_limit(LIMITS, "Max open files"), Some(Limit::Value(1024)));
        assert_eq!(parse_soft_limit(LIMITS, "Max locked memory"), Some(Limit::Value(65536)));
        assert_eq!(parse_soft_limit(LIMITS, "Max stack size"), Some(Limit::Unlimited));
        assert_eq!(parse_soft_limit(LIMITS, "Max nothing"), None);
    }

    #[test]
    fn low_limits_warn_and_high_ones_pass() {
        let c = limit_min("RLIMIT_MEMLOCK", Some(LIMITS), "Max locked memory", MEMLOCK_MIN, "fix");
        assert!(matches!(&c.outcome, HostOutcome::Fatal(m) if m.contains("64 KiB") && m.contains("512 KiB")), "{c:?}");
        let c = limit_min("RLIMIT_NOFILE", Some(LIMITS), "Max open files", NOFILE_MIN, "fix");
        assert!(matches!(&c.outcome, HostOutcome::Warn(m) if m.contains("1024") && m.contains("65536")), "{c:?}");
        let c = limit_min("RLIMIT_STACK", Some(LIMITS), "Max stack size", 1, "fix");
        assert_eq!(c.outcome, HostOutcome::Ok("unlimited".into()));
        let c = limit_min("RLIMIT_NOFILE", None, "Max open files", NOFILE_MIN, "fix");
        assert!(matches!(c.outcome, HostOutcome::Skipped(_)));
    }

    #[test]
    fn sysctl_thresholds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("rmem_max");
        std::fs::write(&p, "212992\n").expect("write");
        assert!(matches!(sysctl_min("net.core.rmem_max", &p, SOCKET_BUFFER_MIN).outcome, HostOutcome::Warn(_)));
        std::fs::write(&p, "16777216\n").expect("write");
        assert_eq!(sysctl_min("net.core.rmem_max", &p, SOCKET_BUFFER_MIN).outcome, HostOutcome::Ok("16 MiB".into()));
        assert!(matches!(sysctl_min("x", &dir.path().join("absent"), 1).outcome, HostOutcome::Skipped(_)));
    }

    #[test]
    fn governors_and_io_uring() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (cpu, g) in [("cpu0", "performance"), ("cpu1", "powersave"), ("cpufreq", "x")] {
            std::fs::create_dir_all(dir.path().join(cpu).join("cpufreq")).expect("mkdir");
            std::fs::write(dir.path().join(cpu).join("cpufreq/scaling_governor"), format!("{g}\n")).expect("write");
        }
        let g = read_governors(dir.path());
        assert_eq!(g, vec![("cpu0".to_string(), "performance".to_string()), ("cpu1".to_string(), "powersave".to_string())]);
        assert!(matches!(&governor(&g).outcome, HostOutcome::Warn(m) if m.starts_with("cpu1=powersave")));
        assert!(matches!(governor(&g[..1]).outcome, HostOutcome::Ok(_)));
        assert!(matches!(governor(&[]).outcome, HostOutcome::Skipped(_)));
        assert!(matches!(io_uring_allowed(Some("0\n")).outcome, HostOutcome::Ok(_)));
        assert!(matches!(io_uring_allowed(None).outcome, HostOutcome::Ok(_)));
        assert!(matches!(io_uring_allowed(Some("2")).outcome, HostOutcome::Fatal(_)));
    }

    #[test]
    fn check_host_returns_only_warnings() {
        // Whatever this machine's settings, check_host is the Warn and Fatal subset of host_checks.
        let checks = host_checks();
        let warns = checks.iter().filter(|c| matches!(c.outcome, HostOutcome::Warn(_))).count();
        let fatal = checks.iter().filter(|c| matches!(c.outcome, HostOutcome::Fatal(_))).count();
        let got = check_host();
        assert_eq!((got.len(), got.iter().filter(|w| w.fatal).count()), (warns + fatal, fatal));
    }
}
