//! `loadgen`: drives a pqdag cluster through its client API and measures submit-to-final latency.
//!
//! Open loop at `--rate R` submissions/s (default), or closed loop with `--inflight N`. Each
//! submission carries a fresh conflict key, except a `--conflict-ratio` fraction that reuses the
//! key of an earlier submission sent to another node (a double spend: one of the two must lose).
//! Prints a live progress line, a summary, and with `--json FILE` one JSON object.
//!
//! Failover: a submission refused (other than as a double spend), failed or not acknowledged
//! within `--ack-timeout` is sent again, same payload and conflict keys, to the next live node
//! (at most `--attempts` submissions a payload). A node that fails (a connection error, or no
//! reply at all within the ack timeout) is skipped until a reconnect succeeds (with backoff).
//! Vertices acknowledged by a node that went away are polled at the live nodes; one they do not
//! know is submitted again. Payloads are counted once, by tag (`tools/src/failover.rs`); at the
//! end, payloads still undecided are looked up in a live node's decision feed by their bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use pqdag_crypto::Keypair;
use pqdag_tools::failover::{Refusal, Tracker};
use pqdag_tools::schedule::{Schedule, Tallies};
use pqdag_tools::targets::{client_key, client_targets, ClientTarget};
use pqdag_transport::{ClientConnection, TransportError};
use pqdag_wire::{
    decode, encode, ArchivedClientErrorCode, ArchivedClientReply, ArchivedClientStatus, ClientRequest, ConflictKey, FrameRef, VertexId,
};
use rand::{Rng, SeedableRng};

mod recover;
mod summary;

use recover::{poll_status, resolve_from_feed};

