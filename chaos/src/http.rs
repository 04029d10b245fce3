//! A single-attempt HTTP/1.1 client that knows when a request was sent.
//!
//! The workload must never guess whether a write was applied. A client
//! library that retries, pools connections or follows redirects hides the
//! one fact the checker needs: did the request reach the server? So this
//! client opens a fresh TCP connection per request, writes the request once
//! with `Connection: close`, and reads one answer, within one deadline, and
//! its errors say which side of the line they fell on:
//!
//! * [`HttpError::NotSent`] — the connection could not be opened (refused,
//!   unreachable, or no handshake before the deadline). Not a byte of the
//!   request left this process: a write certainly was not applied.
//! * [`HttpError::Lost`] — the connection was open and the request (or
//!   part of it) was written, then the answer did not arrive: broken
//!   connection, garbled answer or deadline. A write may or may not be
//!   applied. Note that a SIGSTOPped server's kernel still completes the
//!   TCP handshake, so a request to a paused node is `Lost`, not `NotSent`,
//!   which is right: the node may resume and apply it.
//!
//! Only what the harness needs is parsed: the status code, `Location` and
//! `Content-Length`, and the body.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Answers larger than this are treated as garbled.
const MAX_ANSWER: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("not sent: {0}")]
    NotSent(String),
    #[error("answer lost: {0}")]
    Lost(String),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The `error` field of a JSON error body, or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// Sends one request to `address` and reads one answer, all within
/// `timeout`.
pub async fn request(
    address: SocketAddr,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, HttpError> {
    let deadline = Instant::now() + timeout;
    let mut stream = match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(HttpError::NotSent(format!("connect {address}: {err}"))),
        Err(_) => {
            return Err(HttpError::NotSent(format!(
                "connect {address}: no handshake within {} ms",
                timeout.as_millis()
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let exchange = async {
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("writing: {e}"))?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let read = stream
                .read(&mut buffer)
                .await
                .map_err(|e| format!("reading: {e}"))?;
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..read]);
            if answer.len() > MAX_ANSWER {
                return Err("answer too large".to_string());
            }
            if let Some(parsed) = parse(&answer, false)? {
                return Ok(parsed);
            }
        }
        parse(&answer, true)?.ok_or_else(|| "connection closed mid-answer".to_string())
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(err)) => Err(HttpError::Lost(err)),
        Err(_) => Err(HttpError::Lost(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Parses a whole answer if `bytes` hold one; `closed` says the server
/// closed the connection (so a body without a length ends here).
fn parse(bytes: &[u8], closed: bool) -> Result<Option<Answer>, String> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "answer head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut location = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad content-length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("location") {
            location = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported transfer-encoding {value:?}"));
        }
    }
    let body = &bytes[end + 4..];
    let length = match length {
        Some(length) => length,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None if closed => body.len(),
        None => return Ok(None),
    };
    if body.len() < length {
        return Ok(None);
    }
    Ok(Some(Answer {
        status,
        location,
        body: body[..length].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_when_whole() {
        let a = parse(b"HTTP/1.1 204 No Content\r\nx: y\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(a.status, 204);
        assert!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", false)
                .unwrap()
                .is_none()
        );
        let a = parse(
            b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:1/k\r\ncontent-length: 2\r\n\r\n{}",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.location.as_deref(), Some("http://127.0.0.1:1/k"));
        assert_eq!(a.body, b"{}");
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        // Bind then drop a listener: its port is (almost surely) closed.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = request(address, "GET", "/", b"", Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::NotSent(_)), "{err}");
    }

    #[tokio::test]
    async fn a_silent_server_loses_the_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(socket);
        });
        let err = request(address, "PUT", "/k", b"v", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Lost(_)), "{err}");
    }
}
