//! Hostile and careless clients against a real server on port 0, over raw TCP so the
//! test controls exactly which bytes are sent and when: early rejections on the request
//! head, slowloris connections, idle keep-alive connections and the connection cap.
//!
//! Every wait here is bounded by [`BOUND`], which only stops a hung run; no test asserts
//! how fast anything happened.

use std::time::Duration;

use fastk::config::Config;
use fastk::server::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any one wait (a response, a close).
const BOUND: Duration = Duration::from_secs(30);
const TOKEN: &str = "s3cret-token";

async fn server(configure: impl FnOnce(&mut Config)) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::common::server_config(dir.path(), configure);
    (fastk::server::start(config).await.unwrap(), dir)
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
    fn code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["error"]["code"].as_str().unwrap().to_string()
    }
}

/// Reads one response with a `Content-Length` body; panics after [`BOUND`].
async fn read_response(s: &mut TcpStream) -> Head {
    tokio::time::timeout(BOUND, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.expect("read the response");
            assert!(n > 0, "connection closed before a response: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buf[end..].to_vec();
        while body.len() < len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Head {
            status: status.parse().unwrap(),
            headers,
            body,
        }
    })
    .await
    .expect("no response within the bound")
}

/// True when the server closes `s` (EOF or reset) within [`BOUND`]; bytes it still
/// sends are skipped.
async fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

async fn connect(running: &Running) -> TcpStream {
    TcpStream::connect(running.http_addr).await.unwrap()
}

/// Sends only the head of a POST declaring `length` body bytes.
async fn post_head(s: &mut TcpStream, path: &str, length: u64, extra: &str) {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: fastk\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n{extra}\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
}

/// The story: a token-protected server answered an unauthenticated POST only after
/// reading (and buffering) up to 8 MiB of its body, so 250 such clients pinned 2 GB.
/// Unknown routes and wrong methods did the same, and a declared `Content-Length` over
/// `http.max_body_bytes` was read up to the limit before the 413. Now each is answered
/// on the head alone, with `Connection: close`, while the client has sent no body byte.
#[tokio::test]
async fn rejections_come_before_the_body_and_close_the_connection() {
    let (running, _dir) = server(|c| c.auth.token = TOKEN.into()).await;
    // Under http.max_body_bytes (64 MiB) but far over http.max_drain_bytes.
    let large = 32u64 << 20;
    let huge = 10u64 << 30;
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let cases = [
        ("/v1/kline/series", large, "", 401, "unauthorized"),
        ("/v1/kline/BTC/1m/records", large, "", 401, "unauthorized"),
        ("/v1/no-such-route", large, "", 404, "not_found"),
        ("/health", large, "", 405, "invalid_argument"),
        ("/v1/kline/series", huge, "", 413, "payload_too_large"),
        (
            "/v1/kline/series",
            huge,
            auth.as_str(),
            413,
            "payload_too_large",
        ),
        (
            "/v1/no-such-route",
            huge,
            auth.as_str(),
            413,
            "payload_too_large",
        ),
    ];
    for (path, length, extra, status, code) in cases {
        let mut s = connect(&running).await;
        post_head(&mut s, path, length, extra).await;
        let r = read_response(&mut s).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{path} {r:?}"
        );
        assert!(r.closes(), "{path}: no Connection: close: {r:?}");
        assert!(closed_by_server(&mut s, BOUND).await, "{path}: left open");
    }
    running.shutdown().await;
}

/// A small rejected body (at most `http.max_drain_bytes`) is drained, so the
/// keep-alive connection serves the next request: the case the old drain was for.
#[tokio::test]
async fn a_small_rejected_body_keeps_the_connection() {
    let (running, _dir) = server(|c| c.auth.token = TOKEN.into()).await;
    let mut s = connect(&running).await;
    let body = format!("{{\"symbol\": \"KA\"{}}}", " ".repeat(16 << 10));
    post_head(&mut s, "/v1/kline/series", body.len() as u64, "").await;
    s.write_all(body.as_bytes()).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 401);
    assert!(!r.closes(), "{r:?}");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: fastk\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    running.shutdown().await;
}

/// A chunked body (no declared length) over the limit is cut off at the limit with a
/// 413 and the connection closed, instead of being read on.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_cut_off() {
    let (running, _dir) = server(|c| c.http.max_body_bytes = 4096).await;
    let mut s = connect(&running).await;
    s.write_all(
        b"POST /v1/kline/series HTTP/1.1\r\nHost: fastk\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = format!("400\r\n{}\r\n", " ".repeat(0x400));
    for _ in 0..8 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let r = read_response(&mut s).await;
    assert_eq!((r.status, r.code().as_str()), (413, "payload_too_large"));
    assert!(r.closes(), "{r:?}");
    running.shutdown().await;
}

