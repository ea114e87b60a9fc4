//! The `logbus perf` tool (a producer/consumer performance tool in the
//! spirit of Kafka's `kafka-producer-perf-test`) built as an example, with
//! the same arguments and the same JSON line:
//!
//! ```sh
//! cargo run --release --example perf -- produce --dir D --topic T --partitions 1 \
//!     --records 1000000 --record-size 100 --acks 1
//! ```
//!
//! Its source is the command line's (`cli/src/perf.rs`), which documents
//! every flag.

#[path = "../cli/src/perf.rs"]
mod perf;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    perf::main_with(&args)
}
