//! `engine run --config F --check-config [--check-peers]`: everything that can be checked before
//! starting a node, without starting it. Each check prints one line (`ok`, `warn`, `FAIL`, `skip`);
//! any `FAIL` makes the command exit non-zero. Host tuning warnings do not (except the two that
//! stop glommio: memlock below 512 KiB, io_uring disabled).

use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::config::NodeConfig;
use crate::host_tuning::{host_checks, HostOutcome};

/// Outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Passed.
    Ok,
    /// Works, but should be fixed (host tuning).
    Warn,
    /// The node would not start or not work.
    Fail,
    /// Could not be checked (an earlier check failed, or not applicable).
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// Ok, warn, fail or skip.
    pub status: Status,
    /// What was checked.
    pub what: String,
    /// What was found.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        write!(f, "{tag} {:<30} {}", self.what, self.detail)
    }
}

/// All checks, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The lines.
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, status: Status, what: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check { status, what: what.into(), detail: detail.into() });
    }

    /// Number of failed checks.
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Warn).count()
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| e.to_string())?.collect();
    if addrs.is_empty() {
        return Err("no address".into());
    }
    Ok(addrs)
}

fn in_use_hint(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!("{e} (is the node already running?)"),
        std::io::ErrorKind::AddrNotAvailable => format!("{e} (the address is not on this host)"),
        std::io::ErrorKind::PermissionDenied => format!("{e} (ports below 1024 need privileges)"),
        _ => e.to_string(),
    }
}

/// Binds and releases a UDP socket.
fn udp_free(addr: SocketAddr) -> Result<(), String> {
    UdpSocket::bind(addr).map(drop).map_err(|e| in_use_hint(&e))
}

/// Binds and releases a TCP listener.
fn tcp_free(addr: SocketAddr) -> Result<(), String> {
    TcpListener::bind(addr).map(drop).map_err(|e| in_use_hint(&e))
}

/// Sends one empty datagram from a connected UDP socket and waits `wait` for an ICMP error.
/// Linux reports "port unreachable" on a connected socket as ECONNREFUSED: nothing listens there.
/// No error means something listens or a firewall drops silently: inconclusive. QUIC endpoints
/// drop a datagram this short before any processing, so peers do not count it against us.
pub fn udp_probe(addr: SocketAddr, wait: Duration) -> Result<String, String> {
    let local: SocketAddr = if addr.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) };
    let sock = UdpSocket::bind(local).map_err(|e| format!("local socket: {e}"))?;
    sock.connect(addr).map_err(|e| format!("no route: {e}"))?;
    let via = sock.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    sock.send(&[]).map_err(|e| format!("send: {e}"))?;
    sock.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match sock.recv(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!("port unreachable (ICMP): nothing listens on {addr}; is the node running?")),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            Ok(format!("route via {via}, no ICMP refusal within {} ms (listening, or filtered)", wait.as_millis()))
        }
        Err(e) => Err(e.to_string()),
        Ok(_) => Ok(format!("route via {via}, answered")),
    }
}

