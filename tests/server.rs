//! The Kafka protocol listener (`Cluster::serve`), spoken to as a Kafka
//! client speaks to a broker: requests encoded and responses decoded with
//! the `kafka-protocol` crate's client side, over loopback sockets.
//!
//! - The APIs: ApiVersions, Metadata of a three-broker cluster, produce and
//!   fetch (the fetched bytes are the stored ones), `acks=-1`, a fetch's
//!   long poll woken by a produce, ListOffsets, CreateTopics /
//!   DeleteTopics, configs, DeleteRecords, NOT_LEADER_OR_FOLLOWER from a
//!   broker that does not lead the partition.
//! - Fetch sessions (KIP-227): opened by a full fetch, incremental fetches
//!   answering only partitions with news (long poll included), forgotten
//!   and re-added partitions, FETCH_SESSION_ID_NOT_FOUND and
//!   INVALID_FETCH_SESSION_EPOCH, replacing and closing a session, and the
//!   cache's eviction (stale first, then smaller) on a manual clock.
//! - DescribeGroups: each member's `client_id` and `client_host` (`/` and
//!   its IP address), as Kafka answers them.
//! - `queued.max.request.bytes`: unbounded by default, at least
//!   `socket.request.max.bytes`, and large requests from several
//!   connections taking turns.
//! - Malformed requests, seeded and bounded: each gets an error response
//!   or a closed connection, and afterwards the server still answers and
//!   the stored records are unchanged.
//! - Real clients (kafka-python, confluent-kafka) through
//!   `tests/compat/clients.py`, when `LOGBUS_COMPAT_PYTHON` is set.
#![cfg(feature = "server")]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest, FetchResponse,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use logbus::format::Batches;
use logbus::{Cluster, ClusterConfig, NewTopic, Server, ServerConfig, TopicPartition};

mod wire;
use wire::*;

fn open(brokers: u32) -> TestResult<(tempfile::TempDir, Cluster, Server)> {
    let dir = tempfile::tempdir()?;
    let config = ClusterConfig::builder().brokers(brokers).build()?;
    let cluster = Cluster::open(dir.path(), config)?;
    let server = cluster.serve("127.0.0.1:0")?;
    Ok((dir, cluster, server))
}

#[test]
fn api_versions_lists_the_apis_and_answers_a_newer_version_with_v0() -> TestResult {
    let (_dir, _cluster, server) = open(1)?;
    let mut client = Client::connect(server.addresses()[&0])?;
    let response = client.send(&ApiVersionsRequest::default(), 3)?;
    assert_eq!(response.error_code, 0);
    let find = |key: ApiKey| {
        response
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(find(ApiKey::ApiVersions), Some((0, 3)));
    for key in [
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::Metadata,
        ApiKey::ListOffsets,
    ] {
        assert!(find(key).is_some(), "{key:?}");
    }
    // ApiVersions v4, which the listener does not answer: UNSUPPORTED_VERSION
    // (35) in the v0 layout, with the supported versions.
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::ApiVersions as i16;
    header.request_api_version = 4;
    header.correlation_id = 77;
    let mut body = BytesMut::new();
    header.encode(&mut body, 2)?;
    ApiVersionsRequest::default().encode(&mut body, 4)?;
    client.write_frame(&body)?;
    let mut frame = client.read_frame()?.ok_or("closed")?;
    let header = ResponseHeader::decode(&mut frame, 0)?;
    assert_eq!(header.correlation_id, 77);
    let old = ApiVersionsResponse::decode(&mut frame, 0)?;
    assert_eq!(old.error_code, 35);
    assert!(old.api_keys.iter().any(|k| k.api_key == 3));
    // The connection stays usable.
    assert_eq!(
        client.send(&ApiVersionsRequest::default(), 0)?.error_code,
        0
    );
    Ok(())
}

#[test]
fn metadata_of_three_brokers_names_each_leader_and_address() -> TestResult {
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("orders", 3).replication_factor(2))?;
    let addresses = server.addresses();
    assert_eq!(addresses.len(), 3);
    let mut client = Client::connect(addresses[&1])?;
    for version in [0, 1, 9, 12] {
        let mut request = MetadataRequest::default();
        let mut t = MetadataRequestTopic::default();
        t.name = Some(name("orders"));
        let mut missing = MetadataRequestTopic::default();
        missing.name = Some(name("missing"));
        request.topics = Some(vec![t, missing]);
        let response = client.send(&request, version)?;
        let brokers: BTreeMap<i32, i32> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.port))
            .collect();
        let expected: BTreeMap<i32, i32> = addresses
            .iter()
            .map(|(id, a)| (*id as i32, i32::from(a.port())))
            .collect();
        assert_eq!(brokers, expected, "v{version}");
        assert_eq!(response.topics.len(), 2);
        let orders = &response.topics[0];
        assert_eq!(orders.error_code, 0);
        let description = cluster.describe_topic("orders")?;
        assert_eq!(orders.partitions.len(), 3);
        for (p, d) in orders.partitions.iter().zip(&description.partitions) {
            assert_eq!(p.leader_id.0, d.leader.map_or(-1, |l| l as i32));
            let replicas: Vec<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
            let isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            assert_eq!(
                replicas,
                d.replicas.iter().map(|&b| b as i32).collect::<Vec<_>>()
            );
            assert_eq!(isr, d.isr.iter().map(|&b| b as i32).collect::<Vec<_>>());
            if version >= 7 {
                assert_eq!(p.leader_epoch, d.leader_epoch);
            }
        }
        // Leaders are spread over the brokers, as Kafka places them.
        let leaders: std::collections::BTreeSet<i32> =
            orders.partitions.iter().map(|p| p.leader_id.0).collect();
        assert_eq!(leaders.len(), 3);
        assert_eq!(
            response.topics[1].error_code, 3,
            "unknown topic, not created"
        );
        if version >= 10 {
            assert!(!orders.topic_id.is_nil());
        }
    }
    assert_eq!(cluster.list_topics(), ["orders"]);
    Ok(())
}

/// The broker leading `topic`'s partition `p`.
fn leader(cluster: &Cluster, topic: &str, p: usize) -> TestResult<u32> {
    Ok(cluster.describe_topic(topic)?.partitions[p]
        .leader
        .ok_or("no leader")?)
}

