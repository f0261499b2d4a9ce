//! `loadgen`: drives a pqdag cluster through its client API and measures submit-to-final latency.
//!
//! Open loop at `--rate R` submissions/s (default), or closed loop with `--inflight N`. Each
//! submission carries a fresh conflict key, except a `--conflict-ratio` fraction that reuses the
//! key of an earlier submission sent to another node (a double spend: one of the two must lose).
//! Prints a live progress line, a summary, and with `--json FILE` one JSON object.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use pqdag_tools::targets::{client_key, client_targets, ClientTarget};
use pqdag_transport::ClientConnection;
use pqdag_wire::{decode, encode, ArchivedClientReply, ArchivedClientStatus, ClientRequest, ConflictKey, FrameRef, VertexId};
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", about = "Load generator for a pqdag cluster")]
struct Args {
    /// The cluster file (testnet layout: node folders beside it give the client addresses).
    #[arg(long)]
    cluster: PathBuf,
    /// Client address of a node, `NAME=HOST:PORT` (repeatable; for remote clusters).
    #[arg(long)]
    client: Vec<String>,
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
}

#[derive(Default)]
struct State {
    submitted: u64,
    acked: u64,
    refused: u64,
    /// double spends a node refused to sign (it knew the conflicting vertex)
    double_spends_refused: u64,
    finalized: u64,
    rejected: u64,
    submit_errors: u64,
    /// tag -> submit time
    sent: HashMap<u64, Instant>,
    /// vertex id -> submit time, once acknowledged
    open: HashMap<VertexId, Instant>,
    /// decisions that arrived before their acknowledgement
    early: HashMap<VertexId, (bool, Instant)>,
    latency_us: Option<Histogram<u64>>,
    /// finalized per whole second since start
    per_second: Vec<u64>,
}

