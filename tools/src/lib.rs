//! Tools for operators and benchmarks: the load generator (`loadgen`) and shared helpers to find
//! a cluster's client endpoints.

pub mod bench;
pub mod failover;
pub mod schedule;
pub mod targets;