#[test]
fn produce_then_fetch_returns_the_stored_bytes() -> TestResult {
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("events", 1).replication_factor(3))?;
    let lead = leader(&cluster, "events", 0)?;
    let mut client = Client::connect(server.addresses()[&lead])?;
    let sent = batch(&["a", "b", "c"])?;
    for acks in [1, -1] {
        let response = client.send(&produce_request("events", 0, sent.clone(), acks), 9)?;
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "acks={acks}");
    }
    let response = client.send(&produce_request("events", 0, batch(&["d"])?, -1), 3)?;
    let p = &response.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 6));
    // acks=-1 returned: every in-sync replica has the batches.
    let partition = cluster.topic("events")?.partition(0)?;
    assert_eq!(partition.high_watermark()?, 7);

    for version in [4, 11, 12] {
        let response = client.send(&fetch_request("events", 0, 0, 0), version)?;
        let p = &response.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 7), "v{version}");
        let records = fetched_records(&response);
        assert_eq!(values(&records)?, ["a", "b", "c", "a", "b", "c", "d"]);
        // What was stored, byte for byte.
        let stored = partition.read(0, 1 << 20)?;
        assert_eq!(&records, stored.records());
        // The client's batch, with the offset and leader epoch the broker set.
        assert_eq!(records[16..sent.len()], sent[16..]);
    }
    Ok(())
}

#[test]
fn a_fetch_waits_for_a_produce_from_another_connection() -> TestResult {
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("waits", 1))?;
    let address = server.addresses()[&0];
    let mut consumer = Client::connect(address)?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let fetcher = std::thread::spawn(move || -> Result<Vec<String>, String> {
        // Up to a minute: only a produce answers it in time.
        let response = consumer
            .send(&fetch_request("waits", 0, 0, 60_000), 12)
            .map_err(|e| e.to_string())?;
        let _ = done_tx.send(());
        values(&fetched_records(&response)).map_err(|e| e.to_string())
    });
    // The fetch has not answered: nothing is there yet.
    assert!(done_rx.try_recv().is_err());
    let mut producer = Client::connect(address)?;
    let response = producer.send(&produce_request("waits", 0, batch(&["wake"])?, 1), 9)?;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let got = fetcher.join().map_err(|_| "fetcher panicked")??;
    assert_eq!(got, ["wake"]);
    Ok(())
}

#[test]
fn a_broker_that_does_not_lead_answers_not_leader() -> TestResult {
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("routed", 1).replication_factor(1))?;
    let lead = leader(&cluster, "routed", 0)?;
    let other = (lead + 1) % 3;
    let mut client = Client::connect(server.addresses()[&other])?;
    let response = client.send(&produce_request("routed", 0, batch(&["x"])?, 1), 9)?;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 6);
    let response = client.send(&fetch_request("routed", 0, 0, 0), 12)?;
    assert_eq!(response.responses[0].partitions[0].error_code, 6);
    assert_eq!(cluster.topic("routed")?.partition(0)?.log_end_offset()?, 0);
    // Internal topics are refused to clients, as the library refuses them
    // (INVALID_TOPIC_EXCEPTION), whichever broker is asked.
    let commit = BTreeMap::from([(
        logbus::TopicPartition::new("routed", 0),
        logbus::OffsetAndMetadata::new(0),
    )]);
    cluster.alter_group_offsets("g", &commit)?;
    for address in server.addresses().values() {
        let mut client = Client::connect(*address)?;
        for p in 0..50 {
            let request = produce_request("__consumer_offsets", p, batch(&["x"])?, 1);
            let response = client.send(&request, 9)?;
            assert_eq!(response.responses[0].partition_responses[0].error_code, 17);
        }
    }
    Ok(())
}

fn list_offsets(client: &mut Client, topic: &str, timestamp: i64) -> TestResult<(i16, i64)> {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = name(topic);
    t.partitions = vec![p];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = vec![t];
    let response = client.send(&request, 6)?;
    let p = &response.topics[0].partitions[0];
    Ok((p.error_code, p.offset))
}

#[test]
fn list_offsets_and_delete_records() -> TestResult {
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("offsets", 1))?;
    let mut client = Client::connect(server.addresses()[&0])?;
    for _ in 0..3 {
        let r = client.send(&produce_request("offsets", 0, batch(&["a", "b"])?, 1), 9)?;
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    }
    assert_eq!(list_offsets(&mut client, "offsets", -2)?, (0, 0));
    assert_eq!(list_offsets(&mut client, "offsets", -1)?, (0, 6));
    // The batches' records have timestamps ..000 and ..001.
    assert_eq!(
        list_offsets(&mut client, "offsets", 1_700_000_000_001)?,
        (0, 1)
    );
    assert_eq!(
        list_offsets(&mut client, "offsets", 1_800_000_000_000)?,
        (0, -1)
    );

    let mut p = DeleteRecordsPartition::default();
    p.partition_index = 0;
    p.offset = 4;
    let mut t = DeleteRecordsTopic::default();
    t.name = name("offsets");
    t.partitions = vec![p];
    let mut request = DeleteRecordsRequest::default();
    request.topics = vec![t];
    request.timeout_ms = 30_000;
    let response = client.send(&request, 2)?;
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.low_watermark), (0, 4));
    assert_eq!(
        cluster.topic("offsets")?.partition(0)?.log_start_offset()?,
        4
    );
    assert_eq!(list_offsets(&mut client, "offsets", -2)?, (0, 4));
    // Fetching below the new start is out of range.
    let response = client.send(&fetch_request("offsets", 0, 0, 0), 12)?;
    assert_eq!(response.responses[0].partitions[0].error_code, 1);
    // A negative offset other than -1 (the high watermark): out of range,
    // nothing deleted.
    request.topics[0].partitions[0].offset = -5;
    let response = client.send(&request, 2)?;
    assert_eq!(response.topics[0].partitions[0].error_code, 1);
    assert_eq!(
        cluster.topic("offsets")?.partition(0)?.log_start_offset()?,
        4
    );
    Ok(())
}