impl State {
    fn decide(&mut self, id: VertexId, final_: bool, at: Instant, start: Instant) {
        let Some(t0) = self.open.remove(&id) else {
            self.early.insert(id, (final_, at));
            return;
        };
        if final_ {
            self.finalized += 1;
            let us = at.saturating_duration_since(t0).as_micros() as u64;
            if let Some(h) = self.latency_us.as_mut() {
                let _ = h.record(us.max(1));
            }
            let sec = at.saturating_duration_since(start).as_secs() as usize;
            if self.per_second.len() <= sec {
                self.per_second.resize(sec + 1, 0);
            }
            self.per_second[sec] += 1;
        } else {
            self.rejected += 1;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let targets = match client_targets(&args.cluster, &args.client) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
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

async fn run(args: Args, targets: Vec<ClientTarget>) -> Result<(), String> {
    let me = client_key(&args.cluster, args.key.as_deref())?;
    let mut conns = Vec::new();
    for t in &targets {
        let c = ClientConnection::connect(t.addr, t.public_key.clone(), me.clone(), Duration::from_secs(10))
            .await
            .map_err(|e| format!("connect {} at {}: {e}", t.name, t.addr))?;
        conns.push(Rc::new(c));
    }
    let start = Instant::now();
    let state = Rc::new(RefCell::new(State { latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).ok(), ..State::default() }));
    let load_end = start + Duration::from_secs_f64(args.duration);
    let hard_end = load_end + Duration::from_secs_f64(args.drain);

    // Event readers: one per connection.
    for c in &conns {
        let (c, st) = (c.clone(), state.clone());
        glommio::spawn_local(async move {
            while Instant::now() < hard_end {
                let Some(bytes) = c.next_event(Duration::from_millis(200)).await else { continue };
                let at = Instant::now();
                if let Ok(FrameRef::ClientReply(ArchivedClientReply::Events { events })) = decode(&bytes) {
                    let mut s = st.borrow_mut();
                    for e in events.iter() {
                        let final_ = matches!(e.status, ArchivedClientStatus::Final { .. });
                        s.decide(VertexId(e.id.0), final_, at, start);
                    }
                }
            }
        })
        .detach();
    }

    let bar = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new_spinner() };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(args.seed);
    let mut recent_keys: Vec<(ConflictKey, usize)> = Vec::new();
    let mut tag = 0u64;
    let mut last_print = start;
    while Instant::now() < load_end {
        let elapsed = start.elapsed().as_secs_f64();
        let to_send = {
            let s = state.borrow();
            match args.inflight {
                Some(n) => n.saturating_sub((s.submitted - s.finalized - s.rejected - s.submit_errors - s.refused - s.double_spends_refused) as usize) as u64,
                None => ((elapsed * args.rate) as u64).saturating_sub(s.submitted),
            }
        };
        for _ in 0..to_send.min(10_000) {
            tag += 1;
            let mut node = (tag as usize) % conns.len();
            let key = if args.conflict_ratio > 0.0 && !recent_keys.is_empty() && rng.random_bool(args.conflict_ratio.clamp(0.0, 1.0)) {
                // Double-spend a recent key, through another node than the original.
                let (k, orig) = recent_keys[rng.random_range(0..recent_keys.len())];
                node = (orig + 1) % conns.len();
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
            let req = ClientRequest::Submit { tag, payload, conflict_keys: vec![key] };
            let Ok(bytes) = encode(&req) else { continue };
            let (c, st) = (conns[node].clone(), state.clone());
            {
                let mut s = st.borrow_mut();
                s.submitted += 1;
                s.sent.insert(tag, Instant::now());
            }
            glommio::spawn_local(async move {
                let r = c.submit(bytes, Duration::from_secs(10)).await;
                let mut s = st.borrow_mut();
                let t0 = s.sent.remove(&tag);
                match r.as_deref().map(decode) {
                    Ok(Ok(FrameRef::ClientReply(ArchivedClientReply::Submitted { id, .. }))) => {
                        s.acked += 1;
                        let id = VertexId(id.0);
                        let t0 = t0.unwrap_or_else(Instant::now);
                        if let Some((final_, at)) = s.early.remove(&id) {
                            s.open.insert(id, t0);
                            s.decide(id, final_, at, start);
                        } else {
                            s.open.insert(id, t0);
                        }
                    }
                    Ok(Ok(FrameRef::ClientReply(ArchivedClientReply::Error { code, .. }))) => {
                        if matches!(code, pqdag_wire::ArchivedClientErrorCode::Conflict) {
                            s.double_spends_refused += 1;
                        } else {
                            s.refused += 1;
                        }
                    }
                    _ => s.submit_errors += 1,
                }
            })
            .detach();
        }
        if last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            let s = state.borrow();
            let p95 = s.latency_us.as_ref().map(|h| h.value_at_quantile(0.95) as f64 / 1000.0).unwrap_or(0.0);
            bar.set_message(format!(
                "{:>5.1}s submitted {} finalized {} ({:.0}/s) rejected {} p95 {:.0} ms",
                elapsed,
                s.submitted,
                s.finalized,
                s.finalized as f64 / elapsed.max(0.001),
                s.rejected,
                p95
            ));
            bar.tick();
        }
        glommio::timer::Timer::new(Duration::from_millis(1)).await;
    }
    // Drain: wait for outstanding decisions.
    while Instant::now() < hard_end {
        let s = state.borrow();
        if s.sent.is_empty() && s.open.is_empty() {
            break;
        }
        drop(s);
        glommio::timer::Timer::new(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();
    let s = state.borrow();
    let load_s = args.duration;
    let h = s.latency_us.as_ref();
    let q = |p: f64| h.map(|h| h.value_at_quantile(p) as f64 / 1000.0).unwrap_or(0.0);
    let lost = s.submitted - s.finalized - s.rejected - s.double_spends_refused - s.refused;
    let summary = serde_json::json!({
        "submitted": s.submitted,
        "acknowledged": s.acked,
        "finalized": s.finalized,
        "rejected": s.rejected,
        "lost": lost,
        "refused": s.refused,
        "double_spends_refused": s.double_spends_refused,
        "submit_errors": s.submit_errors,
        "throughput_vps": s.finalized as f64 / load_s,
        "finality_ms": { "p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "max": h.map(|h| h.max() as f64 / 1000.0).unwrap_or(0.0) },
        "duration_s": load_s,
        "finalized_per_second": s.per_second,
        "nodes": targets.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "rate": args.rate,
        "conflict_ratio": args.conflict_ratio,
        "payload_bytes": args.payload_bytes,
    });
    println!("submitted   {}", s.submitted);
    println!("finalized   {}  ({:.0} vertices/s over {:.0} s)", s.finalized, s.finalized as f64 / load_s, load_s);
    println!("rejected    {}  (+ {} double spends refused at submit, {} refused as overload)", s.rejected, s.double_spends_refused, s.refused);
    println!("lost        {}  (neither final nor rejected within the drain window)", lost);
    println!("finality    p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms", q(0.5), q(0.95), q(0.99), h.map(|h| h.max() as f64 / 1000.0).unwrap_or(0.0));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap_or_default()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
