//! Submits a few payloads to a pqdag cluster, waits for their decisions and prints them.
//!
//! ```text
//! engine testnet --nodes 3 --dir /tmp/tn && for i in 0 1 2; do engine run --config /tmp/tn/node-$i/config.toml & done
//! cargo run -p pqdag-client --example submit_and_wait -- --cluster /tmp/tn/cluster.toml [--count 5] [--key /tmp/tn/client/client.key]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use pqdag_client::{Client, ClientOptions, ConflictKey};

#[tokio::main]
async fn main() -> ExitCode {
    let mut cluster: Option<PathBuf> = None;
    let mut count = 5u64;
    let mut key: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cluster" => cluster = args.next().map(PathBuf::from),
            "--count" => count = args.next().and_then(|c| c.parse().ok()).unwrap_or(count),
            "--key" => key = args.next().map(PathBuf::from),
            _ => {
                eprintln!("usage: submit_and_wait --cluster FILE [--count N] [--key client.key]");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(cluster) = cluster else {
        eprintln!("usage: submit_and_wait --cluster FILE [--count N] [--key client.key]");
        return ExitCode::FAILURE;
    };
    // Without --key: the testnet's client/client.key beside the cluster file.
    let mut opts = ClientOptions::default();
    if let Some(k) = &key {
        match pqdag_client::identity::load_client_key(k) {
            Ok(k) => opts = opts.with_key(k),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let client = match Client::from_cluster_file(&cluster, opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("connected to {} ({} nodes)", client.current_node().name, client.nodes().len());
    // A conflict key per payload, unique to this run: nothing here double-spends.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut ok = true;
    for n in 0..count {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&run.to_le_bytes());
        key[8..16].copy_from_slice(&n.to_le_bytes());
        match client.submit_and_wait(format!("example payload {n}").into_bytes(), vec![ConflictKey(key)]).await {
            Ok((receipt, decision)) => println!("transaction {} (vertex {}): {decision:?}", receipt.tx, receipt.vertex),
            Err(e) => {
                eprintln!("payload {n}: {e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