#[test]
fn topics_and_configs_are_administered_over_the_wire() -> TestResult {
    let (_dir, cluster, server) = open(2)?;
    let mut client = Client::connect(server.addresses()[&0])?;
    let mut config = CreatableTopicConfig::default();
    config.name = StrBytes::from_static_str("retention.ms");
    config.value = Some(StrBytes::from_static_str("3600000"));
    let mut topic = CreatableTopic::default();
    topic.name = name("admin");
    topic.num_partitions = 4;
    topic.replication_factor = 2;
    topic.configs = vec![config];
    let mut bad = CreatableTopic::default();
    bad.name = name("bad");
    bad.num_partitions = 1;
    bad.replication_factor = 5;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic.clone(), bad];
    request.timeout_ms = 30_000;
    let response = client.send(&request, 7)?;
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(response.topics[0].num_partitions, 4);
    assert_eq!(
        response.topics[1].error_code, 38,
        "INVALID_REPLICATION_FACTOR"
    );
    assert_eq!(cluster.list_topics(), ["admin"]);
    let admin = cluster.topic("admin")?;
    assert_eq!(admin.partition_count(), 4);
    assert_eq!(admin.config().get("retention.ms"), Some("3600000"));
    // Again: it exists.
    let mut again = CreateTopicsRequest::default();
    again.topics = vec![topic];
    assert_eq!(client.send(&again, 5)?.topics[0].error_code, 36);

    // Incremental: set one config, delete another; a bad value changes nothing.
    let alter = |ops: Vec<(&'static str, i8, Option<&'static str>)>| {
        let mut resource = AlterConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = StrBytes::from_static_str("admin");
        resource.configs = ops
            .into_iter()
            .map(|(n, op, v)| {
                let mut c = AlterableConfig::default();
                c.name = StrBytes::from_static_str(n);
                c.config_operation = op;
                c.value = v.map(StrBytes::from_static_str);
                c
            })
            .collect();
        let mut request = IncrementalAlterConfigsRequest::default();
        request.resources = vec![resource];
        request
    };
    let response = client.send(
        &alter(vec![
            ("segment.ms", 0, Some("60000")),
            ("retention.ms", 1, None),
        ]),
        1,
    )?;
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(admin.overrides().get("segment.ms"), Some("60000"));
    assert_eq!(admin.overrides().get("retention.ms"), None);
    let response = client.send(&alter(vec![("segment.ms", 0, Some("-5"))]), 0)?;
    assert_eq!(response.responses[0].error_code, 40, "INVALID_CONFIG");
    assert_eq!(admin.overrides().get("segment.ms"), Some("60000"));

    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = StrBytes::from_static_str("admin");
    let mut describe = DescribeConfigsRequest::default();
    describe.resources = vec![resource];
    let response = client.send(&describe, 4)?;
    let configs = &response.results[0].configs;
    let segment = configs
        .iter()
        .find(|c| c.name.as_str() == "segment.ms")
        .ok_or("segment.ms not described")?;
    assert_eq!(segment.value.as_ref().map(|v| v.as_str()), Some("60000"));
    assert_eq!(segment.config_source, 1);

    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names = vec![name("admin"), name("never")];
    delete.timeout_ms = 30_000;
    let response = client.send(&delete, 5)?;
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(response.responses[1].error_code, 3);
    assert!(cluster.list_topics().is_empty());
    Ok(())
}

/// A small deterministic generator (xorshift), so the malformed requests
/// are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A request header of `key` at `version`, non-flexible (v1), encoded.
fn header_bytes(key: i16, version: i16, correlation: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&key.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    out
}

/// Sends raw bytes on a fresh connection and reads what comes back: a
/// response frame, or `None` once the server closed the connection.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> TestResult<Option<Bytes>> {
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let writer = socket.try_clone()?;
    let mut client = Client::over(socket);
    // The server may close before reading everything: a failed write is
    // a closed connection too.
    if client.stream.write_all(bytes).is_err() {
        return Ok(None);
    }
    let _ = writer.shutdown(std::net::Shutdown::Write);
    client.read_frame()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn malformed_requests_close_their_connection_and_change_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let config = ServerConfig::builder("127.0.0.1:0".parse()?)
        .socket_request_max_bytes(1 << 20)
        .build()?;
    let server = cluster.serve_with(config)?;
    let addr = server.addresses()[&0];
    cluster.create_topic(NewTopic::new("kept", 1))?;
    let mut client = Client::connect(addr)?;
    let r = client.send(&produce_request("kept", 0, batch(&["one", "two"])?, 1), 9)?;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let partition = cluster.topic("kept")?.partition(0)?;
    let before = partition.read(0, 1 << 20)?.records().clone();

    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("negative size".into(), (-5i32).to_be_bytes().to_vec()),
        (
            "size above the max".into(),
            ((1i32 << 20) + 1).to_be_bytes().to_vec(),
        ),
        ("size i32::MAX".into(), i32::MAX.to_be_bytes().to_vec()),
        ("empty frame".into(), framed(&[])),
        ("short header".into(), framed(&[0, 3, 0])),
        ("unknown API key".into(), framed(&header_bytes(999, 0, 1))),
        (
            "unsupported Fetch v1".into(),
            framed(&header_bytes(1, 1, 1)),
        ),
        (
            "unsupported Produce v0".into(),
            framed(&header_bytes(0, 0, 1)),
        ),
        (
            "unsupported API (SaslHandshake)".into(),
            framed(&header_bytes(17, 1, 1)),
        ),
        ("truncated frame".into(), {
            let mut f = framed(&header_bytes(3, 1, 1));
            f.truncate(f.len() - 3);
            f
        }),
    ];
    // Absurd array counts right after a valid header: Metadata v1's topic
    // array, Produce v3's topic array, Fetch v4's topic array,
    // DeleteTopics v1's names, CreateTopics v2's topics.
    for (key, version, prefix) in [
        (3i16, 1i16, vec![]),
        (0, 3, vec![0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30]),
        (
            1,
            4,
            vec![
                0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x10, 0, 0, 0,
            ],
        ),
        (20, 1, vec![]),
        (19, 2, vec![]),
    ] {
        for count in [i32::MAX, 0x7fff_0000, 1 << 24, -7] {
            let mut body = header_bytes(key, version, 9);
            body.extend_from_slice(&prefix);
            body.extend_from_slice(&count.to_be_bytes());
            body.extend_from_slice(&[0, 1, b'x']);
            cases.push((format!("API {key} v{version} count {count}"), framed(&body)));
        }
    }
    // Random bodies after valid headers, and random bytes.
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let apis: [(i16, i16); 8] = [
        (0, 9),
        (1, 12),
        (2, 6),
        (3, 12),
        (18, 3),
        (19, 7),
        (21, 2),
        (60, 1),
    ];
    for i in 0..200 {
        let (key, version) = apis[rng.below(apis.len() as u64) as usize];
        let mut body = if i % 4 == 3 {
            Vec::new()
        } else {
            header_bytes(key, version, i)
        };
        let len = rng.below(64) as usize;
        body.extend((0..len).map(|_| rng.next() as u8));
        cases.push((format!("random #{i}"), framed(&body)));
    }
    for (what, bytes) in &cases {
        // Either a response frame (an error, or an answer that touched
        // nothing) or a closed connection: never a hang or a crash.
        let _ = raw_exchange(addr, bytes).map_err(|e| format!("{what}: {e}"))?;
    }
    // The server still answers, on a new connection and the old one.
    let mut fresh = Client::connect(addr)?;
    assert_eq!(fresh.send(&ApiVersionsRequest::default(), 3)?.error_code, 0);
    let response = client.send(&fetch_request("kept", 0, 0, 0), 12)?;
    assert_eq!(values(&fetched_records(&response))?, ["one", "two"]);
    // And the stored data is as it was.
    assert_eq!(cluster.list_topics(), ["kept"]);
    assert_eq!(partition.read(0, 1 << 20)?.records(), &before);
    assert_eq!(partition.log_end_offset()?, 2);
    Ok(())
}

