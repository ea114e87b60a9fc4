//! Serving logbus's metrics to Prometheus: installs
//! `metrics-exporter-prometheus` on a loopback port, produces and consumes
//! a little, then scrapes its own `/metrics` once and prints the logbus
//! lines.
//!
//! ```text
//! cargo run --release --example prometheus [DIR] [PORT]
//! ```
//!
//! Writes into `DIR` (default: a fresh temporary directory, whose path is
//! printed, kept afterwards). Listens on `127.0.0.1:PORT`; with no port (or
//! 0) a free one is picked and printed. Exits when done.
//!
//! The exporter must be installed before the cluster opens: the cluster
//! registers its metrics with the recorder in force when it opens.

#![allow(clippy::print_stdout, reason = "an example prints its results")]

use std::error::Error;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use logbus::{
    Cluster, ClusterConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, metric_names,
};
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = match args.next() {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new()
            .prefix("logbus-prometheus-")
            .tempdir()?
            .keep(),
    };
    println!("data directory: {}", dir.display());
    let port: u16 = match args.next() {
        Some(port) => port
            .to_str()
            .and_then(|p| p.parse().ok())
            .ok_or("the port must be a number from 0 to 65535")?,
        None => 0,
    };
    let port = if port == 0 {
        // The exporter does not report the port it bound: ask the system
        // for a free one first.
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port()
    } else {
        port
    };
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Binds now and serves from a thread of its own (its own runtime).
    PrometheusBuilder::new()
        .with_http_listener(address)
        .install()?;
    println!("serving metrics on http://{address}/metrics");

    let cluster = Cluster::open(&dir, ClusterConfig::default())?;
    cluster.create_topic_if_not_exists(NewTopic::new("orders", 3))?;
    let producer = Producer::new(&cluster, ProducerConfig::default())?;
    let sent: Vec<_> = (0..1000)
        .map(|i| {
            producer.send(
                ProducerRecord::new("orders", format!("order {i}"))
                    .with_key(format!("customer-{}", i % 17)),
            )
        })
        .collect::<Result<_, _>>()?;
    for future in sent {
        future.wait()?;
    }
    let config = ConsumerConfig::builder()
        .group_id("billing")
        .auto_offset_reset(OffsetReset::Earliest)
        .build()?;
    let mut consumer = Consumer::new(&cluster, config)?;
    consumer.subscribe(["orders"])?;
    let mut consumed = 0;
    while consumed < 500 {
        consumed += consumer.poll(Duration::from_millis(100))?.count();
    }
    consumer.commit_sync()?;
    // Computes the gauges (lag, under-replicated partitions) and sets them.
    let snapshot = cluster.metrics();
    println!(
        "snapshot: orders in {} records / {} bytes, out {} records; produce p99 <= {:?}",
        snapshot.topics["orders"].records_in,
        snapshot.topics["orders"].bytes_in,
        snapshot.topics["orders"].records_out,
        snapshot.produce_latency.quantile(0.99),
    );

    let body = scrape(address)?;
    println!("--- GET /metrics (logbus lines) ---");
    for line in body.lines().filter(|l| l.starts_with("logbus_")) {
        println!("{line}");
    }
    if !body.contains(metric_names::RECORDS_IN) {
        return Err("the scrape lacks logbus_records_in_total".into());
    }
    drop((producer, consumer));
    cluster.close()?;
    Ok(())
}

/// One plain HTTP/1.1 GET of `/metrics`; the body.
fn scrape(address: SocketAddr) -> Result<String, Box<dyn Error>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("no HTTP header in the response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("scrape failed: {}", head.lines().next().unwrap_or("")).into());
    }
    Ok(body.to_string())
}
