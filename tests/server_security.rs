//! The listener's security: SASL/PLAIN and TLS (feature `tls`), spoken to
//! as a Kafka client does (requests encoded and responses decoded with the
//! `kafka-protocol` crate's client side) and by real clients.
//!
//! - SASL/PLAIN: before authentication only ApiVersions and the SASL
//!   requests are answered (anything else closes the connection); a wrong
//!   password gets SASL_AUTHENTICATION_FAILED (58) and a closed
//!   connection; the right one, then Produce and Fetch work; an unknown
//!   mechanism gets UNSUPPORTED_SASL_MECHANISM (33) with the enabled list;
//!   handshake v0's bare token framing; the pre-authentication size bound.
//! - TLS: SSL and SASL_SSL with a certificate made in the test (rcgen), a
//!   plaintext client on a TLS port, and the idle and read timeouts under
//!   TLS.
//! - Each request is handled knowing the connection's peer address and
//!   the principal it authenticated as (`User:NAME`), as the request log
//!   shows.
//! - Binding a non-loopback address: refused without SASL, TLS or
//!   `allow_non_loopback`, accepted with SASL (or TLS).
//! - Real clients (kafka-python, confluent-kafka) over SASL_PLAINTEXT, SSL
//!   and SASL_SSL through `tests/compat/security.py`, when
//!   `LOGBUS_COMPAT_PYTHON` is set.
#![cfg(feature = "server")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use logbus::{Cluster, ClusterConfig, NewTopic, SecurityProtocol, Server, ServerConfig};

mod common;
mod wire;

use common::Captured;
use wire::*;

impl Client {
    /// SaslHandshake (v1) for PLAIN, then SaslAuthenticate at
    /// `auth_version` with `user` and `password`: the SaslAuthenticate
    /// error code.
    fn authenticate(&mut self, user: &str, password: &str, auth_version: i16) -> TestResult<i16> {
        let response = self.send(&handshake("PLAIN"), 1)?;
        assert_eq!(response.error_code, 0);
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(format!("\0{user}\0{password}"));
        let response = self.send(&request, auth_version)?;
        Ok(response.error_code)
    }
}

fn handshake(mechanism: &'static str) -> SaslHandshakeRequest {
    let mut request = SaslHandshakeRequest::default();
    request.mechanism = StrBytes::from_static_str(mechanism);
    request
}

/// Produces `values` to partition 0 of `topic` and fetches them back
/// (over `client`, authenticated if need be); checks the fetched records
/// are those stored.
fn produce_and_fetch(
    client: &mut Client,
    cluster: &Cluster,
    topic: &str,
    vals: &[&str],
) -> TestResult {
    let response = client.send(&produce_request(topic, 0, batch(vals)?, -1), 9)?;
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0);
    let base = partition.base_offset;
    let response = client.send(&fetch_request(topic, 0, base, 0), 12)?;
    let fetched = response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default();
    assert_eq!(values(&fetched)?, vals);
    let stored = cluster
        .topic(topic)?
        .partition(0)?
        .read(u64::try_from(base)?, 1 << 20)?;
    assert_eq!(values(&Bytes::copy_from_slice(stored.records()))?, vals);
    Ok(())
}

const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";

/// A one-broker cluster with topic `t`, served by `config` (its listen
/// address is replaced by 127.0.0.1:0).
fn serve(
    builder: impl FnOnce(logbus::ServerConfigBuilder) -> logbus::ServerConfigBuilder,
) -> TestResult<(tempfile::TempDir, Cluster, Server)> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    cluster.create_topic(NewTopic::new("t", 1))?;
    let config = builder(ServerConfig::builder("127.0.0.1:0".parse()?)).build()?;
    let server = cluster.serve_with(config)?;
    Ok((dir, cluster, server))
}

fn sasl(builder: logbus::ServerConfigBuilder) -> logbus::ServerConfigBuilder {
    builder
        .sasl_plain_user(USER, PASSWORD)
        .sasl_plain_user("bob", "bob-secret")
}