#[test]
fn a_non_loopback_address_is_refused_unless_allowed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let refused = cluster.serve("0.0.0.0:0").err().ok_or("bound 0.0.0.0")?;
    assert!(
        matches!(refused, logbus::Error::InvalidConfig(_)),
        "{refused}"
    );
    // Allowed, it binds (and advertises loopback for the unspecified host).
    let config = ServerConfig::builder("0.0.0.0:0".parse()?)
        .allow_non_loopback(true)
        .build()?;
    let server = cluster.serve_with(config)?;
    let port = server.addresses()[&0].port();
    let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let response = client.send(&MetadataRequest::default(), 1)?;
    assert_eq!(response.brokers[0].host.as_str(), "127.0.0.1");
    server.shutdown();
    // Shut down: the port no longer answers.
    assert!(TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_err());
    Ok(())
}

#[test]
fn shutdown_ends_a_waiting_fetch_and_joins_every_thread() -> TestResult {
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("idle", 1))?;
    let mut client = Client::connect(server.addresses()[&0])?;
    // A connection with a request in flight, waiting for data for a minute.
    let mut request = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = 12;
    header.correlation_id = 5;
    header.encode(&mut request, FetchRequest::header_version(12))?;
    fetch_request("idle", 0, 0, 60_000).encode(&mut request, 12)?;
    client.write_frame(&request)?;
    // Shutdown returns (it joined the connection's thread): the fetch
    // answered early or the connection closed.
    server.shutdown();
    let _ = client.read_frame()?;
    Ok(())
}

/// Runs `tests/compat/SCRIPT ARGS...` with `python`; it must exit 0 and
/// print `ok`.
fn run_compat_script(python: &std::ffi::OsStr, script: &str, args: &[&str]) -> TestResult {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(script);
    let output = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    Ok(())
}

/// Runs `tests/compat/clients.py` with `client` against a three-broker
/// cluster: keyed records in every codec produced and consumed back.
fn real_client(client: &str, module: &str) -> TestResult {
    let Some(python) = compat_python(client, module)? else {
        return Ok(());
    };
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("compat", 3).replication_factor(2))?;
    let bootstrap = server.addresses()[&0].to_string();
    run_compat_script(&python, "clients.py", &[client, &bootstrap, "compat", "3"])?;
    // Every record is stored, spread over the partitions.
    let topic = cluster.topic("compat")?;
    let mut total = 0;
    for p in topic.partitions()? {
        let end = p.log_end_offset()?;
        assert!(end > 0, "partition {} is empty", p.partition());
        total += end;
    }
    assert_eq!(total, 4 * 200);
    Ok(())
}

#[test]
fn kafka_python_produces_every_codec_and_consumes_it_back() -> TestResult {
    real_client("kafka-python", "kafka")
}

#[test]
fn confluent_kafka_produces_every_codec_and_consumes_it_back() -> TestResult {
    real_client("confluent-kafka", "confluent_kafka")
}

/// librdkafka's consumers share a group on a three-broker cluster: they
/// split the partitions, commit, rebalance when a third joins, leave, and
/// a fresh member resumes at the commits; then a transactional producer's
/// aborted records stay hidden from a read_committed consumer and its
/// offsets commit with the transaction (`tests/compat/group_client_librdkafka.py`).
#[test]
fn confluent_kafka_groups_rebalance_commit_resume_and_run_transactions() -> TestResult {
    let Some(python) = compat_python("confluent-kafka", "confluent_kafka")? else {
        return Ok(());
    };
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("compat-groups", 4).replication_factor(3))?;
    let bootstrap = server.addresses()[&0].to_string();
    run_compat_script(
        &python,
        "group_client_librdkafka.py",
        &[&bootstrap, "compat-groups"],
    )?;
    // What the clients did is what the library sees: the group is gone, the
    // transaction's group committed offset 7 of partition 0.
    assert!(
        !cluster
            .list_groups()
            .contains(&"compat-group-rdkafka".to_string())
    );
    let committed = cluster.list_group_offsets("compat-group-rdkafka-tx")?;
    assert_eq!(
        committed[&TopicPartition::new("compat-groups", 0)].offset,
        7
    );
    Ok(())
}

/// kafka-python's consumers share a group on a three-broker cluster: the
/// same steps as librdkafka's above (split, commit, rebalance when a third
/// joins, leave, resume at the commits, transactions), through
/// `tests/compat/group_client.py`, whose every step has a deadline.
///
/// `group.initial.rebalance.delay.ms` is Kafka's default, 3 s, not
/// logbus's 0: kafka-python 3.0.12 can lose a join that a metadata change
/// started when a `poll()` times out while it is in flight (the script's
/// docs say how), and a leader whose first assignment was made before it
/// had the topic's metadata makes such a join. Held 3 s, a new group's
/// first join is answered once every member has the metadata.
#[test]
fn kafka_python_groups_rebalance_commit_resume_and_run_transactions() -> TestResult {
    let Some(python) = compat_python("kafka-python", "kafka")? else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let config = ClusterConfig::builder()
        .brokers(3)
        .group_initial_rebalance_delay(Duration::from_secs(3))
        .build()?;
    let cluster = Cluster::open(dir.path(), config)?;
    let server = cluster.serve("127.0.0.1:0")?;
    cluster.create_topic(NewTopic::new("compat-groups", 4).replication_factor(3))?;
    let bootstrap = server.addresses()[&0].to_string();
    run_compat_script(&python, "group_client.py", &[&bootstrap, "compat-groups"])?;
    assert!(!cluster.list_groups().contains(&"compat-group".to_string()));
    let committed = cluster.list_group_offsets("compat-group-tx")?;
    assert_eq!(
        committed[&TopicPartition::new("compat-groups", 0)].offset,
        7
    );
    Ok(())
}

