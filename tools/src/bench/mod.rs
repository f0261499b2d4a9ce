//! Pieces of the `bench` driver: a tiny blocking HTTP client, a Prometheus text parser, child
//! process control (no orphans), machine and `/proc` readings, and SVG plots.
//!
//! `bench` itself (`src/bin/bench.rs`) wires them together; everything here is synchronous and
//! dependency-light so the driver costs next to nothing on the machine it measures.

pub mod http;
pub mod plot;
pub mod procs;
pub mod prom;