#[test]
fn before_authentication_only_api_versions_and_sasl_are_answered() -> TestResult {
    let (_dir, cluster, server) = serve(sasl)?;
    let addr = server.addresses()[&0];
    // ApiVersions is answered, and lists the SASL APIs.
    let mut client = Client::connect(addr)?;
    let response = client.send(&ApiVersionsRequest::default(), 3)?;
    assert_eq!(response.error_code, 0);
    let range = |key: ApiKey| {
        response
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::SaslHandshake), Some((0, 1)));
    assert_eq!(range(ApiKey::SaslAuthenticate), Some((0, 2)));
    // Metadata before SaslHandshake closes the connection.
    assert!(client.try_send(&MetadataRequest::default(), 4)?.is_none());
    // So does a produce, and nothing is stored.
    let mut client = Client::connect(addr)?;
    assert!(
        client
            .try_send(&produce_request("t", 0, batch(&["sneaky"])?, -1), 9)?
            .is_none()
    );
    assert_eq!(cluster.topic("t")?.partition(0)?.log_end_offset()?, 0);
    // SaslAuthenticate without a handshake first.
    let mut client = Client::connect(addr)?;
    let mut request = SaslAuthenticateRequest::default();
    request.auth_bytes = Bytes::from(format!("\0{USER}\0{PASSWORD}"));
    assert!(client.try_send(&request, 2)?.is_none());
    // After the handshake, anything but SaslAuthenticate (a second
    // handshake too) closes it.
    let mut client = Client::connect(addr)?;
    assert_eq!(client.send(&handshake("PLAIN"), 1)?.error_code, 0);
    assert!(client.try_send(&MetadataRequest::default(), 4)?.is_none());
    let mut client = Client::connect(addr)?;
    assert_eq!(client.send(&handshake("PLAIN"), 1)?.error_code, 0);
    assert!(client.try_send(&handshake("PLAIN"), 1)?.is_none());
    assert_eq!(server.addresses()[&0], addr);
    Ok(())
}

#[test]
fn a_wrong_password_gets_sasl_authentication_failed_and_a_closed_connection() -> TestResult {
    let (_dir, _cluster, server) = serve(sasl)?;
    let addr = server.addresses()[&0];
    for (user, password, version) in [
        (USER, "wrong", 0),
        (USER, "bob-secret", 1),
        ("mallory", PASSWORD, 2),
        (USER, "alice-secre", 2),
    ] {
        let mut client = Client::connect(addr)?;
        let response = client.send(&handshake("PLAIN"), 1)?;
        assert_eq!(response.error_code, 0);
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(format!("\0{user}\0{password}"));
        let response = client.send(&request, version)?;
        assert_eq!(response.error_code, 58, "{user}/{password}");
        assert_eq!(
            response.error_message.as_deref(),
            Some("Authentication failed: Invalid username or password")
        );
        assert!(client.is_closed()?, "{user}/{password}");
    }
    // An authorization id other than the user is refused too.
    let mut client = Client::connect(addr)?;
    client.send(&handshake("PLAIN"), 1)?;
    let mut request = SaslAuthenticateRequest::default();
    request.auth_bytes = Bytes::from(format!("bob\0{USER}\0{PASSWORD}"));
    assert_eq!(client.send(&request, 2)?.error_code, 58);
    assert!(client.is_closed()?);
    Ok(())
}

#[test]
fn the_right_password_then_produce_and_fetch_work() -> TestResult {
    let (_dir, cluster, server) = serve(sasl)?;
    let addr = server.addresses()[&0];
    // Each SaslAuthenticate version (v2 is flexible).
    for version in 0..=2 {
        let mut client = Client::connect(addr)?;
        assert_eq!(client.authenticate(USER, PASSWORD, version)?, 0);
        let value = format!("v{version}");
        produce_and_fetch(&mut client, &cluster, "t", &[&value, "second"])?;
        // A second handshake after authentication: ILLEGAL_SASL_STATE,
        // and the connection stays.
        assert_eq!(client.send(&handshake("PLAIN"), 1)?.error_code, 34);
        let mut all_topics = MetadataRequest::default();
        all_topics.topics = None;
        let metadata = client.send(&all_topics, 4)?;
        assert_eq!(metadata.topics.len(), 1);
    }
    // The other user too, authorization id given.
    let mut client = Client::connect(addr)?;
    client.send(&handshake("PLAIN"), 1)?;
    let mut request = SaslAuthenticateRequest::default();
    request.auth_bytes = Bytes::from_static(b"bob\0bob\0bob-secret");
    assert_eq!(client.send(&request, 2)?.error_code, 0);
    produce_and_fetch(&mut client, &cluster, "t", &["bob's"])?;
    assert_eq!(cluster.topic("t")?.partition(0)?.log_end_offset()?, 7);
    Ok(())
}

