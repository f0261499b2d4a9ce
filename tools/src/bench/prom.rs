//! Just enough of the Prometheus text exposition format to read a pqdag node's `/metrics`.

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_total`, `_bucket`... suffixes as exposed).
    pub name: String,
    /// Label pairs, in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Parses every sample line; comments and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = match line.rfind('}') {
            Some(close) => (&line[..=close], line[close + 1..].trim()),
            None => match line.split_once(char::is_whitespace) {
                Some((n, v)) => (n, v.trim()),
                None => continue,
            },
        };
        // A timestamp may follow the value.
        let value = value.split_whitespace().next().unwrap_or("");
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (name_labels, Vec::new()),
        };
        out.push(Sample { name: name.to_string(), labels, value });
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, v)) = rest.split_once("=\"") {
        let k = k.trim_start_matches(',').trim();
        // Values are escaped with backslashes; find the closing unescaped quote.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in v.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else { break };
        out.push((k.to_string(), v[..end].replace("\\\"", "\"").replace("\\\\", "\\")));
        rest = &v[end + 1..];
    }
    out
}

/// What `bench` reads from one scrape of a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeMetrics {
    /// `pqdag_finalized_total`.
    pub finalized: f64,
    /// `pqdag_rejected_total`.
    pub rejected: f64,
    /// `pqdag_submitted_total`.
    pub submitted: f64,
    /// `pqdag_polls_total`.
    pub polls: f64,
    /// `pqdag_store_batches_total` (store writes, all shards).
    pub store_batches: f64,
    /// `pqdag_store_fsync_batches_total` (of those, the ones that had to be fsynced).
    pub store_fsync_batches: f64,
    /// `pqdag_process_cpu_seconds_milli` (process CPU time, ms; 10 ms resolution).
    pub cpu_ms: f64,
    /// `pqdag_process_resident_bytes`.
    pub rss_bytes: f64,
    /// Sum over peers of `pqdag_peer_bytes_in`.
    pub bytes_in: f64,
    /// Sum over peers of `pqdag_peer_bytes_out`.
    pub bytes_out: f64,
    /// What RSS is made of, bytes by part, each summed over shards: `heap.<kind>` from
    /// `pqdag_heap_bytes`, `store.<kind>` from `pqdag_store_memory_bytes`, `rss.<kind>` (anon,
    /// file, shmem pages) from `pqdag_resident_bytes` (issue 15: a slope in RSS is attributed
    /// to the part that grows).
    pub memory: std::collections::BTreeMap<String, f64>,
    /// `pqdag_finality_latency_seconds_bucket`: (upper bound in seconds, cumulative count),
    /// ascending, `+Inf` last.
    pub latency_buckets: Vec<(f64, f64)>,
}

impl NodeMetrics {
    /// Extracts the fields above from a `/metrics` body.
    pub fn from_text(text: &str) -> Self {
        let mut m = NodeMetrics::default();
        for s in parse(text) {
            match s.name.as_str() {
                "pqdag_finalized_total" | "pqdag_finalized" => m.finalized = s.value,
                "pqdag_rejected_total" | "pqdag_rejected" => m.rejected = s.value,
                "pqdag_submitted_total" | "pqdag_submitted" => m.submitted = s.value,
                "pqdag_polls_total" | "pqdag_polls" => m.polls = s.value,
                "pqdag_store_batches_total" => m.store_batches = s.value,
                "pqdag_store_fsync_batches_total" => m.store_fsync_batches = s.value,
                "pqdag_process_cpu_seconds_milli" => m.cpu_ms = s.value,
                "pqdag_process_resident_bytes" => m.rss_bytes = s.value,
                "pqdag_peer_bytes_in" => m.bytes_in += s.value,
                "pqdag_peer_bytes_out" => m.bytes_out += s.value,
                "pqdag_heap_bytes" | "pqdag_store_memory_bytes" | "pqdag_resident_bytes" => {
                    if let Some((_, kind)) = s.labels.iter().find(|(k, _)| k == "kind") {
                        let part = match s.name.as_str() {
                            "pqdag_heap_bytes" => "heap",
                            "pqdag_resident_bytes" => "rss",
                            _ => "store",
                        };
                        *m.memory.entry(format!("{part}.{kind}")).or_default() += s.value;
                    }
                }
                "pqdag_finality_latency_seconds_bucket" => {
                    if let Some((_, le)) = s.labels.iter().find(|(k, _)| k == "le") {
                        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                        if !le.is_nan() {
                            m.latency_buckets.push((le, s.value));
                        }
                    }
                }
                _ => {}
            }
        }
        m.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        m
    }
}

/// Bucket counts of `later` minus `earlier` (same bounds; a missing earlier bucket counts 0).
pub fn bucket_delta(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|&(le, c)| {
            let before = earlier.iter().find(|(l, _)| *l == le).map(|(_, c)| *c).unwrap_or(0.0);
            (le, (c - before).max(0.0))
        })
        .collect()
}

/// The smallest bucket bound whose cumulative share reaches `q` (an upper bound of the
/// quantile); `None` without observations. `+Inf` when it lies past the last finite bound.
pub fn bucket_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_gauges_families_and_buckets() {
        let text = "# HELP pqdag_finalized Vertices finalized.\n# TYPE pqdag_finalized counter\npqdag_finalized_total 42\n\
pqdag_process_resident_bytes 1048576\npqdag_peer_bytes_in{peer=\"node-1\"} 100\npqdag_peer_bytes_in{peer=\"node-2\"} 50\n\
pqdag_finality_latency_seconds_bucket{le=\"0.001\"} 1\npqdag_finality_latency_seconds_bucket{le=\"+Inf\"} 4\n\
pqdag_finality_latency_seconds_bucket{le=\"0.0016\"} 3\nbad line\n\
pqdag_heap_bytes{kind=\"libc_held\"} 5\npqdag_resident_bytes{kind=\"file\"} 7\npqdag_store_memory_bytes{kind=\"memtables\"} 9\n";
        let m = NodeMetrics::from_text(text);
        assert_eq!(m.finalized, 42.0);
        assert_eq!(m.rss_bytes, 1048576.0);
        assert_eq!(m.bytes_in, 150.0);
        let parts: Vec<(&str, f64)> = m.memory.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(parts, vec![("heap.libc_held", 5.0), ("rss.file", 7.0), ("store.memtables", 9.0)]);
        assert_eq!(m.latency_buckets, vec![(0.001, 1.0), (0.0016, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(bucket_quantile(&m.latency_buckets, 0.5), Some(0.0016));
        assert_eq!(bucket_quantile(&m.latency_buckets, 0.99), Some(f64::INFINITY));
        let d = bucket_delta(&m.latency_buckets, &[(0.001, 1.0), (f64::INFINITY, 2.0)]);
        assert_eq!(d, vec![(0.001, 0.0), (0.0016, 3.0), (f64::INFINITY, 2.0)]);
        let s = parse("x{a=\"q\\\"uote\",b=\"2\"} 7 1700000000");
        assert_eq!(s[0].labels, vec![("a".to_string(), "q\"uote".to_string()), ("b".to_string(), "2".to_string())]);
        assert_eq!(s[0].value, 7.0);
    }
}
