use logbus::format::BatchBuilder;
use logbus::{Compression, Log, LogConfig};
fn main() {
    let value = vec![0x5a; 100];
    let mut builder = BatchBuilder::new(Compression::None);
    let mut i = 0i64;
    while builder.estimated_size() + 116 < 16384 { builder.append(1_700_000_000_000 + i, None, Some(&value), &[]); i += 1; }
    let mut batch = builder.build().unwrap().to_vec();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::builder(dir.path()).config(LogConfig::builder().retention_ms(None).build().unwrap()).open().unwrap();
    let t = std::time::Instant::now();
    for _ in 0..20000 { log.append(&mut batch, 0).unwrap(); }
    eprintln!("{:?} per batch", t.elapsed() / 20000);
}