#[test]
fn an_unknown_mechanism_gets_unsupported_sasl_mechanism_with_the_enabled_list() -> TestResult {
    let (_dir, _cluster, server) = serve(sasl)?;
    for version in [0, 1] {
        let mut client = Client::connect(server.addresses()[&0])?;
        let response = client.send(&handshake("SCRAM-SHA-256"), version)?;
        assert_eq!(response.error_code, 33);
        let mechanisms: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
        assert_eq!(mechanisms, ["PLAIN"]);
        assert!(client.is_closed()?);
    }
    // Mechanism names are case-sensitive, as Kafka's.
    let mut client = Client::connect(server.addresses()[&0])?;
    assert_eq!(client.send(&handshake("plain"), 1)?.error_code, 33);
    Ok(())
}

#[test]
fn handshake_v0_takes_the_bare_plain_token() -> TestResult {
    let (_dir, cluster, server) = serve(sasl)?;
    let addr = server.addresses()[&0];
    let mut client = Client::connect(addr)?;
    let response = client.send(&handshake("PLAIN"), 0)?;
    assert_eq!(response.error_code, 0);
    // The token as a bare size-prefixed frame; an empty frame back.
    client.write_frame(format!("\0{USER}\0{PASSWORD}").as_bytes())?;
    let answer = client.read_frame()?.ok_or("closed")?;
    assert!(answer.is_empty());
    produce_and_fetch(&mut client, &cluster, "t", &["v0"])?;
    // A wrong one: the connection closes without an answer.
    let mut client = Client::connect(addr)?;
    client.send(&handshake("PLAIN"), 0)?;
    client.write_frame(format!("\0{USER}\0nope").as_bytes())?;
    assert!(client.is_closed()?);
    Ok(())
}

#[test]
fn sasl_requests_on_a_listener_without_sasl_get_illegal_sasl_state() -> TestResult {
    let (_dir, _cluster, server) = serve(|b| b)?;
    let mut client = Client::connect(server.addresses()[&0])?;
    assert_eq!(client.send(&handshake("PLAIN"), 1)?.error_code, 34);
    let mut request = SaslAuthenticateRequest::default();
    request.auth_bytes = Bytes::from_static(b"\0alice\0alice-secret");
    assert_eq!(client.send(&request, 2)?.error_code, 34);
    // The connection stays.
    assert_eq!(
        client.send(&ApiVersionsRequest::default(), 3)?.error_code,
        0
    );
    Ok(())
}

#[test]
fn a_large_frame_before_authentication_closes_the_connection() -> TestResult {
    let (_dir, cluster, server) = serve(sasl)?;
    let addr = server.addresses()[&0];
    // Above sasl.server.max.receive.size (512 KiB): closed unread.
    let mut client = Client::connect(addr)?;
    let size: i32 = 512 * 1024 + 1;
    client.stream.write_all(&size.to_be_bytes())?;
    assert!(client.is_closed()?);
    // Once authenticated, a produce of more than that is served.
    let mut client = Client::connect(addr)?;
    assert_eq!(client.authenticate(USER, PASSWORD, 2)?, 0);
    let big = "x".repeat(600 * 1024);
    produce_and_fetch(&mut client, &cluster, "t", &[&big])?;
    Ok(())
}

#[test]
fn a_non_loopback_bind_needs_sasl_tls_or_allow() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
    let any = "0.0.0.0:0".parse()?;
    let refused = cluster
        .serve_with(ServerConfig::builder(any).build()?)
        .err()
        .ok_or("bound 0.0.0.0 without SASL or TLS")?;
    assert!(
        matches!(refused, logbus::Error::InvalidConfig(_)),
        "{refused}"
    );
    // With SASL it binds, and asks for authentication.
    let config = ServerConfig::builder(any)
        .sasl_plain_users([(USER, PASSWORD)])
        .build()?;
    assert!(config.non_loopback_allowed());
    assert_eq!(config.security_protocol(), SecurityProtocol::SaslPlaintext);
    assert_eq!(config.sasl_plain_usernames(), [USER]);
    let server = cluster.serve_with(config)?;
    let port = server.addresses()[&0].port();
    let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    assert!(client.try_send(&MetadataRequest::default(), 4)?.is_none());
    let mut client = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    assert_eq!(client.authenticate(USER, PASSWORD, 2)?, 0);
    assert!(client.try_send(&MetadataRequest::default(), 4)?.is_some());
    Ok(())
}

