//! Criterion benchmarks of the hot paths: `cargo bench -p benches`. The benches live in
//! `benches/`; this library is empty on purpose (cargo needs a target to hang them on).
