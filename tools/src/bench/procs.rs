//! Child processes that cannot outlive the benchmark, and what `/proc` says about them and the
//! machine.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How a child ended when it was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Exited 0 after SIGTERM within the grace period.
    Clean,
    /// Exited with this non-zero code.
    Code(i32),
    /// Ended by this signal (not our SIGKILL).
    Signal(i32),
    /// Still running after the grace period: SIGKILLed.
    Killed,
    /// Had already exited before the stop (with this description).
    AlreadyExited(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Clean => write!(f, "clean exit 0"),
            Ending::Code(c) => write!(f, "exit code {c}"),
            Ending::Signal(s) => write!(f, "ended by signal {s}"),
            Ending::Killed => write!(f, "did not stop in time: SIGKILLed"),
            Ending::AlreadyExited(s) => write!(f, "had already exited ({s})"),
        }
    }
}

/// The outcome of stopping one child.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// Child name.
    pub name: String,
    /// How it ended.
    pub ending: Ending,
    /// Seconds from SIGTERM to exit (or to SIGKILL).
    pub seconds: f64,
}

/// One supervised child.
pub struct Proc {
    /// Name (`node-3`, `loadgen`).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Killed on purpose (`kill9`) and not started again yet: not reported by `exited`.
    pub down: bool,
}

/// A set of children that are SIGTERMed (then SIGKILLed) when the set is dropped, so an error or
/// a panic in the driver leaves no orphan. Each child also gets `PR_SET_PDEATHSIG` = SIGTERM, so
/// even a SIGKILLed driver takes its children down.
#[derive(Default)]
pub struct Children {
    procs: Vec<Proc>,
    /// Grace period between SIGTERM and SIGKILL when dropped.
    pub grace: Duration,
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

impl Children {
    /// An empty set with a grace period.
    pub fn new(grace: Duration) -> Self {
        Children { procs: Vec::new(), grace }
    }

    /// Spawns `cmd` with stdout and stderr appended to `log` and stdin closed.
    pub fn spawn(&mut self, name: &str, cmd: Command, log: &Path) -> std::io::Result<u32> {
        let p = Self::start(name, cmd, log)?;
        let pid = p.child.id();
        self.procs.push(p);
        Ok(pid)
    }

    /// SIGKILLs the `i`th child and reaps it (a crash, on purpose); `exited` ignores it until
    /// it is started again with [`Self::respawn`].
    pub fn kill9(&mut self, i: usize) -> std::io::Result<()> {
        let p = self.procs.get_mut(i).ok_or_else(|| std::io::Error::other(format!("no child {i}")))?;
        p.child.kill()?;
        p.child.wait()?;
        p.down = true;
        Ok(())
    }

    /// Starts `cmd` in place of the `i`th child (after [`Self::kill9`]), logging to the same file.
    pub fn respawn(&mut self, i: usize, cmd: Command) -> std::io::Result<u32> {
        let (name, log) = match self.procs.get(i) {
            Some(p) => (p.name.clone(), p.log.clone()),
            None => return Err(std::io::Error::other(format!("no child {i}"))),
        };
        let p = Self::start(&name, cmd, &log)?;
        let pid = p.child.id();
        self.procs[i] = p;
        Ok(pid)
    }

