//! Temporary measurement (not committed).
use std::time::Instant;
use logbus::*;
fn run(brokers: u32, rf: u16, acks: Acks, n: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::open(dir.path(), ClusterConfig::builder().brokers(brokers).build().unwrap()).unwrap();
    let mut t = NewTopic::new("t", 6);
    if rf > 1 { t = t.replication_factor(rf).config(TopicConfig::new().min_insync_replicas(2).unwrap()); }
    cluster.create_topic(t).unwrap();
    let producer = Producer::new(&cluster, ProducerConfig::builder().acks(acks).build().unwrap()).unwrap();
    let value = vec![b'x'; 100];
    let start = Instant::now();
    for i in 0..n {
        producer.send(ProducerRecord::new("t", value.clone()).with_key(format!("{i}"))).unwrap();
    }
    producer.flush().unwrap();
    let secs = start.elapsed().as_secs_f64();
    producer.close().unwrap();
    cluster.close().unwrap();
    n as f64 / secs
}
fn main() {
    let n = 1_000_000;
    for _ in 0..2 {
        let one = run(1, 1, Acks::Leader, n);
        let all1 = run(1, 1, Acks::All, n);
        let three = run(3, 3, Acks::All, n);
        println!("rf1 acks=1 {one:.0}/s  rf1 acks=all {all1:.0}/s  rf3 acks=all {three:.0}/s  ratio {:.2}", three / one);
    }
}
