//! Load schedules: open-loop rates held for a time, one after another (`loadgen --phases`,
//! `bench --phases`), and the tally of each phase. An operator asks "does the cluster come back
//! after a burst of twice what it sustains?": run `4000:20,8000:20,4000:20` and read the last
//! phase. Payloads are counted in the phase they were first submitted in, so a phase's latency
//! includes the backlog the phase before left it.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Most phases in one schedule.
pub const PHASES_MAX: usize = 64;

/// One phase: `rate` submissions a second for `secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Submissions a second.
    pub rate: f64,
    /// How long, seconds.
    pub secs: f64,
}

/// Phases run back to back from t = 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    phases: Vec<Phase>,
}

impl Schedule {
    /// One phase: the plain `--rate R --duration D` load.
    pub fn constant(rate: f64, secs: f64) -> Self {
        Self { phases: vec![Phase { rate: rate.max(0.0), secs: secs.max(0.0) }] }
    }

    /// Parses `RATE:SECS,RATE:SECS,...` (rates >= 0 a second, durations > 0 seconds).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut phases = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (r, s) = part.split_once(':').ok_or_else(|| format!("phase `{part}`: expected RATE:SECONDS"))?;
            let rate: f64 = r.trim().parse().map_err(|_| format!("phase `{part}`: rate `{r}` is not a number"))?;
            let secs: f64 = s.trim().parse().map_err(|_| format!("phase `{part}`: duration `{s}` is not a number"))?;
            if !rate.is_finite() || rate < 0.0 {
                return Err(format!("phase `{part}`: the rate must be >= 0"));
            }
            if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
                return Err(format!("phase `{part}`: the duration must be in (0, 86400] seconds"));
            }
            phases.push(Phase { rate, secs });
        }
        if phases.is_empty() {
            return Err("no phases (expected RATE:SECONDS,...)".into());
        }
        if phases.len() > PHASES_MAX {
            return Err(format!("{} phases: at most {PHASES_MAX}", phases.len()));
        }
        Ok(Self { phases })
    }

    /// The phases in order.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Seconds of load, all phases.
    pub fn duration(&self) -> f64 {
        self.phases.iter().map(|p| p.secs).sum()
    }

    /// Submissions a second over the whole schedule.
    pub fn mean_rate(&self) -> f64 {
        let d = self.duration();
        if d > 0.0 { self.phases.iter().map(|p| p.rate * p.secs).sum::<f64>() / d } else { 0.0 }
    }

    /// When phase `i` starts, seconds.
    pub fn start_of(&self, i: usize) -> f64 {
        // An empty f64 sum is -0.0.
        self.phases.iter().take(i).map(|p| p.secs).sum::<f64>() + 0.0
    }

    /// Submissions due by `t` seconds (the open loop's target count).
    pub fn due(&self, t: f64) -> u64 {
        let mut start = 0.0;
        let mut due = 0.0;
        for p in &self.phases {
            let overlap = (t - start).clamp(0.0, p.secs);
            due += overlap * p.rate;
            start += p.secs;
        }
        due as u64
    }

    /// The phase running at `t` seconds (the last one past the end, the first before 0).
    pub fn phase_at(&self, t: f64) -> usize {
        let mut end = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            end += p.secs;
            if t < end {
                return i;
            }
        }
        self.phases.len() - 1
    }
}

/// What happened to the payloads of one phase.
struct PhaseTally {
    offered: u64,
    finalized: u64,
    refused_overloaded: u64,
    latency_us: Option<Histogram<u64>>,
}

/// Per-phase counts for loadgen's report.
pub struct Tallies {
    schedule: Schedule,
    per: Vec<PhaseTally>,
}

impl Tallies {
    /// Nothing counted yet, one tally per phase of `schedule`.
    pub fn new(schedule: &Schedule) -> Self {
        let per = schedule
            .phases()
            .iter()
            .map(|_| PhaseTally { offered: 0, finalized: 0, refused_overloaded: 0, latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).ok() })
            .collect();
        Self { schedule: schedule.clone(), per }
    }

    /// A payload first submitted at `t` seconds.
    pub fn offered(&mut self, t: f64) {
        let i = self.schedule.phase_at(t);
        self.per[i].offered += 1;
    }

    /// An `Overloaded` refusal (or a full send queue) at `t` seconds, first attempts and
    /// retries alike.
    pub fn refused_overloaded(&mut self, t: f64) {
        let i = self.schedule.phase_at(t);
        self.per[i].refused_overloaded += 1;
    }

    /// A payload first submitted at `submitted_at` seconds became final `latency_us` later.
    pub fn finalized(&mut self, submitted_at: f64, latency_us: u64) {
        let i = self.schedule.phase_at(submitted_at);
        let p = &mut self.per[i];
        p.finalized += 1;
        if let Some(h) = p.latency_us.as_mut() {
            let _ = h.record(latency_us.max(1));
        }
    }

    /// One object per phase: its rate and window, what was offered, finalized and refused as
    /// overloaded, and the finality of its payloads.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .schedule
            .phases()
            .iter()
            .zip(&self.per)
            .enumerate()
            .map(|(i, (ph, t))| {
                let q = |p: f64| t.latency_us.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(p) as f64 / 1000.0);
                json!({
                    "rate": ph.rate,
                    "secs": ph.secs,
                    "start_s": self.schedule.start_of(i),
                    "offered": t.offered,
                    "finalized": t.finalized,
                    "refused_overloaded": t.refused_overloaded,
                    "finality_ms": { "p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": q(1.0) },
                })
            })
            .collect();
        Value::Array(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_and_pace_the_open_loop() {
        let s = Schedule::parse("100:2, 1000:1,0:1").expect("parse");
        assert_eq!(s.phases().len(), 3);
        assert_eq!(s.duration(), 4.0);
        assert_eq!(s.due(1.0), 100);
        assert_eq!(s.due(2.5), 700);
        assert_eq!(s.due(3.5), 1200);
        assert_eq!(s.due(10.0), 1200);
        assert_eq!((s.phase_at(0.0), s.phase_at(2.0), s.phase_at(3.99), s.phase_at(9.0)), (0, 1, 2, 2));
        assert_eq!(s.start_of(2), 3.0);
        assert_eq!(s.mean_rate(), 300.0);
        for bad in ["", "100", "x:1", "100:0", "-5:1", "100:nan", "1:1e9"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} is refused");
        }
        assert_eq!(Schedule::constant(50.0, 3.0).due(3.0), 150);
    }

    #[test]
    fn payloads_count_in_the_phase_they_were_submitted_in() {
        let s = Schedule::parse("10:1,20:1").expect("parse");
        let mut t = Tallies::new(&s);
        t.offered(0.5);
        t.offered(1.5);
        t.finalized(0.5, 2_000_000);
        t.refused_overloaded(1.2);
        let v = t.to_json();
        assert_eq!(v[0]["offered"], 1);
        assert_eq!(v[0]["finalized"], 1);
        assert_eq!(v[1]["finalized"], 0);
        assert_eq!(v[1]["refused_overloaded"], 1);
        assert_eq!(v[1]["start_s"], 1.0);
        assert!(v[0]["finality_ms"]["p50"].as_f64().is_some_and(|ms| (ms - 2000.0).abs() < 5.0));
        assert!(v[1]["finality_ms"]["p50"].is_null());
    }
}
