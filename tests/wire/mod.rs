//! A minimal Kafka wire client and the request builders the listener's
//! tests share (`tests/server.rs`, `tests/server_security.rs`).
#![allow(dead_code, reason = "each test file uses part of it")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use logbus::Compression;
use logbus::format::{BatchBuilder, Batches};

pub(crate) type TestResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A byte stream to the listener: a socket, or TLS over one.
pub(crate) trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

/// A minimal Kafka client: one connection, one request at a time.
pub(crate) struct Client {
    pub(crate) stream: Box<dyn Wire>,
    pub(crate) correlation: i32,
}

impl Client {
    pub(crate) fn connect(addr: SocketAddr) -> TestResult<Client> {
        let stream = TcpStream::connect(addr)?;
        // A broken server fails the test instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client::over(stream))
    }

    /// A client over `stream` (a socket, or TLS over one).
    pub(crate) fn over(stream: impl Wire + 'static) -> Client {
        Client {
            stream: Box::new(stream),
            correlation: 0,
        }
    }

    /// Sends `request` at `version`; returns the decoded response, or
    /// `None` if the server closed the connection instead.
    pub(crate) fn try_send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> TestResult<Option<R::Response>> {
        self.correlation += 1;
        let correlation = self.correlation;
        let mut body = BytesMut::new();
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation;
        header.client_id = Some(StrBytes::from_static_str("logbus-test"));
        header.encode(&mut body, R::header_version(version))?;
        request.encode(&mut body, version)?;
        if self.write_frame(&body).is_err() {
            return Ok(None);
        }
        let Some(mut response) = self.read_frame()? else {
            return Ok(None);
        };
        let header = ResponseHeader::decode(
            &mut response,
            <R::Response as HeaderVersion>::header_version(version),
        )?;
        assert_eq!(header.correlation_id, correlation);
        Ok(Some(R::Response::decode(&mut response, version)?))
    }

    /// As [`Client::try_send`], the connection staying open.
    pub(crate) fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> TestResult<R::Response> {
        Ok(self
            .try_send(request, version)?
            .ok_or("the server closed the connection")?)
    }

    pub(crate) fn write_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame)?;
        self.stream.flush()
    }

    /// The next frame, or `None` if the server closed the connection.
    pub(crate) fn read_frame(&mut self) -> TestResult<Option<Bytes>> {
        let mut size = [0u8; 4];
        match self.stream.read_exact(&mut size) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Some(Bytes::from(body)))
    }

    /// Whether the server has closed the connection (it sends nothing
    /// unasked, so any frame here fails the test).
    pub(crate) fn is_closed(&mut self) -> TestResult<bool> {
        match self.read_frame()? {
            None => Ok(true),
            Some(frame) => Err(format!("an unexpected frame of {} bytes", frame.len()).into()),
        }
    }
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One batch of `values` (keys `k0`, `k1`, ...).
pub(crate) fn batch(values: &[&str]) -> TestResult<Bytes> {
    let mut b = BatchBuilder::new(Compression::None);
    for (i, v) in values.iter().enumerate() {
        let key = format!("k{i}");
        b.append(
            1_700_000_000_000 + i as i64,
            Some(key.as_bytes()),
            Some(v.as_bytes()),
            &[],
        );
    }
    Ok(b.build()?)
}

pub(crate) fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
    acks: i16,
) -> ProduceRequest {
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = name(topic);
    t.partition_data = vec![data];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 30_000;
    request.topic_data = vec![t];
    request
}

pub(crate) fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    let mut t = FetchTopic::default();
    t.topic = name(topic);
    t.partitions = vec![p];
    let mut request = FetchRequest::default();
    request.replica_id = (-1).into();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 50 << 20;
    request.topics = vec![t];
    request
}

/// The values of every record in `records`.
pub(crate) fn values(records: &Bytes) -> TestResult<Vec<String>> {
    let mut out = Vec::new();
    for batch in Batches::new(records.clone()) {
        for record in batch?.records()? {
            let record = record?;
            out.push(String::from_utf8(
                record.value().ok_or("null value")?.to_vec(),
            )?);
        }
    }
    Ok(out)
}

pub(crate) fn fetched_records(response: &FetchResponse) -> Bytes {
    response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

/// The python of `LOGBUS_COMPAT_PYTHON` if it has `module`; `None` (and a
/// SKIPPED line on stderr, which the harness does not hide) otherwise.
pub(crate) fn compat_python(client: &str, module: &str) -> TestResult<Option<std::ffi::OsString>> {
    let Some(python) = std::env::var_os("LOGBUS_COMPAT_PYTHON") else {
        let _ = writeln!(
            std::io::stderr(),
            "{client}: SKIPPED: LOGBUS_COMPAT_PYTHON is not set (a python with kafka-python, \
             confluent-kafka and the codec libraries)"
        );
        return Ok(None);
    };
    let probe = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()?;
    if !probe.status.success() {
        let _ = writeln!(
            std::io::stderr(),
            "{client}: SKIPPED: {module} is not installed for LOGBUS_COMPAT_PYTHON"
        );
        return Ok(None);
    }
    Ok(Some(python))
}