#[test]
fn read_committed_fetches_stop_at_the_lso_and_list_aborted_transactions() -> TestResult {
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("txn", 1))?;
    let config = logbus::ProducerConfig::builder()
        .transactional_id("tx-1")
        .build()?;
    let producer = logbus::Producer::new(&cluster, config)?;
    producer.init_transactions()?;
    producer.begin_transaction()?;
    drop(producer.send(logbus::ProducerRecord::new("txn", "aborted").with_partition(0))?);
    producer.flush()?;
    producer.abort_transaction()?;
    producer.begin_transaction()?;
    drop(producer.send(logbus::ProducerRecord::new("txn", "open").with_partition(0))?);
    producer.flush()?;

    let mut client = Client::connect(server.addresses()[&0])?;
    let mut request = fetch_request("txn", 0, 0, 0);
    request.isolation_level = 1;
    let response = client.send(&request, 12)?;
    let p = &response.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    // Offsets: 0 aborted record, 1 its ABORT marker, 2 the open
    // transaction's record: stable below 2.
    assert_eq!((p.high_watermark, p.last_stable_offset), (3, 2));
    let aborted = p.aborted_transactions.as_ref().ok_or("no aborted list")?;
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].first_offset, 0);
    // The records end below the LSO: the aborted batch and its marker.
    let last = Batches::new(fetched_records(&response))
        .map(|b| b.map(|b| b.header().base_offset))
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(last, [0, 1]);
    // read_uncommitted reads to the high watermark, without the list.
    let response = client.send(&fetch_request("txn", 0, 0, 0), 12)?;
    let p = &response.responses[0].partitions[0];
    assert!(p.aborted_transactions.is_none());
    assert_eq!(Batches::new(fetched_records(&response)).count(), 3);
    // ListOffsets latest: the LSO under read_committed, else the HW.
    let mut lp = ListOffsetsPartition::default();
    lp.timestamp = -1;
    let mut lt = ListOffsetsTopic::default();
    lt.name = name("txn");
    lt.partitions = vec![lp];
    let mut list = ListOffsetsRequest::default();
    list.replica_id = (-1).into();
    list.topics = vec![lt];
    list.isolation_level = 1;
    assert_eq!(client.send(&list, 5)?.topics[0].partitions[0].offset, 2);
    list.isolation_level = 0;
    assert_eq!(client.send(&list, 5)?.topics[0].partitions[0].offset, 3);
    producer.commit_transaction()?;
    Ok(())
}

#[test]
fn offsets_for_leader_epoch_and_fenced_epochs() -> TestResult {
    use kafka_protocol::messages::OffsetForLeaderEpochRequest;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("epochs", 1))?;
    let mut client = Client::connect(server.addresses()[&0])?;
    let r = client.send(&produce_request("epochs", 0, batch(&["a", "b"])?, 1), 9)?;
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
    let ask = |current: i32, epoch: i32| {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = 0;
        p.current_leader_epoch = current;
        p.leader_epoch = epoch;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = name("epochs");
        t.partitions = vec![p];
        let mut request = OffsetForLeaderEpochRequest::default();
        request.replica_id = (-1).into();
        request.topics = vec![t];
        request
    };
    let response = client.send(&ask(0, 0), 4)?;
    let p = &response.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 2));
    // A client ahead of the leader's epoch: UNKNOWN_LEADER_EPOCH (75).
    let response = client.send(&ask(5, 0), 3)?;
    assert_eq!(response.topics[0].partitions[0].error_code, 75);
    // The same check on a fetch.
    let mut request = fetch_request("epochs", 0, 0, 0);
    request.topics[0].partitions[0].current_leader_epoch = 9;
    let response = client.send(&request, 12)?;
    assert_eq!(response.responses[0].partitions[0].error_code, 75);
    Ok(())
}

#[test]
fn connections_beyond_the_limit_idle_or_stalled_are_closed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let config = ServerConfig::builder("127.0.0.1:0".parse()?)
        .max_connections(1)
        .build()?;
    let server = cluster.serve_with(config)?;
    let addr = server.addresses()[&0];
    let mut first = Client::connect(addr)?;
    // Answered: the first connection is registered.
    assert_eq!(first.send(&ApiVersionsRequest::default(), 0)?.error_code, 0);
    let mut second = Client::connect(addr)?;
    let _ = second.write_frame(&header_bytes(18, 0, 1));
    assert!(
        second.read_frame()?.is_none(),
        "closed: max.connections is 1"
    );
    // The first still works.
    assert_eq!(first.send(&ApiVersionsRequest::default(), 1)?.error_code, 0);
    drop(server);

    // connections.max.idle.ms: a connection with no request is closed.
    let config = ServerConfig::builder("127.0.0.1:0".parse()?)
        .connections_max_idle(Duration::from_millis(20))
        .build()?;
    let server = cluster.serve_with(config)?;
    let mut idle = Client::connect(server.addresses()[&0])?;
    assert!(idle.read_frame()?.is_none());
    drop(server);

    // A request that starts and stalls is closed at the read timeout.
    let config = ServerConfig::builder("127.0.0.1:0".parse()?)
        .request_read_timeout(Duration::from_millis(20))
        .build()?;
    let server = cluster.serve_with(config)?;
    let mut stalled = Client::connect(server.addresses()[&0])?;
    stalled.stream.write_all(&[0, 0])?;
    assert!(stalled.read_frame()?.is_none());
    let mut stalled = Client::connect(server.addresses()[&0])?;
    let frame = framed(&header_bytes(18, 0, 1));
    stalled.stream.write_all(&frame[..frame.len() - 1])?;
    assert!(stalled.read_frame()?.is_none());
    // Whole requests are still answered.
    let mut client = Client::connect(server.addresses()[&0])?;
    assert_eq!(
        client.send(&ApiVersionsRequest::default(), 2)?.error_code,
        0
    );
    Ok(())
}

#[test]
fn the_server_handle_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Server>();
    check::<ServerConfig>();
}