/// Runs every check for the node config at `config_path`. With `check_peers`, also resolves and
/// probes every other member's peer port (see [`udp_probe`]).
pub fn check_config(config_path: &Path, check_peers: bool) -> Report {
    let mut r = Report::default();
    let cfg = match NodeConfig::load(config_path) {
        Ok(c) => {
            r.push(Status::Ok, "config file", format!("{} (node {})", config_path.display(), c.name));
            c
        }
        Err(e) => {
            r.push(Status::Fail, "config file", e.to_string());
            return r;
        }
    };
    let (cluster, me, keypair) = match cfg.resolve(config_path) {
        Ok(x) => x,
        Err(e) => {
            r.push(Status::Fail, "cluster file and key", e.to_string());
            host(&mut r);
            return r;
        }
    };
    r.push(Status::Ok, "cluster file", format!("{}: {} nodes, {} shard(s)", cfg.cluster.display(), cluster.nodes.len(), cluster.shards));
    r.push(
        Status::Ok,
        "key matches cluster file",
        format!("{} is member {me} ({}), node id {}", key_file(&cfg.key_dir).display(), cfg.name, hex::encode(keypair.public().node_id())),
    );
    key_permissions(&mut r, &key_file(&cfg.key_dir));
    match crate::runtime::params_for(&cluster) {
        Ok(p) => r.push(Status::Ok, "consensus parameters", format!("k={} alpha={} beta={} poll every {} ms, batch linger {} ms, query_timeout={} ms", p.sample_size, p.alpha, p.beta, p.poll_interval_us / 1000, p.batch_linger_us / 1000, p.query_timeout_us / 1000)),
        Err(e) => r.push(Status::Fail, "consensus parameters", e.to_string()),
    }
    r.push(Status::Ok, "shards", format!("{} per node (one pinned executor and one peer port each)", cluster.shards));
    cores(&mut r, &cfg.cores, cluster.shards);
    data_dir(&mut r, &cfg.data_dir);

    // Own addresses: the advertised host is on this machine; every port is free.
    let own = &cluster.nodes[me];
    match resolve(&own.host, own.base_port) {
        Ok(addrs) => {
            let local = addrs.iter().any(|a| UdpSocket::bind(SocketAddr::new(a.ip(), 0)).is_ok());
            if local {
                r.push(Status::Ok, "advertised host", format!("{} -> {} is an address of this host", own.host, addrs[0].ip()));
            } else {
                r.push(Status::Warn, "advertised host", format!("{} -> {} is not an address of this host (fine behind NAT if listen_host = \"0.0.0.0\" and the port is forwarded)", own.host, addrs[0].ip()));
            }
        }
        Err(e) => r.push(Status::Fail, "advertised host", format!("{}: {e}", own.host)),
    }
    let bind_base = cfg.bind_base_port.unwrap_or(own.base_port);
    for s in 0..cluster.shards {
        let Some(port) = bind_base.checked_add(s) else {
            r.push(Status::Fail, format!("peer port shard {s}"), format!("{bind_base} + {s} exceeds 65535"));
            continue;
        };
        let what = format!("peer port udp {}:{port}", cfg.listen_host);
        match resolve(&cfg.listen_host, port) {
            Ok(a) => match udp_free(a[0]) {
                Ok(()) => r.push(Status::Ok, what, format!("{} free", a[0])),
                Err(e) => r.push(Status::Fail, what, e),
            },
            Err(e) => r.push(Status::Fail, what, format!("listen_host {:?}: {e}", cfg.listen_host)),
        }
    }
    match udp_free(cfg.client_addr) {
        Ok(()) => r.push(Status::Ok, "client port udp", format!("{} free", cfg.client_addr)),
        Err(e) => r.push(Status::Fail, "client port udp", format!("{}: {e}", cfg.client_addr)),
    }
    match cfg.client_public_keys() {
        Ok(k) if k.is_empty() => r.push(Status::Warn, "client keys", "client_keys is empty: the client API refuses every client"),
        Ok(k) => r.push(Status::Ok, "client keys", format!("{} accepted client key(s)", k.len())),
        Err(e) => r.push(Status::Fail, "client keys", e.to_string()),
    }
    match tcp_free(cfg.metrics_addr) {
        Ok(()) => r.push(Status::Ok, "metrics port tcp", format!("{} free", cfg.metrics_addr)),
        Err(e) => r.push(Status::Fail, "metrics port tcp", format!("{}: {e}", cfg.metrics_addr)),
    }

    if check_peers {
        for (i, n) in cluster.nodes.iter().enumerate().filter(|(i, _)| *i != me) {
            for s in 0..cluster.shards {
                let what = format!("peer {} (#{i}) shard {s}", n.name);
                let addr = match resolve(&n.host, n.base_port + s) {
                    Ok(a) => a[0],
                    Err(e) => {
                        r.push(Status::Fail, what, format!("{}:{}: {e}", n.host, n.base_port + s));
                        continue;
                    }
                };
                match udp_probe(addr, Duration::from_millis(300)) {
                    Ok(detail) => r.push(Status::Ok, what, format!("{}:{} -> {addr}: {detail}", n.host, n.base_port + s)),
                    // A stopped peer is not a config error: the cluster runs without a minority.
                    Err(detail) => r.push(Status::Warn, what, format!("{}:{} -> {addr}: {detail}", n.host, n.base_port + s)),
                }
            }
        }
        r.push(
            Status::Ok,
            "peer check scope",
            "resolved each peer and probed its UDP port for an ICMP refusal; QUIC handshake and key binding are only proven by a running node (/status peers_connected)",
        );
    }
    host(&mut r);
    r
}

/// `engine run --check-config`: prints every check to stdout, one line each. `Ok` with a summary
/// when nothing failed (warnings allowed), else `Err` with the count (the binary exits 1).
pub fn run_check(config_path: &Path, check_peers: bool) -> Result<String, String> {
    let r = check_config(config_path, check_peers);
    for c in &r.checks {
        println!("{c}");
    }
    match r.failures() {
        0 => Ok(format!("config check passed ({} checks, {} warnings); the node was not started", r.checks.len(), r.warnings())),
        n => Err(format!("config check failed: {n} of {} checks failed", r.checks.len())),
    }
}

fn host(r: &mut Report) {
    for c in host_checks() {
        let what = format!("host {}", c.check);
        match c.outcome {
            HostOutcome::Ok(d) => r.push(Status::Ok, what, d),
            HostOutcome::Warn(d) => r.push(Status::Warn, what, d),
            HostOutcome::Fatal(d) => r.push(Status::Fail, what, format!("{d} (the node cannot start with this)")),
            HostOutcome::Skipped(d) => r.push(Status::Skip, what, d),
        }
    }
}

