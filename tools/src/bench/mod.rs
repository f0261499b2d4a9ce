//! Pieces of the `bench` driver: a tiny blocking HTTP client, a Prometheus text parser, child
//! process control (no orphans), machine and `/proc` readings, SVG plots, and the report built
//! from one run's samples.
//!
//! `bench` itself (`src/bin/bench.rs`) parses [`args::Args`] and runs the steps (testnet files,
//! start, health, load with [`sample`] once per second, agreement, stop), then hands what it
//! collected to [`report`], [`markdown`] and [`charts`]. Everything here is synchronous and
//! dependency-light so the driver costs next to nothing on the machine it measures.
//!
//! | module | owns | may call |
//! |---|---|---|
//! | [`args`] | the command line | clap |
//! | [`sample`] | one scrape per node, one tick per second, the progress line | `http`, `prom` |
//! | [`report`] | `report.json` and the problems that fail a run | `prom`, `procs` (types) |
//! | [`markdown`] | `report.md` from `report.json` | nothing |
//! | [`charts`] | the four SVG plots of a run | `plot`, `prom` |
//! | [`floor`] | the ML-DSA-87 floor measured at the start of a run | `pqdag-crypto` |
//! | [`http`] | blocking HTTP/1.0 GET | std |
//! | [`prom`] | Prometheus text parsing, histogram deltas and quantiles | nothing |
//! | [`procs`] | child processes, `/proc`, machine info, free ports | libc |
//! | [`plot`] | SVG line and CDF charts | plotters |
//! | [`phases`] | `--phases`: the per-phase table and the recovery check | `sample` (types) |
//! | [`sweep`] | `--sweep`: one run per rate, the throughput-latency table and plot | `plot` |

pub mod args;
pub mod charts;
pub mod floor;
pub mod http;
pub mod markdown;
pub mod phases;
pub mod plot;
pub mod procs;
pub mod prom;
pub mod report;
pub mod sample;
pub mod sweep;