#[test]
fn a_request_of_many_read_chunks_arrives_whole() -> TestResult {
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("big", 1))?;
    let mut client = Client::connect(server.addresses()[&0])?;
    // Close to max.message.bytes: many 64 KiB reads on the server's side.
    let value: String = (0..900_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let response = client.send(&produce_request("big", 0, batch(&[&value])?, -1), 9)?;
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    let response = client.send(&fetch_request("big", 0, 0, 0), 12)?;
    assert_eq!(values(&fetched_records(&response))?, [value]);
    Ok(())
}

#[test]
fn acks_zero_gets_no_response_and_a_failure_closes_the_connection() -> TestResult {
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("fire", 1).replication_factor(1))?;
    let lead = leader(&cluster, "fire", 0)?;
    let mut client = Client::connect(server.addresses()[&lead])?;
    // acks=0: appended, no response; the next response is the next
    // request's (its correlation id is checked by `send`).
    let mut body = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Produce as i16;
    header.request_api_version = 9;
    header.correlation_id = 1000;
    header.encode(&mut body, ProduceRequest::header_version(9))?;
    produce_request("fire", 0, batch(&["quiet"])?, 0).encode(&mut body, 9)?;
    client.write_frame(&body)?;
    let response = client.send(&fetch_request("fire", 0, 0, 0), 12)?;
    assert_eq!(values(&fetched_records(&response))?, ["quiet"]);
    // acks=0 to a broker that does not lead: the connection is closed (the
    // client's only signal), nothing is stored.
    let other = (lead + 1) % 3;
    let mut wrong = Client::connect(server.addresses()[&other])?;
    let mut body = BytesMut::new();
    header.correlation_id = 1001;
    header.encode(&mut body, ProduceRequest::header_version(9))?;
    produce_request("fire", 0, batch(&["lost"])?, 0).encode(&mut body, 9)?;
    wrong.write_frame(&body)?;
    assert!(wrong.read_frame()?.is_none());
    assert_eq!(cluster.topic("fire")?.partition(0)?.log_end_offset()?, 1);
    Ok(())
}

#[test]
fn a_stopped_broker_is_unreachable_until_it_restarts() -> TestResult {
    let (_dir, cluster, server) = open(3)?;
    cluster.create_topic(NewTopic::new("moves", 1).replication_factor(3))?;
    let addresses = server.addresses();
    let mut old = Client::connect(addresses[&2])?;
    assert_eq!(old.send(&ApiVersionsRequest::default(), 3)?.error_code, 0);
    cluster.stop_broker(2)?;
    // Its open connection closes at the next request, a new one at once.
    old.write_frame(&header_bytes(18, 0, 1))?;
    assert!(old.read_frame()?.is_none());
    let mut fresh = Client::connect(addresses[&2])?;
    let _ = fresh.write_frame(&header_bytes(18, 0, 2));
    assert!(fresh.read_frame()?.is_none());
    // The others answer.
    let mut other = Client::connect(addresses[&0])?;
    let mut all = MetadataRequest::default();
    all.topics = None;
    let response = other.send(&all, 12)?;
    let names: Vec<_> = response
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
        .collect();
    assert!(names.contains(&"moves".to_string()), "{names:?}");
    cluster.restart_broker(2)?;
    let mut back = Client::connect(addresses[&2])?;
    assert_eq!(back.send(&ApiVersionsRequest::default(), 3)?.error_code, 0);
    Ok(())
}

/// librdkafka follows a partition leader that crashes mid-stream: an
/// idempotent `acks=all` producer sends half its records, the leader of
/// partition 0 crashes, the producer sends the rest (its retries find the
/// new leader through Metadata), and a consumer reads every acknowledged
/// record back exactly once, each key in order
/// (`tests/compat/leader_failover.py`).
#[test]
fn confluent_kafka_follows_a_leader_that_crashes_mid_stream() -> TestResult {
    let Some(python) = compat_python("confluent-kafka", "confluent_kafka")? else {
        return Ok(());
    };
    follows_a_leader_that_crashes_mid_stream(&python, "confluent-kafka")
}

/// The same with kafka-python's idempotent producer and its consumer.
#[test]
fn kafka_python_follows_a_leader_that_crashes_mid_stream() -> TestResult {
    let Some(python) = compat_python("kafka-python", "kafka")? else {
        return Ok(());
    };
    follows_a_leader_that_crashes_mid_stream(&python, "kafka-python")
}

/// Runs `tests/compat/leader_failover.py` with `client` against three
/// brokers, crashing partition 0's leader when the script has half its
/// records acknowledged.
fn follows_a_leader_that_crashes_mid_stream(python: &std::ffi::OsStr, client: &str) -> TestResult {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (_dir, cluster, server) = open(3)?;
    let config = logbus::TopicConfig::new().min_insync_replicas(2)?;
    cluster.create_topic(
        NewTopic::new("failover", 3)
            .replication_factor(3)
            .config(config),
    )?;
    let bootstrap = server
        .addresses()
        .values()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/leader_failover.py");
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .args([bootstrap.as_str(), "failover", client])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    assert_eq!(line.trim(), "half", "the script's first line");
    // Half the records are acknowledged: crash partition 0's leader.
    let leader = cluster.describe_topic("failover")?.partitions[0]
        .leader
        .ok_or("partition 0 has a leader")?;
    cluster.crash_broker(leader)?;
    writeln!(child.stdin.take().ok_or("no stdin")?, "go")?;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest)?;
    let output = child.wait_with_output()?;
    assert!(
        output.status.success() && rest.lines().any(|l| l == "ok"),
        "leader_failover.py failed:\n{rest}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let described = cluster.describe_topic("failover")?;
    assert_ne!(described.partitions[0].leader, Some(leader), "a new leader");
    Ok(())
}