/// The story: a connection that sent part of its request head was held forever;
/// 19,990 of them used every file descriptor and /health stopped answering. Now the
/// head must arrive within `http.header_read_timeout_s`, even when it trickles in.
#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    let (running, _dir) = server(|c| c.http.header_read_timeout_s = 1).await;
    let mut quiet = connect(&running).await;
    quiet
        .write_all(b"GET /health HTTP/1.1\r\nHost: fa")
        .await
        .unwrap();
    let mut silent = connect(&running).await;
    let mut trickle = connect(&running).await;
    let trickled = tokio::time::timeout(BOUND, async {
        for b in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        closed_by_server(&mut trickle, BOUND).await
    });
    assert!(trickled.await.unwrap_or(false), "a trickling head was held");
    assert!(
        closed_by_server(&mut quiet, BOUND).await,
        "a partial head was held"
    );
    assert!(
        closed_by_server(&mut silent, BOUND).await,
        "a silent connection was held"
    );
    running.shutdown().await;
}

/// A keep-alive connection with no request in flight is closed after
/// `http.keep_alive_idle_s`, so idle clients cannot hold descriptors forever.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let (running, _dir) = server(|c| c.http.keep_alive_idle_s = 1).await;
    let mut s = connect(&running).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: fastk\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 200);
    assert!(!r.closes());
    assert!(
        closed_by_server(&mut s, BOUND).await,
        "an idle connection was held"
    );
    running.shutdown().await;
}

/// The story: hyper's header timer also ran while a kept-alive connection waited for
/// its next request, so every idle connection was closed at `header_read_timeout_s`
/// (10 s), not `keep_alive_idle_s` (60 s), and a client reusing it after 11 s idle
/// got "server closed the connection without answering". Now a kept-alive connection
/// idle past the header timeout, within the keep-alive one, answers its next request.
#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout() {
    let (running, _dir) = server(|c| {
        c.http.header_read_timeout_s = 1;
        c.http.keep_alive_idle_s = 60;
    })
    .await;
    let mut s = connect(&running).await;
    for round in 0..2 {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: fastk\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(
            r.status, 200,
            "request {round} on the kept-alive connection"
        );
        assert!(!r.closes());
        // Idle for twice the header timeout before the next request.
        tokio::time::sleep(Duration::from_millis(2_200)).await;
    }
    running.shutdown().await;
}

/// An idle limit shorter than the header timeout closes a kept-alive connection at
/// the idle limit, counted from its last response (not from when it was accepted).
#[tokio::test]
async fn the_idle_limit_counts_from_the_last_response() {
    let (running, _dir) = server(|c| {
        c.http.header_read_timeout_s = 600;
        c.http.keep_alive_idle_s = 1;
    })
    .await;
    let mut s = connect(&running).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: fastk\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    // Closed by the server well before the 600 s header timeout would.
    assert!(
        closed_by_server(&mut s, BOUND).await,
        "an idle kept-alive connection was held past keep_alive_idle_s"
    );
    running.shutdown().await;
}

/// With `http.max_connections` slowloris connections open (and a header timeout far
/// away), /health still answers: the longest-idle connection is closed to make room.
/// More connections than the cap are never held.
#[tokio::test]
async fn health_answers_while_the_connection_cap_is_full() {
    let cap = 8;
    let (running, _dir) = server(|c| {
        c.http.max_connections = cap;
        c.http.header_read_timeout_s = 600;
        c.http.keep_alive_idle_s = 600;
    })
    .await;
    let mut loris = Vec::new();
    for _ in 0..2 * cap {
        let mut s = connect(&running).await;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: fa")
            .await
            .unwrap();
        loris.push(s);
    }
    let mut s = connect(&running).await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: fastk\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.status, 200);
    let mut closed = 0;
    for s in &mut loris {
        if closed_by_server(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(
        closed > cap,
        "{closed} of {} slowloris connections closed with a cap of {cap}",
        loris.len()
    );
    running.shutdown().await;
}

/// HTTP/2 without TLS (prior knowledge) keeps working on the new accept loop.
#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (running, _dir) = server(|_| {}).await;
    let io = hyper_util::rt::TokioIo::new(connect(&running).await);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get(format!("http://{}/health", running.http_addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(BOUND, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.version(), axum::http::Version::HTTP_2);
    drop(send);
    running.shutdown().await;
}
