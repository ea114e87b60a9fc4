//! Serves a cluster over Kafka's wire protocol, so that any Kafka client
//! (kcat, kafka-python, librdkafka, the Java client) can use it.
//!
//! ```text
//! cargo run --example serve --features server -- [DIR] [BROKERS]
//! ```
//!
//! DIR is the cluster's directory (default: a fresh temporary directory,
//! kept and printed); BROKERS the number of brokers (default 1). Each
//! broker listens on its own free loopback port; the ports are printed.
//! Serves until standard input closes (Ctrl-D, or the end of a pipe) or the
//! process is interrupted (Ctrl-C); closing stdin shuts the listener and
//! the cluster down cleanly.
//!
//! Then, for example: `kcat -b 127.0.0.1:PORT -L`.
#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::io::Read;

use logbus::{Cluster, ClusterConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The listener's log (a closed connection and why) on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let dir = match args.next() {
        Some(dir) => std::path::PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-serve-")
            .tempdir()?
            .keep(),
    };
    let brokers: u32 = args.next().map(|b| b.parse()).transpose()?.unwrap_or(1);
    // Kafka's 3 s group.initial.rebalance.delay.ms (the library's default
    // is 0): clients in other processes join milliseconds apart.
    let config = ClusterConfig::builder()
        .brokers(brokers)
        .group_initial_rebalance_delay(std::time::Duration::from_secs(3))
        .build()?;
    let cluster = Cluster::open(&dir, config)?;
    let server = cluster.serve("127.0.0.1:0")?;
    println!("cluster directory: {}", dir.display());
    for (broker, address) in server.addresses() {
        println!("broker {broker}: {address}");
    }
    println!("serving; close stdin (Ctrl-D) to stop");
    // Block until stdin ends.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.shutdown();
    cluster.close()?;
    println!("stopped");
    Ok(())
}