#[test]
fn sasl_users_plain_cannot_carry_are_refused_and_passwords_never_shown() -> TestResult {
    let any = "127.0.0.1:0".parse()?;
    for (user, password) in [("", "x"), ("a\0b", "x"), ("a", "")] {
        let built = ServerConfig::builder(any)
            .sasl_plain_user(user, password)
            .build();
        assert!(
            matches!(built, Err(logbus::Error::InvalidConfig(_))),
            "{user:?}"
        );
    }
    let config = ServerConfig::builder(any)
        .sasl_plain_user(USER, PASSWORD)
        .build()?;
    let shown = format!("{config:?}");
    assert!(shown.contains(USER), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    Ok(())
}

/// Runs `tests/compat/security.py CLIENT BOOTSTRAP TOPIC PROTOCOL ...`
/// against `server`; it must exit 0 and print `ok`. Then the topic holds
/// what it produced.
fn run_security_script(
    client: &str,
    module: &str,
    cluster: &Cluster,
    server: &Server,
    protocol: SecurityProtocol,
    extra: &[&str],
) -> TestResult {
    let Some(python) = compat_python(client, module)? else {
        return Ok(());
    };
    let topic = format!("secure-{}", protocol.name().to_lowercase());
    cluster.create_topic(NewTopic::new(&topic, 2))?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/security.py");
    let output = std::process::Command::new(python)
        .arg(&script)
        .args([
            client,
            &server.addresses()[&0].to_string(),
            &topic,
            protocol.name(),
        ])
        .args(extra)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.lines().any(|l| l == "ok"), "{stdout}");
    // Shown with --nocapture.
    eprintln!("{client} over {protocol}:\n{stdout}");
    let mut stored = 0;
    for p in cluster.topic(&topic)?.partitions()? {
        stored += p.log_end_offset()?;
    }
    assert_eq!(stored, 100, "security.py produces 100 records");
    Ok(())
}

fn real_client_over_sasl_plaintext(client: &str, module: &str) -> TestResult {
    let (_dir, cluster, server) = serve(sasl)?;
    run_security_script(
        client,
        module,
        &cluster,
        &server,
        SecurityProtocol::SaslPlaintext,
        &["--user", USER, "--password", PASSWORD],
    )
}

#[test]
fn kafka_python_over_sasl_plaintext() -> TestResult {
    real_client_over_sasl_plaintext("kafka-python", "kafka")
}

