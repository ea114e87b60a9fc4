//! `logbus serve`: the directory served over Kafka's wire protocol.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn serve_prints_each_broker_address_answers_and_stops_when_stdin_ends() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("cluster");
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbus"))
        .args(["serve", "--dir"])
        .arg(&data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--brokers",
            "2",
            "--stop-on-stdin-eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let line = lines.next().ok_or("serve printed too little")??;
        let address = line
            .strip_prefix("broker ")
            .and_then(|rest| rest.split(" listening on ").nth(1))
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        addresses.push(address.to_string());
    }
    // ApiVersions v0 to broker 1: size, key 18, version 0, correlation 7,
    // null client id.
    let mut stream = TcpStream::connect(&addresses[1])?;
    let mut request = 10i32.to_be_bytes().to_vec();
    request.extend_from_slice(&18i16.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes());
    request.extend_from_slice(&7i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    stream.write_all(&request)?;
    let mut head = [0u8; 10];
    stream.read_exact(&mut head)?;
    assert_eq!(i32::from_be_bytes([head[4], head[5], head[6], head[7]]), 7);
    assert_eq!(i16::from_be_bytes([head[8], head[9]]), 0, "no error");
    drop(stream);
    // End of stdin: the server stops and the cluster closes cleanly.
    drop(child.stdin.take());
    let status = child.wait()?;
    assert!(status.success(), "{status}");
    assert!(data.join("broker-1").is_dir());
    Ok(())
}

#[test]
fn serve_with_sasl_users_binds_any_address_and_asks_for_authentication() -> TestResult {
    let dir = tempfile::tempdir()?;
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        "# user:password\nalice:alice-secret\n\nbob:b:with:colons\n",
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_logbus"))
        .args(["serve", "--dir"])
        .arg(dir.path().join("cluster"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--stop-on-stdin-eof",
            "--sasl-plain-users",
        ])
        .arg(&users)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .ok_or("serve printed nothing")??;
    let port = line
        .rsplit(':')
        .next()
        .ok_or_else(|| format!("unexpected line {line:?}"))?
        .parse::<u16>()?;
    // Metadata v0 before authenticating: the connection is closed.
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    let mut request = 14i32.to_be_bytes().to_vec();
    request.extend_from_slice(&3i16.to_be_bytes());
    request.extend_from_slice(&0i16.to_be_bytes());
    request.extend_from_slice(&1i32.to_be_bytes());
    request.extend_from_slice(&(-1i16).to_be_bytes());
    request.extend_from_slice(&0i32.to_be_bytes());
    stream.write_all(&request)?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "answered before authentication: {rest:?}");
    drop(child.stdin.take());
    let status = child.wait()?;
    assert!(status.success(), "{status}");

    // A users file without a USER:PASSWORD line is refused.
    std::fs::write(&users, "alice\n")?;
    let output = Command::new(env!("CARGO_BIN_EXE_logbus"))
        .args(["serve", "--dir"])
        .arg(dir.path().join("cluster"))
        .args(["--listen", "127.0.0.1:0", "--sasl-plain-users"])
        .arg(&users)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected USER:PASSWORD"), "{stderr}");
    Ok(())
}

#[test]
fn serve_refuses_a_tls_certificate_without_a_key_and_a_bad_pem() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, "not a certificate\n")?;
    let serve = |extra: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_logbus"))
            .args(["serve", "--dir"])
            .arg(dir.path().join("cluster"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .output()
    };
    let output = serve(&["--tls-cert".as_ref(), pem.as_os_str()])?;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--tls-key"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = serve(&[
        "--tls-cert".as_ref(),
        pem.as_os_str(),
        "--tls-key".as_ref(),
        pem.as_os_str(),
    ])?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS"), "{stderr}");
    Ok(())
}

#[test]
fn serve_refuses_a_request_budget_below_the_largest_request() -> TestResult {
    let dir = tempfile::tempdir()?;
    let output = Command::new(env!("CARGO_BIN_EXE_logbus"))
        .args(["serve", "--dir"])
        .arg(dir.path().join("cluster"))
        .args(["--listen", "127.0.0.1:0", "--stop-on-stdin-eof"])
        .args(["--queued-max-request-bytes", "1024"])
        .args(["--max-incremental-fetch-session-cache-slots", "10"])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("queued.max.request.bytes"), "{stderr}");
    Ok(())
}
