//! `logbus serve`: a data directory served over Kafka's wire protocol, so
//! that any Kafka client can use it.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Args;
use logbus::{Cluster, ClusterConfig, ServerConfig, TlsConfig};

/// `logbus serve --dir D --listen HOST:PORT`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The cluster directory (created if it does not exist).
    #[arg(long)]
    dir: PathBuf,
    /// Where broker 0 listens; broker N listens on the next ports (port 0:
    /// any free port per broker). Only loopback unless SASL or TLS is
    /// configured, or --allow-non-loopback.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// The number of brokers (default: as the directory was written, or 1).
    #[arg(long)]
    brokers: Option<u32>,
    /// Bind a non-loopback address without SASL or TLS: anyone reaching
    /// the port then reads and writes every topic.
    #[arg(long)]
    allow_non_loopback: bool,
    /// SASL/PLAIN users: a file of `USER:PASSWORD` lines (blank lines and
    /// lines starting with `#` skipped). Clients then authenticate with
    /// security.protocol SASL_PLAINTEXT (SASL_SSL with --tls-cert) and
    /// sasl.mechanism PLAIN.
    #[arg(long, value_name = "FILE")]
    sasl_plain_users: Option<PathBuf>,
    /// TLS: the server's certificate chain, PEM (its certificate first,
    /// then intermediates). Clients then use security.protocol SSL
    /// (SASL_SSL with --sasl-plain-users).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The host clients are told to connect to (Kafka's
    /// advertised.listeners), for a listener bound to 0.0.0.0.
    #[arg(long)]
    advertised_host: Option<String>,
    /// Kafka's queued.max.request.bytes: at most this many bytes of
    /// requests read and not yet answered, across all connections
    /// (default: unbounded; at least socket.request.max.bytes).
    #[arg(long, value_name = "BYTES")]
    queued_max_request_bytes: Option<usize>,
    /// Kafka's max.incremental.fetch.session.cache.slots: fetch sessions
    /// (KIP-227) kept per broker (default 1000; 0: none).
    #[arg(long, value_name = "SLOTS")]
    max_incremental_fetch_session_cache_slots: Option<usize>,
    /// Kafka's group.initial.rebalance.delay.ms: how long the first
    /// rebalance of an empty group waits for more members. Kafka's default,
    /// 3000, here too (the library's default is 0): clients in other
    /// processes join milliseconds apart, and kafka-python 3.0.12 can lose
    /// a join answered before it has the topic's metadata.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    group_initial_rebalance_delay_ms: u64,
    /// Stop (and close the cluster cleanly) when standard input ends;
    /// without it the server runs until the process is stopped.
    #[arg(long)]
    stop_on_stdin_eof: bool,
}

/// The SASL/PLAIN users of `path`: `USER:PASSWORD` lines, blank lines and
/// `#` comments skipped.
fn read_users(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--sasl-plain-users {}: {e}", path.display()))?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            return Err(format!(
                "--sasl-plain-users {} line {}: expected USER:PASSWORD",
                path.display(),
                i + 1
            ));
        };
        users.push((user.to_string(), password.to_string()));
    }
    if users.is_empty() {
        return Err(format!(
            "--sasl-plain-users {}: no USER:PASSWORD line",
            path.display()
        ));
    }
    Ok(users)
}

/// `logbus serve`: prints each broker's address (one line each, or one
/// JSON document), then serves.
pub(crate) fn run(args: &ServeArgs, json: bool) -> Result<(), String> {
    let listen = std::net::ToSocketAddrs::to_socket_addrs(&args.listen)
        .map_err(|e| format!("--listen {}: {e}", args.listen))?
        .next()
        .ok_or_else(|| format!("--listen {} resolves to nothing", args.listen))?;
    let brokers = args
        .brokers
        .unwrap_or_else(|| crate::open::brokers_in(&args.dir));
    let config = ClusterConfig::builder()
        .brokers(brokers)
        .group_initial_rebalance_delay(std::time::Duration::from_millis(
            args.group_initial_rebalance_delay_ms,
        ))
        .build()
        .map_err(|e| format!("invalid cluster configuration: {e}"))?;
    let cluster = Cluster::open(&args.dir, config)
        .map_err(|e| format!("cannot open {}: {e}", args.dir.display()))?;
    let mut server_config =
        ServerConfig::builder(listen).allow_non_loopback(args.allow_non_loopback);
    if let Some(host) = &args.advertised_host {
        server_config = server_config.advertised_host(host.clone());
    }
    if args.queued_max_request_bytes.is_some() {
        server_config = server_config.queued_max_request_bytes(args.queued_max_request_bytes);
    }
    if let Some(slots) = args.max_incremental_fetch_session_cache_slots {
        server_config = server_config.max_incremental_fetch_session_cache_slots(slots);
    }
    if let Some(path) = &args.sasl_plain_users {
        server_config = server_config.sasl_plain_users(read_users(path)?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = TlsConfig::from_pem_files(cert, key).map_err(|e| format!("TLS: {e}"))?;
        server_config = server_config.tls(tls);
    }
    let server_config = server_config.build().map_err(|e| e.to_string())?;
    let server_config_protocol = server_config.security_protocol().name();
    let server = cluster
        .serve_with(server_config)
        .map_err(|e| format!("cannot serve: {e}"))?;
    let addresses = server.addresses();
    if json {
        let brokers: Vec<serde_json::Value> = addresses
            .iter()
            .map(|(id, a)| serde_json::json!({"broker": id, "address": a.to_string()}))
            .collect();
        crate::print_json(&serde_json::json!({
            "brokers": brokers,
            "security_protocol": server_config_protocol,
        }))?;
    } else {
        let mut text = String::new();
        for (id, address) in &addresses {
            text.push_str(&format!("broker {id} listening on {address}\n"));
        }
        crate::print(&text)?;
    }
    if args.stop_on_stdin_eof {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        server.shutdown();
        cluster
            .close()
            .map_err(|e| format!("closing {}: {e}", args.dir.display()))?;
        let _ = writeln!(std::io::stderr(), "logbus serve: stopped");
        return Ok(());
    }
    // Until the process is stopped: the cluster recovers its logs on the
    // next open, as after a crash.
    loop {
        std::thread::park();
    }
}