#[test]
fn confluent_kafka_over_sasl_plaintext() -> TestResult {
    real_client_over_sasl_plaintext("confluent-kafka", "confluent_kafka")
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use logbus::TlsConfig;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, ServerName};

    use super::*;

    /// A certificate authority and a server certificate it signed, for
    /// `localhost` and 127.0.0.1, as PEM: (CA certificate, server
    /// certificate, server key).
    pub(super) fn certificates() -> TestResult<(String, String, String)> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "logbus test CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "logbus test broker");
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &issuer)?;
        Ok((ca_cert.pem(), server_cert.pem(), server_key.serialize_pem()))
    }

    /// The listener's TLS settings from a fresh certificate, and the CA's
    /// PEM to trust.
    fn tls_config() -> TestResult<(TlsConfig, String)> {
        let (ca, cert, key) = certificates()?;
        Ok((TlsConfig::from_pem(cert.as_bytes(), key.as_bytes())?, ca))
    }

    impl Client {
        /// A client over TLS, trusting `ca_pem`, for server name
        /// 127.0.0.1.
        fn connect_tls(addr: SocketAddr, ca_pem: &str) -> TestResult<Client> {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::IpAddress(addr.ip().into());
            let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
            let sock = TcpStream::connect(addr)?;
            sock.set_read_timeout(Some(Duration::from_secs(60)))?;
            Ok(Client::over(rustls::StreamOwned::new(conn, sock)))
        }
    }

    #[test]
    fn ssl_serves_produce_and_fetch_and_a_plaintext_client_is_closed() -> TestResult {
        let (tls, ca) = tls_config()?;
        let (_dir, cluster, server) = serve(|b| b.tls(tls))?;
        let addr = server.addresses()[&0];
        let mut client = Client::connect_tls(addr, &ca)?;
        assert_eq!(
            client.send(&ApiVersionsRequest::default(), 3)?.error_code,
            0
        );
        produce_and_fetch(&mut client, &cluster, "t", &["over", "tls"])?;
        // A large response, many TLS records.
        let big = "y".repeat(300 * 1024);
        produce_and_fetch(&mut client, &cluster, "t", &[&big, &big])?;
        // A plaintext request on the TLS port: a TLS alert at most, and
        // the connection closed.
        let mut plain = TcpStream::connect(addr)?;
        plain.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut request = 10i32.to_be_bytes().to_vec();
        request.extend_from_slice(&[0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        plain.write_all(&request)?;
        let mut back = Vec::new();
        match plain.read_to_end(&mut back) {
            Ok(_) => assert!(back.is_empty() || back[0] == 0x15, "{back:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        // A client that does not trust the certificate fails its
        // handshake; the server goes on.
        let (_, other_ca, _) = certificates()?;
        let mut untrusting = Client::connect_tls(addr, &other_ca)?;
        assert!(untrusting.send(&ApiVersionsRequest::default(), 0).is_err());
        assert!(client.send(&MetadataRequest::default(), 4).is_ok());
        Ok(())
    }

    #[test]
    fn sasl_ssl_authenticates_over_tls() -> TestResult {
        let (tls, ca) = tls_config()?;
        let (_dir, cluster, server) = serve(|b| sasl(b).tls(tls))?;
        let addr = server.addresses()[&0];
        let mut client = Client::connect_tls(addr, &ca)?;
        assert!(client.try_send(&MetadataRequest::default(), 4)?.is_none());
        let mut client = Client::connect_tls(addr, &ca)?;
        client.send(&handshake("PLAIN"), 1)?;
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(format!("\0{USER}\0wrong"));
        assert_eq!(client.send(&request, 2)?.error_code, 58);
        assert!(client.is_closed()?);
        let mut client = Client::connect_tls(addr, &ca)?;
        assert_eq!(client.authenticate(USER, PASSWORD, 2)?, 0);
        produce_and_fetch(&mut client, &cluster, "t", &["sasl", "ssl"])?;
        Ok(())
    }

    #[test]
    fn idle_stalled_and_silent_tls_connections_are_closed() -> TestResult {
        // A TCP connection that never starts its handshake, and one that
        // sends half a ClientHello: closed at the read timeout.
        let (tls, ca) = tls_config()?;
        let (_dir, _cluster, server) =
            serve(|b| b.tls(tls).request_read_timeout(Duration::from_millis(50)))?;
        let addr = server.addresses()[&0];
        let mut silent = Client::connect(addr)?;
        assert!(silent.is_closed()?);
        let mut half = TcpStream::connect(addr)?;
        half.set_read_timeout(Some(Duration::from_secs(60)))?;
        // A TLS handshake record header announcing 512 bytes, and 3 of them.
        half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])?;
        let mut rest = Vec::new();
        match half.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        // A request that starts and stalls inside TLS: closed too.
        let mut stalled = Client::connect_tls(addr, &ca)?;
        stalled.stream.write_all(&[0, 0])?;
        stalled.stream.flush()?;
        assert!(stalled.is_closed()?);
        // Whole requests are still answered.
        let mut client = Client::connect_tls(addr, &ca)?;
        assert_eq!(
            client.send(&ApiVersionsRequest::default(), 2)?.error_code,
            0
        );
        drop(server);

        // socket.request.max.bytes under TLS.
        let (tls, ca) = tls_config()?;
        let (_dir, _cluster, server) = serve(|b| b.tls(tls).socket_request_max_bytes(1024))?;
        let mut large = Client::connect_tls(server.addresses()[&0], &ca)?;
        large.stream.write_all(&2048i32.to_be_bytes())?;
        large.stream.flush()?;
        assert!(large.is_closed()?);
        drop(server);

        // connections.max.idle.ms under TLS.
        let (tls, ca) = tls_config()?;
        let (_dir, _cluster, server) =
            serve(|b| b.tls(tls).connections_max_idle(Duration::from_millis(50)))?;
        let mut idle = Client::connect_tls(server.addresses()[&0], &ca)?;
        // The handshake completes on the first exchange; then idle.
        assert_eq!(idle.send(&ApiVersionsRequest::default(), 0)?.error_code, 0);
        assert!(idle.is_closed()?);
        Ok(())
    }

    #[test]
    fn tls_alone_allows_a_non_loopback_bind_and_bad_pem_is_refused() -> TestResult {
        let (tls, ca) = tls_config()?;
        let config = ServerConfig::builder("0.0.0.0:0".parse()?)
            .tls(tls)
            .build()?;
        assert_eq!(config.security_protocol(), SecurityProtocol::Ssl);
        assert!(config.tls_enabled());
        let dir = tempfile::tempdir()?;
        let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
        let server = cluster.serve_with(config)?;
        let port = server.addresses()[&0].port();
        let mut client = Client::connect_tls(SocketAddr::from(([127, 0, 0, 1], port)), &ca)?;
        assert_eq!(
            client.send(&MetadataRequest::default(), 4)?.brokers.len(),
            1
        );

        let (_, cert, key) = certificates()?;
        let (_, other_cert, _) = certificates()?;
        let refused =
            |r: logbus::Result<TlsConfig>| matches!(r, Err(logbus::Error::InvalidConfig(_)));
        assert!(refused(TlsConfig::from_pem(b"", key.as_bytes())));
        assert!(refused(TlsConfig::from_pem(cert.as_bytes(), b"")));
        assert!(refused(TlsConfig::from_pem(
            key.as_bytes(),
            cert.as_bytes()
        )));
        // A key that is not the certificate's.
        assert!(refused(TlsConfig::from_pem(
            other_cert.as_bytes(),
            key.as_bytes()
        )));
        // From files, and a missing file.
        let files = tempfile::tempdir()?;
        std::fs::write(files.path().join("cert.pem"), &cert)?;
        std::fs::write(files.path().join("key.pem"), &key)?;
        TlsConfig::from_pem_files(files.path().join("cert.pem"), files.path().join("key.pem"))?;
        assert!(matches!(
            TlsConfig::from_pem_files(files.path().join("none.pem"), files.path().join("key.pem")),
            Err(logbus::Error::Io { .. })
        ));
        Ok(())
    }

    /// Writes the CA certificate for the Python clients: its path.
    fn ca_file(dir: &tempfile::TempDir, ca: &str) -> TestResult<String> {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca)?;
        Ok(path.to_str().ok_or("path")?.to_string())
    }

    fn real_client_over_tls(client: &str, module: &str, with_sasl: bool) -> TestResult {
        let (tls, ca) = tls_config()?;
        let (dir, cluster, server) = if with_sasl {
            serve(|b| sasl(b).tls(tls))?
        } else {
            serve(|b| b.tls(tls))?
        };
        let ca = ca_file(&dir, &ca)?;
        let mut extra = vec!["--ca", ca.as_str()];
        let protocol = if with_sasl {
            extra.extend(["--user", USER, "--password", PASSWORD]);
            SecurityProtocol::SaslSsl
        } else {
            SecurityProtocol::Ssl
        };
        run_security_script(client, module, &cluster, &server, protocol, &extra)
    }

    #[test]
    fn kafka_python_over_ssl() -> TestResult {
        real_client_over_tls("kafka-python", "kafka", false)
    }

    #[test]
    fn kafka_python_over_sasl_ssl() -> TestResult {
        real_client_over_tls("kafka-python", "kafka", true)
    }

    #[test]
    fn confluent_kafka_over_ssl() -> TestResult {
        real_client_over_tls("confluent-kafka", "confluent_kafka", false)
    }

    #[test]
    fn confluent_kafka_over_sasl_ssl() -> TestResult {
        real_client_over_tls("confluent-kafka", "confluent_kafka", true)
    }
}