/// `key_dir/node.key`, without a `./` in the middle for display.
fn key_file(key_dir: &Path) -> std::path::PathBuf {
    key_dir.components().collect::<std::path::PathBuf>().join("node.key")
}

fn key_permissions(r: &mut Report, key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(key) {
        Ok(m) if m.permissions().mode() & 0o077 == 0 => r.push(Status::Ok, "key file mode", format!("{:o}", m.permissions().mode() & 0o777)),
        Ok(m) => r.push(Status::Warn, "key file mode", format!("{:o}: readable by group/others; `chmod 600 {}`", m.permissions().mode() & 0o777, key.display())),
        Err(e) => r.push(Status::Fail, "key file mode", e.to_string()),
    }
}

fn cores(r: &mut Report, cores: &[usize], shards: u16) {
    if cores.is_empty() {
        r.push(Status::Ok, "cores", "not pinned (cores = [])");
        return;
    }
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").ok().map(|t| parse_cpu_list(&t));
    if cores.len() < usize::from(shards) {
        r.push(Status::Warn, "cores", format!("{} cores listed for {shards} shards: the rest run unpinned", cores.len()));
    }
    match online {
        Some(online) => {
            let missing: Vec<String> = cores.iter().filter(|c| !online.contains(c)).map(ToString::to_string).collect();
            if missing.is_empty() {
                r.push(Status::Ok, "cores", format!("{cores:?} online"));
            } else {
                r.push(Status::Fail, "cores", format!("core(s) {} not online (/sys/devices/system/cpu/online)", missing.join(",")));
            }
        }
        None => r.push(Status::Skip, "cores", "/sys/devices/system/cpu/online not readable"),
    }
}

/// `0-3,6,8-9` -> [0,1,2,3,6,8,9].
fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

fn data_dir(r: &mut Report, dir: &Path) {
    let what = "data dir writable";
    if let Err(e) = std::fs::create_dir_all(dir) {
        r.push(Status::Fail, what, format!("{}: {e}", dir.display()));
        return;
    }
    let probe = dir.join(format!(".pqdag-check-{}", std::process::id()));
    match std::fs::write(&probe, b"x").and_then(|()| std::fs::remove_file(&probe)) {
        Ok(()) => r.push(Status::Ok, what, dir.display().to_string()),
        Err(e) => r.push(Status::Fail, what, format!("{}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;
    use crate::testnet::{write_testnet, TestnetSpec};

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6,8-9\n"), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
    }

    #[test]
    fn good_testnet_passes_and_problems_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = TestnetSpec { nodes: 3, dir: dir.path().to_path_buf(), base_port: 41700, shards: 1, sync: SyncMode::WalNoSync };
        let configs = write_testnet(&spec).expect("testnet");
        let r = check_config(&configs[0], true);
        // (Host checks depend on the machine running the test: not asserted here.)
        let failed = r.checks.iter().filter(|c| c.status == Status::Fail && !c.what.starts_with("host ")).count();
        assert_eq!(failed, 0, "{:#?}", r.checks);
        // Nobody listens on the peers' ports: the probe says so (a warning, not a failure).
        assert!(r.checks.iter().any(|c| c.what.starts_with("peer node-1") && c.status == Status::Warn && c.detail.contains("unreachable")), "{:#?}", r.checks);

        // A port in use fails, naming the likely cause.
        let cfg = NodeConfig::load(&configs[0]).expect("load");
        let held = TcpListener::bind(cfg.metrics_addr).expect("hold metrics port");
        let r = check_config(&configs[0], false);
        assert!(r.checks.iter().any(|c| c.what == "metrics port tcp" && c.status == Status::Fail && c.detail.contains("already running")), "{:#?}", r.checks);
        drop(held);

        // A key that is not the cluster file's fails.
        let mut cfg = NodeConfig::load(&configs[0]).expect("load");
        cfg.key_dir = dir.path().join("node-1");
        cfg.save(&configs[0]).expect("save");
        let r = check_config(&configs[0], false);
        assert!(r.failures() > 0 && r.checks.iter().any(|c| c.detail.contains("not the key")), "{:#?}", r.checks);

        // A missing config fails at the first line.
        let r = check_config(&dir.path().join("absent.toml"), false);
        assert_eq!((r.checks.len(), r.failures()), (1, 1));
    }

    #[test]
    fn invalid_parameters_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = TestnetSpec { nodes: 3, dir: dir.path().to_path_buf(), base_port: 41800, shards: 1, sync: SyncMode::WalNoSync };
        let configs = write_testnet(&spec).expect("testnet");
        let path = dir.path().join("cluster.toml");
        let mut c = crate::ClusterFile::load(&path).expect("cluster");
        c.params.finalization_threshold = 1.5;
        c.save(&path).expect("save");
        let r = check_config(&configs[1], false);
        assert!(r.checks.iter().any(|c| c.what == "consensus parameters" && c.status == Status::Fail), "{:#?}", r.checks);
    }
}
