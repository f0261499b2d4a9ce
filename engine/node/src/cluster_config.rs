//! `engine cluster-config`: the files of a cluster spread over several hosts, from a list of hosts.
//!
//! Input: one host per line (`host`, `host:port`, `[v6]:port`, optionally `name=` in front;
//! `#` comments), or a TOML file `hosts = ["host", "host:port", ...]`. Output in `DIR`:
//!
//! ```text
//! DIR/cluster.toml              public keys only: the same file on every host
//! DIR/<name>/config.toml        this node's config (paths relative to itself)
//! DIR/<name>/cluster.toml       a copy of DIR/cluster.toml, so the folder is self-contained
//! DIR/<name>/node.key           secret key, 0600: copied to that host only, never elsewhere
//! DIR/<name>/node.pub
//! ```
//!
//! Each `DIR/<name>/` is copied to its host (as `/etc/pqdag/`, see docs/operations.md).
//!
//! Re-running with an edited hosts file reconciles instead of starting over: nodes already in
//! `DIR/cluster.toml` (matched by name, else by endpoint) keep their key, name and order, new hosts
//! are appended with fresh keys, hosts no longer listed are dropped from the cluster file (their
//! folders are left alone). Parameters and shard count of an existing cluster file are kept.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use pqdag_crypto::identity;

use crate::config::{ClusterFile, ClusterNode, ConfigError, NodeConfig, ParamsFile, SyncMode};
use crate::testnet::{keygen, PORT_STRIDE};

/// One line of the hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    /// `name=` prefix, if given (else `node-<i>` is chosen).
    pub name: Option<String>,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// `:port`, if given (else `--base-port`).
    pub port: Option<u16>,
}

/// Options of `engine cluster-config`.
#[derive(Debug, Clone)]
pub struct ClusterConfigSpec {
    /// The hosts file.
    pub hosts_file: PathBuf,
    /// Output folder.
    pub dir: PathBuf,
    /// Peer UDP port of hosts listed without one; client API = +18, metrics = +19.
    pub base_port: u16,
    /// Bind address of every node; default: the host itself if it is an IP, else `0.0.0.0`.
    pub listen_host: Option<String>,
    /// Bind address of the client API of a new node; default loopback (`127.0.0.1`, or the
    /// host itself when it is a loopback address): clients on other hosts need it set
    /// explicitly (and their keys in `client_keys`).
    pub client_host: Option<IpAddr>,
    /// `data_dir` written into every config (relative = beside the config).
    pub data_dir: PathBuf,
    /// Store sync policy of every node.
    pub sync: SyncMode,
    /// Shards per node of a new cluster (default 1); an existing cluster keeps its count.
    pub shards: Option<u16>,
}

/// What `write_cluster_config` did.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfigReport {
    /// Node folders written (new nodes), as `DIR/<name>`.
    pub created: Vec<PathBuf>,
    /// Nodes kept from an existing cluster file (key and name unchanged).
    pub kept: Vec<String>,
    /// Nodes dropped from the cluster file (no longer in the hosts file).
    pub removed: Vec<String>,
    /// The cluster file.
    pub cluster_file: PathBuf,
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), message: message.into() }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsToml {
    hosts: Vec<String>,
}

/// Parses a hosts file (line format or TOML `hosts = [...]`). `path` is for messages.
pub fn parse_hosts(text: &str, path: &Path) -> Result<Vec<HostEntry>, ConfigError> {
    let is_toml = text.lines().any(|l| {
        let l = l.trim_start();
        l.strip_prefix("hosts").is_some_and(|r| r.trim_start().strip_prefix('=').is_some_and(|r| r.trim_start().starts_with('[')))
    });
    let lines: Vec<(usize, String)> = if is_toml {
        let t: HostsToml = toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        t.hosts.into_iter().enumerate().map(|(i, h)| (i + 1, h)).collect()
    } else {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim().to_string()))
            .filter(|(_, l)| !l.is_empty())
            .collect()
    };
    let mut out = Vec::with_capacity(lines.len());
    for (line, entry) in lines {
        out.push(parse_entry(entry.trim()).map_err(|m| invalid(path, format!("{} {line}: {entry:?}: {m}", if is_toml { "entry" } else { "line" })))?);
    }
    if out.is_empty() {
        return Err(invalid(path, "no hosts"));
    }
    Ok(out)
}