/// Every log line written in this test binary after the first call (a
/// global subscriber at `trace`: the listener's threads log on their own).
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("the only subscriber of this test binary");
        captured
    })
    .0
    .clone()
}

#[test]
fn each_request_is_handled_with_the_peer_and_the_authenticated_principal() -> TestResult {
    let logs = captured_logs();
    let (_dir, _cluster, server) = serve(sasl)?;
    let addr = server.addresses()[&0];
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let peer = socket.local_addr()?.to_string();
    let mut client = Client::over(socket);
    // Before authentication: ApiVersions, with no principal.
    client.send(&ApiVersionsRequest::default(), 3)?;
    assert_eq!(client.authenticate("bob", "bob-secret", 2)?, 0);
    let mut all_topics = MetadataRequest::default();
    all_topics.topics = None;
    client.send(&all_topics, 12)?;
    // The response was written after the request's line was logged.
    let text = String::from_utf8(logs.lock().unwrap().clone())?;
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("logbus listener: request") && l.contains(&peer))
        .collect();
    let line = |api: &str| {
        mine.iter()
            .find(|l| l.contains(&format!("api={api}")))
            .copied()
            .unwrap_or_else(|| panic!("no {api} request from {peer} in {mine:?}"))
    };
    assert!(!line("ApiVersions").contains("principal"));
    assert!(line("Metadata").contains("principal=\"User:bob\""));
    Ok(())
}