#[test]
fn describe_groups_names_each_members_client_host_and_client_id() -> TestResult {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::messages::{
        DescribeGroupsRequest, GroupId, JoinGroupRequest, SyncGroupRequest,
    };
    let dir = tempfile::tempdir()?;
    let config = ClusterConfig::builder()
        .group_initial_rebalance_delay(Duration::ZERO)
        .build()?;
    let cluster = Cluster::open(dir.path(), config)?;
    let server = cluster.serve("127.0.0.1:0")?;
    let mut client = Client::connect(server.addresses()[&0])?;
    let group = GroupId(StrBytes::from_static_str("hosts"));
    let mut join = JoinGroupRequest::default();
    join.group_id = group.clone();
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.protocol_type = StrBytes::from_static_str("custom");
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = StrBytes::from_static_str("p");
    protocol.metadata = Bytes::from_static(b"meta");
    join.protocols = vec![protocol];
    // KIP-394: the first join hands out the member id.
    let first = client.send(&join, 5)?;
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    join.member_id = first.member_id.clone();
    let joined = client.send(&join, 5)?;
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id);
    let mut sync = SyncGroupRequest::default();
    sync.group_id = group.clone();
    sync.generation_id = joined.generation_id;
    sync.member_id = joined.member_id.clone();
    let mut mine = SyncGroupRequestAssignment::default();
    mine.member_id = joined.member_id.clone();
    mine.assignment = Bytes::from_static(b"assigned");
    sync.assignments = vec![mine];
    assert_eq!(client.send(&sync, 3)?.error_code, 0);

    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![group];
    for version in [0, 5] {
        let described = client.send(&describe, version)?;
        let g = &described.groups[0];
        assert_eq!((g.error_code, g.group_state.as_str()), (0, "Stable"));
        let m = &g.members[0];
        assert_eq!(m.member_id, joined.member_id);
        // As Kafka: the request header's client.id, and "/" and the IP
        // address the member's connection came from.
        assert_eq!(m.client_id.as_str(), "logbus-test");
        assert_eq!(m.client_host.as_str(), "/127.0.0.1");
        assert_eq!(&m.member_assignment[..], b"assigned");
    }
    Ok(())
}

#[test]
fn queued_max_request_bytes_is_unbounded_by_default_and_holds_any_request() -> TestResult {
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    assert_eq!(
        ServerConfig::builder(listen)
            .build()?
            .queued_max_request_bytes(),
        None
    );
    let config = ServerConfig::builder(listen)
        .socket_request_max_bytes(1 << 20)
        .queued_max_request_bytes(Some(1 << 20))
        .build()?;
    assert_eq!(config.queued_max_request_bytes(), Some(1 << 20));
    // As Kafka: the budget must hold the largest request the socket takes.
    let err = ServerConfig::builder(listen)
        .socket_request_max_bytes(1 << 20)
        .queued_max_request_bytes(Some((1 << 20) - 1))
        .build()
        .unwrap_err();
    assert!(matches!(err, logbus::Error::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("queued.max.request.bytes"));

    // With a budget that holds one of these requests at a time, requests
    // from several connections take turns and are all answered.
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    cluster.create_topic(NewTopic::new("q", 1))?;
    let server = cluster.serve_with(
        ServerConfig::builder(listen)
            .socket_request_max_bytes(1 << 20)
            .queued_max_request_bytes(Some(1 << 20))
            .build()?,
    )?;
    let addr = server.addresses()[&0];
    std::thread::scope(|s| -> TestResult {
        let producers: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || -> Result<i16, String> {
                    let mut client = Client::connect(addr).map_err(|e| e.to_string())?;
                    let value = format!("{i}").repeat(600_000);
                    let records = batch(&[&value]).map_err(|e| e.to_string())?;
                    let response = client
                        .send(&produce_request("q", 0, records, -1), 9)
                        .map_err(|e| e.to_string())?;
                    Ok(response.responses[0].partition_responses[0].error_code)
                })
            })
            .collect();
        for producer in producers {
            assert_eq!(producer.join().map_err(|_| "panicked")??, 0);
        }
        Ok(())
    })?;
    assert_eq!(cluster.topic("q")?.partition(0)?.log_end_offset()?, 3);
    Ok(())
}

/// A Fetch v12 with session fields: `topics` as (topic, [(partition,
/// fetch offset)]), `forgotten` as (topic, [partition]); answers at once.
fn session_fetch(
    session_id: i32,
    epoch: i32,
    topics: &[(&str, &[(i32, i64)])],
    forgotten: &[(&str, &[i32])],
) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = 0;
    request.min_bytes = 1;
    request.max_bytes = 50 << 20;
    request.session_id = session_id;
    request.session_epoch = epoch;
    request.topics = topics
        .iter()
        .map(|(topic, partitions)| {
            let mut t = FetchTopic::default();
            t.topic = name(topic);
            t.partitions = partitions
                .iter()
                .map(|(partition, offset)| {
                    let mut p = FetchPartition::default();
                    p.partition = *partition;
                    p.fetch_offset = *offset;
                    p.partition_max_bytes = 1 << 20;
                    p
                })
                .collect();
            t
        })
        .collect();
    request.forgotten_topics_data = forgotten
        .iter()
        .map(|(topic, partitions)| {
            let mut f = ForgottenTopic::default();
            f.topic = name(topic);
            f.partitions = partitions.to_vec();
            f
        })
        .collect();
    request
}

/// One partition of a fetch response: (topic, partition, error, values).
type Answered = (String, i32, i16, Vec<String>);

/// A fetch response's partitions.
fn answered(response: &FetchResponse) -> TestResult<Vec<Answered>> {
    let mut out = Vec::new();
    for t in &response.responses {
        for p in &t.partitions {
            out.push((
                t.topic.0.to_string(),
                p.partition_index,
                p.error_code,
                values(&p.records.clone().unwrap_or_default())?,
            ));
        }
    }
    Ok(out)
}

fn append(cluster: &Cluster, topic: &str, partition: u32, value: &str) -> TestResult {
    let mut records = batch(&[value])?.to_vec();
    cluster
        .topic(topic)?
        .partition(partition)?
        .append(&mut records)?;
    Ok(())
}

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

