//! TLS for the listener (feature `tls`): [`TlsConfig`], the server's
//! certificate and key, and the TLS side of a connection.
//!
//! A connection's TLS is driven here by hand (rustls's `ServerConnection`
//! and one socket call at a time) rather than through rustls's
//! `StreamOwned`: its `read` keeps reading until a whole TLS record has
//! arrived, so a client trickling a record in byte by byte would hold it
//! past the listener's idle and request read timeouts. Here every socket
//! read is given what is left of the caller's deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The listener's TLS settings (feature `tls`): its certificate chain and
/// private key, as Kafka's `ssl.keystore.certificate.chain` and
/// `ssl.keystore.key` (with `ssl.keystore.type=PEM`). TLS 1.2 and 1.3 with
/// rustls's safe defaults; clients are not asked for certificates (for
/// mutual TLS, build a rustls configuration and use
/// [`TlsConfig::from_rustls`]).
///
/// With TLS the listener is `SSL` (or `SASL_SSL` with SASL users): a
/// client sets `security.protocol` so and trusts the certificate's issuer
/// (`ssl.ca.location` in librdkafka, `ssl_cafile` in kafka-python).
///
/// ```
/// use logbus::{Cluster, ClusterConfig, SecurityProtocol, ServerConfig, TlsConfig};
/// // A self-signed certificate for the example; a real one comes from
/// // files, with TlsConfig::from_pem_files("broker.pem", "broker.key").
/// let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
/// let tls = TlsConfig::from_pem(made.cert.pem().as_bytes(), made.signing_key.serialize_pem().as_bytes())?;
/// let config = ServerConfig::builder("127.0.0.1:0".parse()?)
///     .tls(tls)
///     .sasl_plain_user("alice", "alice-secret")
///     .build()?;
/// assert_eq!(config.security_protocol(), SecurityProtocol::SaslSsl);
/// let dir = tempfile::tempdir()?;
/// let cluster = Cluster::open(dir.path(), ClusterConfig::default())?;
/// let server = cluster.serve_with(config)?;
/// // Clients connect with security.protocol=SASL_SSL, sasl.mechanism=PLAIN.
/// server.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not rustls's own Debug: nothing of the key is shown.
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// From PEM text: `cert_chain` holds the server's certificate then
    /// its intermediates (`CERTIFICATE` sections), `private_key` its key
    /// (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the PEM holds no certificate or no key,
    /// does not parse, or the key does not match the certificate or is of
    /// a kind rustls does not sign with.
    pub fn from_pem(cert_chain: &[u8], private_key: &[u8]) -> Result<TlsConfig> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidConfig(format!("the TLS certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(Error::InvalidConfig(
                "the TLS certificate chain holds no CERTIFICATE".to_string(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(private_key)
            .map_err(|e| Error::InvalidConfig(format!("the TLS private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::InvalidConfig(format!("the TLS certificate and key: {e}")))?;
        Ok(TlsConfig {
            server: Arc::new(server),
        })
    }

    /// From PEM files: see [`TlsConfig::from_pem`].
    ///
    /// # Errors
    /// [`Error::Io`] (operation `read`) if a file cannot be read; as
    /// [`TlsConfig::from_pem`] otherwise.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<TlsConfig> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| Error::io("read", path.display().to_string(), e))
        };
        TlsConfig::from_pem(&read(cert_chain.as_ref())?, &read(private_key.as_ref())?)
    }

    /// From a rustls server configuration, as it is (client certificates,
    /// protocol versions, cipher suites, ...).
    #[must_use]
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig { server: config }
    }
}

/// One TLS connection: rustls's state and the socket.
#[derive(Debug)]
pub(crate) struct TlsStream {
    conn: ServerConnection,
    sock: TcpStream,
}

/// Completes the TLS handshake on `sock` by `deadline`.
pub(crate) fn accept(
    config: &TlsConfig,
    sock: TcpStream,
    deadline: Instant,
) -> std::result::Result<TlsStream, String> {
    let conn = ServerConnection::new(config.server.clone())
        .map_err(|e| format!("no TLS connection: {e}"))?;
    let mut stream = TlsStream { conn, sock };
    while stream.conn.is_handshaking() {
        stream
            .send_pending()
            .map_err(|e| format!("TLS handshake: {e}"))?;
        if !stream.conn.is_handshaking() {
            break;
        }
        match stream.receive(deadline) {
            Ok(0) => return Err("the peer closed the connection during the TLS handshake".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("TLS handshake: {e}")),
        }
    }
    // The last flight (and TLS 1.3's session tickets).
    stream
        .send_pending()
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(stream)
}

impl TlsStream {
    /// The socket under the TLS.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Writes every TLS byte rustls has queued.
    fn send_pending(&mut self) -> std::io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sock.flush()
    }

    /// One socket read (waiting until `deadline` at most), processed:
    /// the number of bytes read, 0 at the end of the stream.
    fn receive(&mut self, deadline: Instant) -> std::io::Result<usize> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "the deadline passed",
                ));
            }
            self.sock.set_read_timeout(Some(left))?;
            let n = match self.conn.read_tls(&mut self.sock) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = self.conn.process_new_packets() {
                // The alert describing it, if the peer still listens.
                let _ = self.send_pending();
                return Err(std::io::Error::new(ErrorKind::InvalidData, e));
            }
            // Whatever the records asked for (a key update's answer).
            self.send_pending()?;
            return Ok(n);
        }
    }

    /// Reads plaintext into `buf` (at least one byte) before `deadline`:
    /// `Ok(0)` once the peer has closed the connection.
    pub(crate) fn read_before(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
    ) -> std::io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // Nothing decrypted yet: read more.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Closed without close_notify: closed all the same.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.receive(deadline)?;
        }
    }

    /// Writes all of `data` (encrypted), then flushes.
    pub(crate) fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            // rustls buffers a bounded amount: write it out and go on.
            let n = self.conn.writer().write(data)?;
            if n == 0 && !self.conn.wants_write() {
                return Err(ErrorKind::WriteZero.into());
            }
            data = &data[n..];
            self.send_pending()?;
        }
        Ok(())
    }

    /// Sends close_notify (as far as the socket takes it).
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.send_pending();
    }
}