fn parse_entry(entry: &str) -> Result<HostEntry, String> {
    let (name, rest) = match entry.split_once('=') {
        Some((n, r)) => (Some(n.trim().to_string()), r.trim()),
        None => (None, entry),
    };
    if let Some(n) = &name {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || n.starts_with('.') {
            return Err(format!("name {n:?}: use letters, digits, '-', '_', '.' (it becomes a folder name)"));
        }
    }
    let port = |p: &str| p.parse::<u16>().map_err(|e| format!("port {p:?}: {e}")).and_then(|p| if p == 0 { Err("port 0".to_string()) } else { Ok(p) });
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("missing ']'")?;
        match after {
            "" => (h.to_string(), None),
            a => (h.to_string(), Some(port(a.strip_prefix(':').ok_or("expected ':port' after ']'")?)?)),
        }
    } else if rest.parse::<IpAddr>().is_ok() {
        (rest.to_string(), None) // bare IPv6 (or IPv4) without a port
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(port(p)?)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) || (host.contains(':') && host.parse::<IpAddr>().is_err()) {
        return Err(format!("host {host:?} is not a host name or IP"));
    }
    Ok(HostEntry { name, host, port })
}

/// The client API's default bind address: loopback only. A host that is itself a loopback
/// address (several nodes on one machine, as in the operations walkthrough on 127.0.0.2-5) binds
/// its own: on 127.0.0.1 they would all share one port (glommio binds with SO_REUSEPORT), and
/// a client would reach whichever node the kernel picked.
fn default_client_ip(host: &str) -> IpAddr {
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => ip,
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

/// The address a node binds to, from its advertised host.
fn bind_ip(listen_host: &str) -> IpAddr {
    listen_host.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Writes (or reconciles) `DIR/cluster.toml` and one folder per new host. See the module doc.
pub fn write_cluster_config(spec: &ClusterConfigSpec) -> Result<ClusterConfigReport, ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    let text = std::fs::read_to_string(&spec.hosts_file).map_err(io(&spec.hosts_file))?;
    let hosts = parse_hosts(&text, &spec.hosts_file)?;
    if hosts.len() > 1000 {
        return Err(invalid(&spec.hosts_file, format!("{} hosts (at most 1000)", hosts.len())));
    }
    let cluster_path = spec.dir.join("cluster.toml");
    let existing = if cluster_path.exists() { Some(ClusterFile::load(&cluster_path)?) } else { None };
    let shards = match (&existing, spec.shards) {
        (Some(c), Some(n)) if n != c.shards => {
            return Err(invalid(&cluster_path, format!("has {} shards per node; --shards {n} cannot change an existing cluster (every store is split by shard)", c.shards)));
        }
        (Some(c), _) => c.shards,
        (None, n) => n.unwrap_or(1),
    };
    if shards == 0 || shards > PORT_STRIDE - 2 {
        return Err(invalid(&spec.hosts_file, format!("--shards {shards} (must be 1..={}: peer ports sit below the client port, base + 18)", PORT_STRIDE - 2)));
    }
    if u32::from(spec.base_port) + u32::from(PORT_STRIDE) > 65535 {
        return Err(invalid(&spec.hosts_file, "--base-port too high: client and metrics ports are base + 18 and base + 19"));
    }

    // Match every host with an existing member (by name, else by endpoint) or mark it new.
    let mut used_names: std::collections::HashSet<String> = hosts.iter().filter_map(|h| h.name.clone()).collect();
    let old_nodes = existing.as_ref().map(|c| c.nodes.clone()).unwrap_or_default();
    let mut planned: Vec<(ClusterNode, bool)> = Vec::with_capacity(hosts.len()); // (node, is new)
    let mut endpoints = std::collections::HashSet::new();
    let mut next_index = 0usize;
    for h in &hosts {
        let base_port = h.port.unwrap_or(spec.base_port);
        if u32::from(base_port) + u32::from(PORT_STRIDE) > 65535 {
            return Err(invalid(&spec.hosts_file, format!("{}:{base_port}: port too high (client and metrics use +18 and +19)", h.host)));
        }
        if !endpoints.insert((h.host.clone(), base_port)) {
            return Err(invalid(&spec.hosts_file, format!("{}:{base_port} is listed twice (give one node per host, or distinct ports)", h.host)));
        }
        let old = match &h.name {
            Some(n) => old_nodes.iter().find(|o| &o.name == n),
            None => old_nodes.iter().find(|o| o.host == h.host && o.base_port == base_port),
        };
        let node = match old {
            Some(o) => ClusterNode { host: h.host.clone(), base_port, ..o.clone() },
            None => {
                let name = match &h.name {
                    Some(n) => n.clone(),
                    None => loop {
                        let n = format!("node-{next_index}");
                        next_index += 1;
                        if !used_names.contains(&n) && !old_nodes.iter().any(|o| o.name == n) {
                            break n;
                        }
                    },
                };
                ClusterNode { name, host: h.host.clone(), base_port, public_key: String::new() }
            }
        };
        used_names.insert(node.name.clone());
        planned.push((node, old.is_none()));
    }
    let mut report = ClusterConfigReport { cluster_file: cluster_path.clone(), ..Default::default() };
    for o in &old_nodes {
        if !planned.iter().any(|(n, _)| n.name == o.name) {
            report.removed.push(o.name.clone());
        }
    }
    // Existing members first, in their old order (their index is their peer index), then new ones.
    planned.sort_by_key(|(n, new)| (*new, old_nodes.iter().position(|o| o.name == n.name).unwrap_or(usize::MAX)));

    // New nodes: refuse to touch a folder that already holds a key (it may be a live node's).
    for (n, new) in &planned {
        let folder = spec.dir.join(&n.name);
        if *new && folder.join("node.key").exists() {
            return Err(invalid(
                &folder,
                format!("{} is new in the hosts file but {} exists: remove the folder or name the host like the existing node", n.name, folder.join("node.key").display()),
            ));
        }
    }
    std::fs::create_dir_all(&spec.dir).map_err(io(&spec.dir))?;
    let mut nodes = Vec::with_capacity(planned.len());
    for (mut n, new) in planned {
        let folder = spec.dir.join(&n.name);
        if new {
            keygen(&folder)?;
            n.public_key = hex::encode(identity::load_public_key(&folder.join("node.pub"))?.as_bytes());
            let listen_host = spec.listen_host.clone().unwrap_or_else(|| if n.host.parse::<IpAddr>().is_ok() { n.host.clone() } else { "0.0.0.0".into() });
            let ip = bind_ip(&listen_host);
            let cfg = NodeConfig {
                name: n.name.clone(),
                cluster: PathBuf::from("cluster.toml"),
                key_dir: PathBuf::from("."),
                data_dir: spec.data_dir.clone(),
                listen_host,
                bind_base_port: None,
                client_addr: SocketAddr::new(spec.client_host.unwrap_or_else(|| default_client_ip(&n.host)), n.base_port + PORT_STRIDE - 2),
                client_keys: Vec::new(),
                metrics_addr: SocketAddr::new(ip, n.base_port + PORT_STRIDE - 1),
                cores: Vec::new(),
                sync: spec.sync,
                log: "info".into(),
                log_json: false,
                spin_before_park_us: crate::config::DEFAULT_SPIN_BEFORE_PARK_US,
                turn_interval_min_us: crate::config::DEFAULT_TURN_INTERVAL_MIN_US,
                storage: Default::default(),
            };
            if spec.data_dir.is_relative() {
                std::fs::create_dir_all(folder.join(&spec.data_dir)).map_err(io(&folder))?;
            }
            cfg.save(&folder.join("config.toml"))?;
            report.created.push(folder);
        } else {
            report.kept.push(n.name.clone());
        }
        nodes.push(n);
    }
    let cluster = ClusterFile { shards, params: existing.map_or_else(ParamsFile::default, |c| c.params), nodes };
    cluster.save(&cluster_path)?;
    let cluster = ClusterFile::load(&cluster_path)?; // the same validation every node does
    // Refresh the copy in every node folder present here (new ones and kept ones).
    for n in &cluster.nodes {
        let folder = spec.dir.join(&n.name);
        if folder.join("config.toml").exists() {
            cluster.save(&folder.join("cluster.toml"))?;
        }
    }
    Ok(report)
}

/// `engine cluster-config`: writes the files and returns what to tell the operator.
pub fn run_cluster_config(spec: &ClusterConfigSpec) -> Result<String, ConfigError> {
    let r = write_cluster_config(spec)?;
    let mut msg = format!("wrote {}", r.cluster_file.display());
    for f in &r.created {
        msg.push_str(&format!("\nnew node folder {} (copy it to its host; node.key never leaves it)", f.display()));
    }
    if !r.kept.is_empty() {
        msg.push_str(&format!("\nkept (same key): {}", r.kept.join(", ")));
    }
    if !r.removed.is_empty() {
        msg.push_str(&format!("\nremoved from the cluster file: {}", r.removed.join(", ")));
    }
    if !r.kept.is_empty() {
        msg.push_str("\nan existing cluster was updated: copy cluster.toml to every host and restart the nodes one at a time (docs/operations.md)");
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: Option<&str>, host: &str, port: Option<u16>) -> HostEntry {
        HostEntry { name: name.map(Into::into), host: host.into(), port }
    }

    #[test]
    fn host_lines_parse() {
        let p = Path::new("hosts");
        let text = "# cluster A\n10.0.0.1\n10.0.0.2:7100  # second\n\nbob=db.example.com:7200\n[fd00::3]:7300\nfd00::4\n[fd00::5]\n";
        let h = parse_hosts(text, p).expect("parse");
        assert_eq!(
            h,
            vec![
                entry(None, "10.0.0.1", None),
                entry(None, "10.0.0.2", Some(7100)),
                entry(Some("bob"), "db.example.com", Some(7200)),
                entry(None, "fd00::3", Some(7300)),
                entry(None, "fd00::4", None),
                entry(None, "fd00::5", None),
            ]
        );
        let t = parse_hosts("# toml form\nhosts = [\"127.0.0.2\", \"a=127.0.0.3:7001\"]\n", p).expect("toml");
        assert_eq!(t, vec![entry(None, "127.0.0.2", None), entry(Some("a"), "127.0.0.3", Some(7001))]);
        for bad in ["", "# only comments\n", "host:notaport", "host:0", "a b", "../x=host", "[fd00::1:7000", "fd00::zz:1:2"] {
            assert!(parse_hosts(bad, p).is_err(), "{bad:?} accepted");
        }
        let err = parse_hosts("10.0.0.1\n10.0.0.2:99999\n", p).expect_err("bad port");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    fn spec(dir: &Path, hosts: &str) -> ClusterConfigSpec {
        let hosts_file = dir.join("hosts.txt");
        std::fs::write(&hosts_file, hosts).expect("write hosts");
        ClusterConfigSpec {
            hosts_file,
            dir: dir.join("out"),
            base_port: 7000,
            listen_host: None,
            client_host: None,
            data_dir: PathBuf::from("data"),
            sync: SyncMode::ByClass,
            shards: None,
        }
    }

    #[test]
    fn writes_resolvable_folders_and_reconciles() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = spec(tmp.path(), "127.0.0.2\n127.0.0.3\nhost.example:7100\n");
        let r = write_cluster_config(&s).expect("write");
        assert_eq!(r.created.len(), 3);
        let cluster = ClusterFile::load(&s.dir.join("cluster.toml")).expect("cluster");
        assert_eq!(cluster.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["node-0", "node-1", "node-2"]);
        assert_eq!(cluster.nodes[2].base_port, 7100);
        for (i, n) in cluster.nodes.iter().enumerate() {
            let path = s.dir.join(&n.name).join("config.toml");
            let cfg = NodeConfig::load(&path).expect("config");
            let (c, index, _kp) = cfg.resolve(&path).expect("resolve");
            assert_eq!((index, &c), (i, &cluster));
            // The secret key never enters the cluster file, and is private.
            let text = std::fs::read_to_string(s.dir.join("cluster.toml")).expect("read");
            assert!(!text.contains("secret") && text.contains(&n.public_key));
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.dir.join(&n.name).join("node.key")).expect("key").permissions().mode();
            assert_eq!(mode & 0o077, 0, "node.key readable by others");
        }
        let c0 = NodeConfig::load(&s.dir.join("node-0/config.toml")).expect("c0");
        assert_eq!((c0.listen_host.as_str(), c0.metrics_addr.to_string().as_str()), ("127.0.0.2", "127.0.0.2:7019"));
        // Loopback hosts on one machine get a client port each (not all 127.0.0.1:7018).
        let c1 = NodeConfig::load(&s.dir.join("node-1/config.toml")).expect("c1");
        assert_eq!((c0.client_addr.to_string().as_str(), c1.client_addr.to_string().as_str()), ("127.0.0.2:7018", "127.0.0.3:7018"));
        let c2 = NodeConfig::load(&s.dir.join("node-2/config.toml")).expect("c2");
        assert_eq!((c2.listen_host.as_str(), c2.client_addr.to_string().as_str()), ("0.0.0.0", "127.0.0.1:7118"));

        // Add a host, drop one: keys and order of the kept nodes do not change.
        std::fs::write(&s.hosts_file, "127.0.0.2\nhost.example:7100\n127.0.0.4\n").expect("rewrite");
        let r = write_cluster_config(&s).expect("reconcile");
        assert_eq!((r.kept.len(), r.created.len(), r.removed.clone()), (2, 1, vec!["node-1".to_string()]));
        let after = ClusterFile::load(&s.dir.join("cluster.toml")).expect("cluster");
        assert_eq!(after.nodes[0], cluster.nodes[0]);
        assert_eq!(after.nodes[1], cluster.nodes[2]);
        assert_eq!(after.nodes[2].name, "node-3");
        // Every present folder got the new cluster file and still resolves.
        for n in ["node-0", "node-2", "node-3"] {
            let path = s.dir.join(n).join("config.toml");
            NodeConfig::load(&path).expect("load").resolve(&path).expect("resolve after reconcile");
        }
        // The shard count of an existing cluster cannot change.
        let err = write_cluster_config(&ClusterConfigSpec { shards: Some(2), ..s.clone() }).expect_err("shards change");
        assert!(err.to_string().contains("cannot change"), "{err}");
        // Duplicates are refused before anything is written.
        std::fs::write(&s.hosts_file, "127.0.0.9\n127.0.0.9\n").expect("rewrite");
        assert!(write_cluster_config(&s).is_err());
        assert!(!s.dir.join("node-4").exists());
    }
}