#[test]
fn fetch_sessions_answer_only_partitions_with_news() -> TestResult {
    let (_dir, cluster, server) = open(1)?;
    cluster.create_topic(NewTopic::new("s", 2))?;
    append(&cluster, "s", 0, "a0")?;
    let mut client = Client::connect(server.addresses()[&0])?;
    let both: &[(&str, &[(i32, i64)])] = &[("s", &[(0, 0), (1, 0)])];

    // Epoch 0 opens a session: a full response, with the session's id.
    let full = client.send(&session_fetch(0, 0, both, &[]), 12)?;
    assert_eq!(full.error_code, 0);
    let id = full.session_id;
    assert_ne!(id, 0);
    assert_eq!(
        answered(&full)?,
        [
            ("s".into(), 0, 0, vec!["a0".into()]),
            ("s".into(), 1, 0, vec![])
        ]
    );

    // Epoch 1, partition 0 moved on: nothing new anywhere, so nothing.
    let quiet = client.send(&session_fetch(id, 1, &[("s", &[(0, 1)])], &[]), 12)?;
    assert_eq!((quiet.error_code, quiet.session_id), (0, id));
    assert!(answered(&quiet)?.is_empty());

    // Epoch 2, no partition sent: only partition 1 has a record.
    append(&cluster, "s", 1, "b0")?;
    let news = client.send(&session_fetch(id, 2, &[], &[]), 12)?;
    assert_eq!(news.session_id, id);
    assert_eq!(answered(&news)?, [("s".into(), 1, 0, vec!["b0".into()])]);

    // Epoch 3 waits (long poll) until partition 0 gets a record, which is
    // all it answers.
    let mut waiting = session_fetch(id, 3, &[("s", &[(1, 1)])], &[]);
    waiting.max_wait_ms = 60_000;
    let woken = std::thread::scope(|s| {
        let fetch = s.spawn(|| client.send(&waiting, 12).map_err(|e| e.to_string()));
        append(&cluster, "s", 0, "a1").map_err(|e| e.to_string())?;
        fetch.join().map_err(|_| "panicked".to_string())?
    })?;
    assert_eq!(answered(&woken)?, [("s".into(), 0, 0, vec!["a1".into()])]);

    // A replayed epoch, and an unknown session: refused, nothing read.
    let replayed = client.send(&session_fetch(id, 3, &[], &[]), 12)?;
    assert_eq!(
        (replayed.error_code, replayed.session_id),
        (INVALID_FETCH_SESSION_EPOCH, 0)
    );
    assert!(replayed.responses.is_empty());
    let unknown = client.send(&session_fetch(id ^ 0x55, 1, &[], &[]), 12)?;
    assert_eq!(
        (unknown.error_code, unknown.session_id),
        (FETCH_SESSION_ID_NOT_FOUND, 0)
    );

    // Epoch 4: partition 1 is forgotten; new records on both show only on
    // partition 0 (still at offset 1, so a1 again, and a2).
    append(&cluster, "s", 0, "a2")?;
    append(&cluster, "s", 1, "b1")?;
    let forgot = client.send(&session_fetch(id, 4, &[], &[("s", &[1])]), 12)?;
    assert_eq!(
        answered(&forgot)?,
        [("s".into(), 0, 0, vec!["a1".into(), "a2".into()])]
    );
    // A partition added back by an incremental fetch is read again (and
    // partition 0, moved past its records, has nothing new).
    let added = client.send(&session_fetch(id, 5, &[("s", &[(0, 3), (1, 1)])], &[]), 12)?;
    assert_eq!(answered(&added)?, [("s".into(), 1, 0, vec!["b1".into()])]);

    // Epoch 0 with the session's id replaces it with a new one.
    let renewed = client.send(&session_fetch(id, 0, both, &[]), 12)?;
    assert!(renewed.session_id != 0 && renewed.session_id != id);
    assert_eq!(answered(&renewed)?.len(), 2);
    let replaced = client.send(&session_fetch(id, 6, &[], &[]), 12)?;
    assert_eq!(replaced.error_code, FETCH_SESSION_ID_NOT_FOUND);
    let id = renewed.session_id;

    // Epoch -1 closes the session: a full answer without one, and the id
    // is gone.
    let closed = client.send(&session_fetch(id, -1, both, &[]), 12)?;
    assert_eq!((closed.error_code, closed.session_id), (0, 0));
    assert_eq!(answered(&closed)?.len(), 2);
    let gone = client.send(&session_fetch(id, 1, &[], &[]), 12)?;
    assert_eq!(gone.error_code, FETCH_SESSION_ID_NOT_FOUND);

    // Below v7 there are no sessions: the fields do not exist.
    let mut old = fetch_request("s", 0, 0, 0);
    old.session_epoch = 0;
    let old = client.send(&old, 6)?;
    assert_eq!(old.session_id, 0);
    Ok(())
}

#[test]
fn a_full_session_cache_evicts_stale_then_smaller_sessions() -> TestResult {
    let dir = tempfile::tempdir()?;
    let clock = logbus::ManualClock::new(1_000_000);
    let config = ClusterConfig::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .build()?;
    let cluster = Cluster::open(dir.path(), config)?;
    cluster.create_topic(NewTopic::new("e", 3))?;
    let server = cluster.serve_with(
        ServerConfig::builder("127.0.0.1:0".parse()?)
            .max_incremental_fetch_session_cache_slots(1)
            .build()?,
    )?;
    let mut client = Client::connect(server.addresses()[&0])?;
    let mut open_session = |partitions: &[(i32, i64)]| -> TestResult<i32> {
        let topics: &[(&str, &[(i32, i64)])] = &[("e", partitions)];
        Ok(client
            .send(&session_fetch(0, 0, topics, &[]), 12)?
            .session_id)
    };
    let one = open_session(&[(0, 0)])?;
    assert_ne!(one, 0);
    // Two partitions beat one: the first session is evicted.
    let two = open_session(&[(0, 0), (1, 0)])?;
    assert_ne!(two, 0);
    // One partition does not beat two: no session.
    assert_eq!(open_session(&[(2, 0)])?, 0);
    // Unused for 120 s, the session of two may go to anyone.
    clock.advance_ms(120_000);
    let three = open_session(&[(2, 0)])?;
    assert_ne!(three, 0);
    let mut check = Client::connect(server.addresses()[&0])?;
    for (id, code) in [
        (one, FETCH_SESSION_ID_NOT_FOUND),
        (two, FETCH_SESSION_ID_NOT_FOUND),
        (three, 0),
    ] {
        let response = check.send(&session_fetch(id, 1, &[], &[]), 12)?;
        assert_eq!(response.error_code, code, "session {id}");
    }
    // No slots: no sessions.
    let none = cluster.serve_with(
        ServerConfig::builder("127.0.0.1:0".parse()?)
            .max_incremental_fetch_session_cache_slots(0)
            .build()?,
    )?;
    let mut client = Client::connect(none.addresses()[&0])?;
    let topics: &[(&str, &[(i32, i64)])] = &[("e", &[(0, 0)])];
    let response = client.send(&session_fetch(0, 0, topics, &[]), 12)?;
    assert_eq!((response.error_code, response.session_id), (0, 0));
    assert_eq!(answered(&response)?.len(), 1);
    Ok(())
}