    fn start(name: &str, mut cmd: Command, log: &Path) -> std::io::Result<Proc> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Proc { name: name.to_string(), child, log: log.to_path_buf(), down: false })
    }

    /// The children, in spawn order.
    pub fn procs(&self) -> &[Proc] {
        &self.procs
    }

    /// Children that have exited on their own: (name, status description, log).
    pub fn exited(&mut self) -> Vec<(String, String, PathBuf)> {
        let mut out = Vec::new();
        for p in &mut self.procs {
            if p.down {
                continue;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                out.push((p.name.clone(), describe(st), p.log.clone()));
            }
        }
        out
    }

    /// Whether the `i`th child has exited; its status if so.
    pub fn try_wait(&mut self, i: usize) -> Option<ExitStatus> {
        self.procs.get_mut(i).and_then(|p| p.child.try_wait().ok().flatten())
    }

    /// SIGTERMs every child still running, waits up to `grace` for all of them, SIGKILLs the
    /// rest, reaps everything. The set is empty afterwards.
    pub fn stop_all(&mut self, grace: Duration) -> Vec<Stopped> {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for p in self.procs.drain(..) {
            let mut p = p;
            match p.child.try_wait() {
                Ok(Some(st)) => out.push(Stopped { name: p.name, ending: Ending::AlreadyExited(describe(st)), seconds: 0.0 }),
                _ => {
                    // SAFETY: plain kill(2) on our own child's pid (not yet reaped, so not reused).
                    unsafe {
                        libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
                    }
                    pending.push(p);
                }
            }
        }
        let t0 = Instant::now();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for mut p in pending {
                match p.child.try_wait() {
                    Ok(Some(st)) => {
                        use std::os::unix::process::ExitStatusExt;
                        let ending = match (st.code(), st.signal()) {
                            (Some(0), _) => Ending::Clean,
                            (Some(c), _) => Ending::Code(c),
                            (None, Some(s)) => Ending::Signal(s),
                            _ => Ending::Code(-1),
                        };
                        out.push(Stopped { name: p.name, ending, seconds: t0.elapsed().as_secs_f64() });
                    }
                    Ok(None) if t0.elapsed() < grace => still.push(p),
                    _ => {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        out.push(Stopped { name: p.name, ending: Ending::Killed, seconds: t0.elapsed().as_secs_f64() });
                    }
                }
            }
            pending = still;
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        out
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        if self.procs.is_empty() {
            return;
        }
        for s in self.stop_all(self.grace) {
            if matches!(s.ending, Ending::AlreadyExited(_)) {
                continue;
            }
            eprintln!("bench: stopped {}: {} after {:.1} s", s.name, s.ending, s.seconds);
        }
    }
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// CPU milliseconds (user + system) and resident bytes of a process, from `/proc/PID/stat` and
/// `/proc/PID/statm`. `None` once it is gone.
pub fn proc_cpu_rss(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as f64;
    Some((ticks * 1000.0 / clock_ticks(), pages * page))
}

/// Machine-wide CPU time from `/proc/stat`: (busy ms, total ms) summed over all CPUs.
pub fn machine_cpu_ms() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is already inside user)
    let total: f64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    let k = 1000.0 / clock_ticks();
    Some(((total - idle) * k, total * k))
}

/// What the report says about the machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MachineInfo {
    /// CPUs this process may use.
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPU flags of note (avx2, avx512f) present.
    pub cpu_flags: Vec<String>,
    /// `MemTotal`, bytes.
    pub mem_total_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the benchmark started.
    pub loadavg_1m_at_start: f64,
    /// Host name.
    pub hostname: String,
}

/// Reads [`MachineInfo`].
pub fn machine_info() -> MachineInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let cpu_flags = ["avx2", "avx512f", "bmi2", "sha_ni"].iter().filter(|f| flags.split_whitespace().any(|x| x == **f)).map(|f| f.to_string()).collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    MachineInfo {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model: field("model name"),
        cpu_flags,
        mem_total_bytes: mem_kb * 1024,
        kernel: read("/proc/sys/kernel/osrelease"),
        loadavg_1m_at_start: read("/proc/loadavg").split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0),
        hostname: read("/proc/sys/kernel/hostname"),
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) for now.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Whether node `i` of a testnet at `base` could bind its ports now (peer UDP `base+20i`, client
/// and metrics TCP `base+20i+18`, `+19`).
pub fn testnet_ports_free(base: u16, nodes: usize) -> bool {
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};
    (0..nodes).all(|i| {
        let b = u32::from(base) + 20 * i as u32;
        if b + 19 > 65535 {
            return false;
        }
        let b = b as u16;
        UdpSocket::bind((Ipv4Addr::LOCALHOST, b)).is_ok() && TcpListener::bind((Ipv4Addr::LOCALHOST, b + 18)).is_ok() && TcpListener::bind((Ipv4Addr::LOCALHOST, b + 19)).is_ok()
    })
}

/// The last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape_and_self_reading() {
        let t = timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert!(t.starts_with("20"));
        let (cpu, rss) = proc_cpu_rss(std::process::id()).expect("own /proc");
        assert!(cpu >= 0.0 && rss > 0.0);
        assert!(machine_cpu_ms().is_some());
    }

    #[test]
    fn children_are_stopped_on_drop() {
        let dir = std::env::temp_dir().join(format!("bench-children-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pid;
        {
            let mut c = Children::new(Duration::from_secs(5));
            let mut cmd = Command::new("sleep");
            cmd.arg("60");
            pid = c.spawn("sleeper", cmd, &dir.join("s.log")).expect("spawn");
            assert!(proc_cpu_rss(pid).is_some());
        }
        assert!(proc_cpu_rss(pid).is_none(), "child survived the guard");
        let mut c = Children::new(Duration::from_millis(200));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; sleep 30"]);
        c.spawn("stubborn", cmd, &dir.join("t.log")).expect("spawn");
        std::thread::sleep(Duration::from_millis(100));
        let s = c.stop_all(Duration::from_millis(300));
        assert_eq!(s[0].ending, Ending::Killed);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
