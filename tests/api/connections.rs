//! Connection limits of the real binary (interface.md `limits.header_timeout_s`, `limits.max_connections`):
//! a client that never finishes its request headers is disconnected, and connections beyond the cap wait
//! until one closes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::binary::Server;

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.url.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// Reads until the peer closes the connection (or the read timeout), returning what arrived.
fn read_until_closed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut received = Vec::new();
    stream.read_to_end(&mut received)?;
    Ok(received)
}

#[test]
fn half_a_request_line_does_not_hold_a_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(&dir.path().join("data"), &[("KPS_LIMITS_HEADER_TIMEOUT_S", "1")]);
    let mut slow = connect(&server);
    slow.write_all(b"GET /healthz HT").expect("write");
    let started = Instant::now();
    let closed = read_until_closed(&mut slow);
    assert!(closed.is_ok(), "the connection was not closed within 10 s: {closed:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());

    // An idle keep-alive connection is closed after the same time; a complete request is answered.
    let mut idle = connect(&server);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: kps\r\n\r\n").expect("write");
    let answered = read_until_closed(&mut idle).expect("closed after the idle time");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answered));
}

#[test]
fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_env(&dir.path().join("data"), &[("KPS_LIMITS_MAX_CONNECTIONS", "2")]);
    // wait_ready's connections are closed; give the server a moment to see that.
    std::thread::sleep(Duration::from_millis(200));
    let request = b"GET /healthz HTTP/1.1\r\nHost: kps\r\n\r\n";
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(&server)).collect();
    for stream in &mut held {
        stream.write_all(request).expect("write");
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).expect("the first two are served");
        assert_eq!(&answer, b"HTTP/1.1 200");
    }
    let mut third = connect(&server);
    third.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
    third.write_all(request).expect("write");
    let mut answer = [0u8; 12];
    let waiting = third.read_exact(&mut answer);
    assert!(waiting.is_err(), "a third connection was served while two were open");

    drop(held.pop());
    third.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    third.read_exact(&mut answer).expect("served once a slot is free");
    assert_eq!(&answer, b"HTTP/1.1 200");
}
