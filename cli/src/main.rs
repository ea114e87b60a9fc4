//! `logbus`: operator tools over a logbus data directory, as Kafka's
//! command-line tools are over a Kafka one.
//!
//! - `logbus dump-log FILE...`: kafka-dump-log for `.log`, `.index` and
//!   `.timeindex` files, and `.txnindex` and `.snapshot` files.
//! - `logbus verify DIR`: a read-only scan of a whole data directory that
//!   reports each damage with its file and byte position.
//! - `logbus perf produce|consume|scan ...`: the perf tool, one JSON line.
//! - `logbus topics ...`: kafka-topics (and kafka-configs for topics).
//! - `logbus produce`, `logbus consume`: kafka-console-producer and
//!   kafka-console-consumer.
//! - `logbus groups list|describe|reset-offsets|delete`:
//!   kafka-consumer-groups.
//! - `logbus serve --dir D --listen 127.0.0.1:9092`: the directory served
//!   over Kafka's wire protocol, for any Kafka client.
//!
//! Every command prints human-readable text by default and one JSON
//! document with `--json` (`consume`: one JSON object per record); long
//! scans show a progress bar on stderr when it is a terminal. `dump-log`,
//! `verify` and the listing and describing commands write nothing to the
//! files they read.
//!
//! Exit status: 0 on success; 1 when `verify` found damage; 2 for bad
//! arguments or a file that cannot be read.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod console;
mod dump;
mod groups;
mod open;
mod perf;
mod progress;
mod scan;
mod serve;
mod topics;
mod verify;

/// Operator tools over a logbus data directory.
#[derive(Debug, Parser)]
#[command(name = "logbus", version, about)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the batches of `.log` files, or the entries of `.index` and
    /// `.timeindex` files checked against the `.log` beside them, the
    /// aborted transactions of `.txnindex` files and the producers of
    /// `.snapshot` files (as kafka-dump-log).
    DumpLog {
        /// Segment files: `.log`, `.index`, `.timeindex`, `.txnindex` or
        /// `.snapshot`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print each record's key, value and headers (UTF-8, lossy);
        /// implies --deep-iteration.
        #[arg(long)]
        print_data_log: bool,
        /// Print each record of every batch, compressed batches included.
        #[arg(long)]
        deep_iteration: bool,
    },
    /// Scan a whole data directory read-only (every segment, index and
    /// checkpoint) and report each damage with its file and byte position;
    /// exits 1 if any is found.
    Verify {
        /// The cluster directory (or one broker's, or one partition's).
        dir: PathBuf,
    },
    /// The perf tool: `perf produce|consume|scan --dir D --topic T ...`
    /// (as kafka-producer-perf-test; one JSON line; `logbus perf help`
    /// lists every flag).
    #[command(disable_help_flag = true)]
    Perf {
        /// `produce`, `consume` or `scan`, then its flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// List, describe, create, delete and alter the topics of a data
    /// directory (as kafka-topics and kafka-configs).
    Topics(topics::TopicsArgs),
    /// Write the lines of stdin to a topic as records (as
    /// kafka-console-producer).
    Produce(console::ProduceArgs),
    /// Print a topic's records, from the beginning, the end, a group's
    /// committed offsets or given offsets (as kafka-console-consumer); with
    /// --json, one JSON object per record.
    Consume(console::ConsumeArgs),
    /// List, describe, reset and delete consumer groups (as
    /// kafka-consumer-groups).
    #[command(subcommand)]
    Groups(groups::GroupsCommand),
    /// Serve the directory over Kafka's wire protocol: one port per broker,
    /// for any Kafka client (kcat, librdkafka, the Java client,
    /// kafka-python). Prints each broker's address.
    Serve(serve::ServeArgs),
}

fn print(text: &str) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    text.push('\n');
    print(&text)
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::DumpLog {
            files,
            print_data_log,
            deep_iteration,
        } => {
            let options = dump::DumpOptions {
                print_data_log,
                deep_iteration,
            };
            let mut dumped = Vec::with_capacity(files.len());
            let logs = files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "log"))
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .sum();
            let bar = progress::bytes(logs, "reading");
            for file in &files {
                let one = dump::dump(file, options, &bar)?;
                if !cli.json {
                    // The bar steps aside while the text goes out.
                    bar.suspend(|| print(&dump::render(&one)))?;
                }
                dumped.push(one);
            }
            bar.finish_and_clear();
            if cli.json {
                print_json(&dump::DumpOutput { files: &dumped })?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Perf { args } => Ok(perf::main_with(&args)),
        Command::Verify { dir } => {
            let report = verify::verify(&dir)?;
            if cli.json {
                print_json(&report)?;
            } else {
                print(&verify::render(&report))?;
            }
            Ok(if report.clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Topics(args) => topics::run(args, cli.json).map(|()| ExitCode::SUCCESS),
        Command::Produce(args) => console::produce(&args, cli.json).map(|()| ExitCode::SUCCESS),
        Command::Consume(args) => console::consume(&args, cli.json).map(|()| ExitCode::SUCCESS),
        Command::Groups(command) => groups::run(&command, cli.json).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(&args, cli.json).map(|()| ExitCode::SUCCESS),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "logbus: {message}");
            ExitCode::from(2)
        }
    }
}