#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", about = "Load generator for a pqdag cluster")]
struct Args {
    /// The cluster file (testnet layout: node folders beside it give the client addresses).
    #[arg(long)]
    cluster: PathBuf,
    /// Client address of a node, `NAME=HOST:PORT` (repeatable; for remote clusters).
    #[arg(long)]
    client: Vec<String>,
    /// Submit only to these nodes, by name (repeatable; default: every node with a client
    /// address). `bench --byzantine` keeps the load off the attacker this way.
    #[arg(long = "only")]
    only: Vec<String>,
    /// The client identity to prove (a `client.key`) [default: `client/client.key` beside the
    /// cluster file, the testnet's, which every testnet node accepts].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Open-loop submissions per second (ignored with --inflight).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Closed loop: keep this many submissions undecided.
    #[arg(long)]
    inflight: Option<usize>,
    /// Seconds of load.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// A load schedule instead of `--rate` and `--duration`: `RATE:SECONDS,...`, run back to
    /// back (`4000:20,8000:20,4000:20`: a burst of twice the rate, then back). The summary
    /// gains `phases`, each payload counted in the phase it was first submitted in.
    #[arg(long, conflicts_with = "inflight")]
    phases: Option<String>,
    /// Payload size.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Fraction of submissions that double-spend an earlier one.
    #[arg(long, default_value_t = 0.0)]
    conflict_ratio: f64,
    /// Seconds to wait after the load for outstanding decisions.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of the payload/conflict RNG.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Seconds to wait for a node's acknowledgement before submitting the payload again
    /// elsewhere (the first attempt still counts if it is acknowledged later).
    #[arg(long, default_value_t = 2.0)]
    ack_timeout: f64,
    /// Most submissions of one payload (the first and its retries); 1 disables failover.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut targets = match client_targets(&args.cluster, &args.client) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !args.only.is_empty() {
        if let Some(bad) = args.only.iter().find(|n| !targets.iter().any(|t| &t.name == *n)) {
            eprintln!("error: --only {bad}: no such node with a client address in {}", args.cluster.display());
            return ExitCode::FAILURE;
        }
        targets.retain(|t| args.only.contains(&t.name));
    }
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("loadgen")
        .spawn(move || async move { run(args, targets).await });
    match handle.map(|h| h.join()) {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("error: loadgen executor: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: cannot start executor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A node's client endpoint, its current connection and its failure bookkeeping.
struct Node {
    target: ClientTarget,
    conn: Option<Rc<ClientConnection>>,
    /// Generation of `conn` (bumped by every new connection).
    gen: u64,
    /// When each generation went stale (its connection was dropped).
    stale_since: HashMap<u64, Instant>,
    connecting: bool,
    next_connect: Instant,
    backoff: Duration,
    /// Last reply of any kind on the current connection.
    last_reply: Option<Instant>,
    /// Times this node was given up on (connection error, or silent past the ack timeout).
    downs: u64,
    /// Connections made after a failure.
    reconnects: u64,
    ever_connected: bool,
}

impl Node {
    fn stale(&self, gen: u64) -> bool {
        self.conn.is_none() || self.gen != gen
    }
}

struct State {
    start: Instant,
    /// The open loop's rates over time, and what became of each phase's payloads.
    schedule: Schedule,
    phases: Tallies,
    nodes: Vec<Node>,
    tracker: Tracker,
    latency_us: Option<Histogram<u64>>,
    /// finalized per whole second since start
    per_second: Vec<u64>,
    /// a status poll is under way
    polling: bool,
    rr: usize,
    quiet: bool,
    /// Event readers stop then.
    hard_end: Instant,
    /// The vertex carrying each acknowledged, undecided transaction (status polls ask about
    /// vertices; the tracker knows transactions, whose ids are stable across retries and
    /// re-issues).
    vertex_of: std::collections::HashMap<VertexId, VertexId>,
}

impl State {
    /// An attempt refused as overloaded at `now`, for the phase tally.
    fn overloaded(&mut self, now: Instant) {
        let t = now.saturating_duration_since(self.start).as_secs_f64();
        self.phases.refused_overloaded(t);
    }

    fn decided(&mut self, id: VertexId, final_: bool, at: Instant) {
        self.vertex_of.remove(&id);
        if let Some(f) = self.tracker.decided(id, final_, at) {
            let latency_us = (f.latency.as_micros() as u64).max(1);
            if let Some(h) = self.latency_us.as_mut() {
                let _ = h.record(latency_us);
            }
            let submitted = at.checked_sub(f.latency).map_or(0.0, |t| t.saturating_duration_since(self.start).as_secs_f64());
            self.phases.finalized(submitted, latency_us);
            let sec = at.saturating_duration_since(self.start).as_secs() as usize;
            if self.per_second.len() <= sec {
                self.per_second.resize(sec + 1, 0);
            }
            self.per_second[sec] += 1;
        }
    }

    /// Gives up on node `i`'s connection `gen` (if still current): it is skipped until a
    /// reconnect succeeds.
    fn down(&mut self, i: usize, gen: u64, why: &str) {
        let now = Instant::now();
        let n = &mut self.nodes[i];
        if n.gen != gen || n.conn.is_none() {
            return;
        }
        n.conn = None;
        n.stale_since.insert(gen, now);
        n.downs += 1;
        n.next_connect = now;
        if !self.quiet {
            eprintln!("loadgen: {} down ({why}); failing over", n.target.name);
        }
    }

    /// The node for a (re)submission: the first live one from `preferred` (first attempt) or
    /// after the last node tried, preferring nodes not tried yet.
    fn pick(&self, preferred: usize, tried: &[usize]) -> Option<usize> {
        let n = self.nodes.len();
        let start = tried.last().map_or(preferred, |l| l + 1);
        let order = || (0..n).map(move |k| (start + k) % n);
        order().find(|&i| self.nodes[i].conn.is_some() && !tried.contains(&i)).or_else(|| order().find(|&i| self.nodes[i].conn.is_some()))
    }

    fn live(&mut self) -> Option<(usize, Rc<ClientConnection>)> {
        let n = self.nodes.len();
        for k in 0..n {
            let i = (self.rr + k) % n;
            if let Some(c) = &self.nodes[i].conn {
                self.rr = i + 1;
                return Some((i, c.clone()));
            }
        }
        None
    }
}

type Shared = Rc<RefCell<State>>;

/// Connects node `i` (in the background); on success starts its event reader.
fn connect(st: &Shared, i: usize, me: Arc<Keypair>, timeout: Duration) {
    let (addr, pk) = {
        let mut s = st.borrow_mut();
        let n = &mut s.nodes[i];
        if n.connecting || n.conn.is_some() {
            return;
        }
        n.connecting = true;
        (n.target.addr, n.target.public_key.clone())
    };
    let st = st.clone();
    glommio::spawn_local(async move {
        let r = ClientConnection::connect(addr, pk, me, timeout).await;
        let now = Instant::now();
        let mut s = st.borrow_mut();
        let quiet = s.quiet;
        let n = &mut s.nodes[i];
        n.connecting = false;
        match r {
            Ok(c) => {
                let c = Rc::new(c);
                n.gen += 1;
                n.conn = Some(c.clone());
                n.backoff = Duration::from_millis(250);
                n.last_reply = None;
                if n.ever_connected {
                    n.reconnects += 1;
                    if !quiet {
                        eprintln!("loadgen: {} reconnected", n.target.name);
                    }
                }
                n.ever_connected = true;
                let gen = n.gen;
                drop(s);
                glommio::spawn_local(read_events(st.clone(), i, gen, c)).detach();
            }
            Err(e) => {
                let first = n.backoff == Duration::from_millis(250);
                n.next_connect = now + n.backoff;
                n.backoff = (n.backoff * 2).min(Duration::from_secs(5));
                if first && !quiet {
                    eprintln!("loadgen: cannot connect {} at {}: {e} (retrying with backoff up to 5 s)", n.target.name, n.target.addr);
                }
            }
        }
    })
    .detach();
}

/// Decisions the node pushes for the vertices submitted on this connection.
async fn read_events(st: Shared, i: usize, gen: u64, c: Rc<ClientConnection>) {
    loop {
        {
            let s = st.borrow();
            if Instant::now() >= s.hard_end || s.nodes[i].stale(gen) {
                return;
            }
        }
        let Some(bytes) = c.next_event(Duration::from_millis(200)).await else { continue };
        let at = Instant::now();
        if let Ok(FrameRef::ClientReply(ArchivedClientReply::Events { events })) = decode(&bytes) {
            let mut s = st.borrow_mut();
            for e in events.iter() {
                // The tracker follows transactions (`VertexId`-typed 32-byte keys here).
                let tx = VertexId(e.tx.0);
                match e.status {
                    ArchivedClientStatus::Final { .. } => s.decided(tx, true, at),
                    ArchivedClientStatus::Rejected => s.decided(tx, false, at),
                    // Re-issued into a new vertex: status polls must ask about that one.
                    _ => {
                        s.vertex_of.insert(tx, VertexId(e.id.0));
                    }
                }
            }
        }
    }
}

/// One submission attempt: attempt `attempt` of payload `tag` to `node` on its connection
/// generation `gen`.
struct Try {
    tag: u64,
    attempt: usize,
    node: usize,
    gen: u64,
    c: Rc<ClientConnection>,
    bytes: Vec<u8>,
}

async fn submit(st: Shared, t: Try, timeout: Duration) {
    let Try { tag, attempt, node, gen, c, bytes } = t;
    let r = c.submit(bytes, timeout).await;
    let now = Instant::now();
    let mut s = st.borrow_mut();
    match &r {
        Ok(reply) => {
            if s.nodes[node].gen == gen {
                s.nodes[node].last_reply = Some(now);
            }
            match decode(reply) {
                Ok(FrameRef::ClientReply(ArchivedClientReply::Submitted { tx, id, .. })) => {
                    s.vertex_of.insert(VertexId(tx.0), VertexId(id.0));
                    s.tracker.acked(tag, attempt, VertexId(tx.0));
                }
                Ok(FrameRef::ClientReply(ArchivedClientReply::Error { code, .. })) => {
                    let why = match code {
                        ArchivedClientErrorCode::Conflict => Refusal::Conflict,
                        ArchivedClientErrorCode::Overloaded => Refusal::Overloaded,
                        _ => Refusal::Other,
                    };
                    if why == Refusal::Overloaded {
                        s.overloaded(now);
                    }
                    s.tracker.refused(tag, attempt, why, now);
                }
                _ => s.tracker.failed(tag, attempt, now),
            }
        }
        // Nothing was sent: like an overload refusal.
        Err(TransportError::QueueFull) => {
            s.overloaded(now);
            s.tracker.refused(tag, attempt, Refusal::Overloaded, now);
        }
        Err(e @ (TransportError::ConnectionLost(_) | TransportError::Io(_) | TransportError::Closed)) => {
            s.tracker.failed(tag, attempt, now);
            let why = format!("submit: {e}");
            s.down(node, gen, &why);
        }
        // A timeout, a reset stream...: the node may be fine (its silence is judged by the ack
        // timeouts).
        Err(_) => s.tracker.failed(tag, attempt, now),
    }
}

async fn run(args: Args, targets: Vec<ClientTarget>) -> Result<(), String> {
    let me = client_key(&args.cluster, args.key.as_deref())?;
    let ack_timeout = Duration::from_secs_f64(args.ack_timeout.max(0.05));
    // A reply that comes after the ack timeout still counts; past this, the attempt failed.
    let reply_timeout = (ack_timeout * 5).max(Duration::from_secs(10));
    let reconnect_timeout = ack_timeout.max(Duration::from_secs(2));
    let schedule = match &args.phases {
        Some(spec) => Schedule::parse(spec).map_err(|e| format!("--phases: {e}"))?,
        None => Schedule::constant(args.rate, args.duration),
    };
    let now0 = Instant::now();
    let nodes = targets
        .iter()
        .map(|t| Node {
            target: t.clone(),
            conn: None,
            gen: 0,
            stale_since: HashMap::new(),
            connecting: false,
            next_connect: now0,
            backoff: Duration::from_millis(250),
            last_reply: None,
            downs: 0,
            reconnects: 0,
            ever_connected: false,
        })
        .collect();
    let state: Shared = Rc::new(RefCell::new(State {
        start: now0,
        phases: Tallies::new(&schedule),
        schedule: schedule.clone(),
        nodes,
        tracker: Tracker::new(args.attempts, ack_timeout),
        latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).ok(),
        per_second: Vec::new(),
        polling: false,
        rr: 0,
        quiet: args.quiet,
        hard_end: now0 + Duration::from_secs(86_400 * 365),
        vertex_of: std::collections::HashMap::new(),
    }));
    // Connect every node (10 s, as a loaded machine may need). Start once each answered or
    // failed, or `--ack-timeout` after the first connected (a dead node's attempt goes on in
    // the background, and the load fails over meanwhile).
    for i in 0..targets.len() {
        connect(&state, i, me.clone(), Duration::from_secs(10));
    }
    let mut first_up: Option<Instant> = None;
    loop {
        glommio::timer::Timer::new(Duration::from_millis(5)).await;
        let s = state.borrow();
        let up = s.nodes.iter().filter(|n| n.conn.is_some()).count();
        if up > 0 && first_up.is_none() {
            first_up = Some(Instant::now());
        }
        if s.nodes.iter().all(|n| !n.connecting) {
            if up == 0 {
                let names = s.nodes.iter().map(|n| format!("{} at {}", n.target.name, n.target.addr)).collect::<Vec<_>>().join(", ");
                return Err(format!("connect: no node could be reached ({names})"));
            }
            break;
        }
        if first_up.is_some_and(|t| t.elapsed() >= ack_timeout) {
            break;
        }
    }
    let start = Instant::now();
    let load_end = start + Duration::from_secs_f64(schedule.duration());
    let hard_end = load_end + Duration::from_secs_f64(args.drain);
    {
        let mut s = state.borrow_mut();
        s.start = start;
        s.hard_end = hard_end;
    }

    let bar = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new_spinner() };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed);
    // Payloads start with this run's nonce and their tag (when 16 bytes or more), so that a
    // node's decision feed tells which payload a vertex carries.
    let nonce: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40);
    let mut recent_keys: Vec<(ConflictKey, usize)> = Vec::new();
    let mut tag = 0u64;
    let mut last_print = start;
    let mut last_poll = start;
    let n = targets.len();
    loop {
        let now = Instant::now();
        if now >= hard_end || (now >= load_end && state.borrow().tracker.active() == 0) {
            break;
        }
        if now < load_end {
            let elapsed = start.elapsed().as_secs_f64();
            let to_send = {
                let s = state.borrow();
                match args.inflight {
                    Some(k) => (k as u64).saturating_sub(s.tracker.active()),
                    None => schedule.due(elapsed).saturating_sub(s.tracker.c.submitted),
                }
            };
            for _ in 0..to_send.min(10_000) {
                tag += 1;
                let mut node = (tag as usize) % n;
                let mut double_spend = false;
                let key = if args.conflict_ratio > 0.0 && !recent_keys.is_empty() && rng.random_bool(args.conflict_ratio.clamp(0.0, 1.0)) {
                    // Double-spend a recent key, through another node than the original.
                    let (k, orig) = recent_keys[rng.random_range(0..recent_keys.len())];
                    node = (orig + 1) % n;
                    double_spend = true;
                    k
                } else {
                    let k = ConflictKey(rng.random());
                    if recent_keys.len() >= 1024 {
                        recent_keys.swap_remove(rng.random_range(0..recent_keys.len()));
                    }
                    recent_keys.push((k, node));
                    k
                };
                let mut payload = vec![0u8; args.payload_bytes];
                rng.fill(&mut payload[..]);
                if payload.len() >= 16 {
                    payload[..8].copy_from_slice(&nonce.to_le_bytes());
                    payload[8..16].copy_from_slice(&tag.to_le_bytes());
                }
                let mut s = state.borrow_mut();
                s.tracker.add(tag, payload, vec![key], double_spend, node, now);
                s.phases.offered(elapsed);
            }
        }
        // Submissions and resubmissions due (glommio runs a spawned task at once: spawn only
        // with no borrow of the state held).
        let mut spawns = Vec::new();
        {
            let mut s = state.borrow_mut();
            for t in s.tracker.ack_timeouts(now) {
                // Silent since before this was sent: the node is gone (a slow node replies).
                let nd = &s.nodes[t.node];
                if nd.gen == t.gen && nd.conn.is_some() && nd.last_reply.is_none_or(|r| r < t.sent) {
                    let why = format!("no reply within {:?}", ack_timeout);
                    s.down(t.node, t.gen, &why);
                }
            }
            let mut sent = 0;
            while sent < 10_000 {
                let Some(x) = s.tracker.next_send(now) else { break };
                let Some(node) = s.pick(x.preferred, &x.tried) else {
                    s.tracker.defer(x.tag, now, Duration::from_millis(50));
                    continue;
                };
                let req = ClientRequest::Submit { tag: x.tag, payload: x.payload, conflict_keys: x.keys };
                let Ok(bytes) = encode(&req) else {
                    s.tracker.defer(x.tag, now, Duration::from_secs(3600));
                    continue;
                };
                let gen = s.nodes[node].gen;
                let Some(c) = s.nodes[node].conn.clone() else { continue };
                let attempt = s.tracker.sent(x.tag, node, gen, now);
                spawns.push(Try { tag: x.tag, attempt, node, gen, c, bytes });
                sent += 1;
            }
        }
        for t in spawns {
            glommio::spawn_local(submit(state.clone(), t, reply_timeout)).detach();
        }
        // Reconnects (with backoff) and status polls of vertices whose node went away.
        {
            let due: Vec<usize> = {
                let s = state.borrow();
                (0..n).filter(|&i| s.nodes[i].conn.is_none() && !s.nodes[i].connecting && s.nodes[i].next_connect <= now).collect()
            };
            for i in due {
                connect(&state, i, me.clone(), reconnect_timeout);
            }
            if now.duration_since(last_poll) >= Duration::from_millis(500) && !state.borrow().polling {
                last_poll = now;
                let ids = {
                    let mut s = state.borrow_mut();
                    let ids = {
                        let nodes = &s.nodes;
                        s.tracker.stale_ids(|node, gen| nodes[node].stale(gen), pqdag_wire::CLIENT_STATUS_IDS_MAX)
                    };
                    s.polling = !ids.is_empty();
                    ids
                };
                if !ids.is_empty() {
                    glommio::spawn_local(poll_status(state.clone(), ids, reconnect_timeout)).detach();
                }
            }
        }
        if last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let s = state.borrow();
            let elapsed = start.elapsed().as_secs_f64();
            let p95 = s.latency_us.as_ref().map(|h| h.value_at_quantile(0.95) as f64 / 1000.0).unwrap_or(0.0);
            let down = s.nodes.iter().filter(|n| n.conn.is_none()).count();
            bar.set_message(format!(
                "{:>5.1}s submitted {} finalized {} ({:.0}/s) rejected {} retries {} nodes down {} p95 {:.0} ms",
                elapsed,
                s.tracker.c.submitted,
                s.tracker.c.finalized,
                s.tracker.c.finalized as f64 / elapsed.max(0.001),
                s.tracker.c.rejected,
                s.tracker.c.retries,
                down,
                p95
            ));
            bar.tick();
        }
        let tick = if now < load_end { 1 } else { 10 };
        glommio::timer::Timer::new(Duration::from_millis(tick)).await;
    }
    bar.finish_and_clear();
    // Payloads still undecided: a live node's decision feed may list them (a lost reply, a
    // retry refused as a conflict with its own earlier vertex, a push that never came).
    if args.payload_bytes >= 16 && state.borrow().tracker.undecided() > 0 && !resolve_from_feed(state.clone(), nonce, Duration::from_secs(15), reconnect_timeout).await {
        eprintln!("loadgen: no node's decision feed could be read to its end: payloads it would have settled count as undecided");
    }
    let s = state.borrow();
    summary::write(&args, &targets, &s)
}
