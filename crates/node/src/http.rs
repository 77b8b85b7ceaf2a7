//! A minimal HTTP/1.1 server and GET client, enough for `/genesis.json`, `/chain_id` and `/status`.
//!
//! Hand-written on tokio rather than pulling an HTTP stack into the node image: every exchange is one
//! `GET` on a fresh connection (`Connection: close`), heads and bodies are size-bounded, and each
//! connection has a deadline, so a slow or hostile client costs one short-lived task.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::accept::accept_until_shutdown;
use crate::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request or response head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// HTTP connections served at once (health checks and status polls need few).
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request and read the answer.
const SERVER_DEADLINE: Duration = Duration::from_secs(5);

/// A parsed `http://host[:port][/path]` URL. TLS is not supported: the genesis is verified by hash,
/// so the transport needs no integrity of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Host name or IP address (IPv6 in brackets).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// Path with query, starting with `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses an `http://` URL.
    ///
    /// # Errors
    /// What is wrong with `url`, naming the expected form.
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let expected = || format!("expected http://host:port/path, got {url:?}");
        let rest = url.strip_prefix("http://").ok_or_else(expected)?;
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') || path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(expected());
        }
        let (host, port) = if authority.starts_with('[') {
            let end = authority.find(']').ok_or_else(expected)?;
            (&authority[..=end], authority[end + 1..].strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(expected)?,
        };
        if host.is_empty() || host.len() == 2 && host.starts_with('[') {
            return Err(expected());
        }
        Ok(HttpUrl { host: host.to_owned(), port, path: path.to_owned() })
    }

    /// The same host and port with another path.
    pub fn with_path(&self, path: &str) -> HttpUrl {
        HttpUrl { path: path.to_owned(), ..self.clone() }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The connection could not be made or broke.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server answered with a status other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The response was not HTTP this client understands.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The body exceeded the caller's limit.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

/// `GET url`, returning the body of a 200 response of at most `max_body` bytes.
/// The caller bounds the time (e.g. `tokio::time::timeout`).
///
/// # Errors
/// Connection failures, a non-200 status, malformed or oversized responses.
pub async fn get(url: &HttpUrl, max_body: usize) -> Result<Vec<u8>, HttpError> {
    let mut stream = TcpStream::connect(format!("{}:{}", url.host, url.port)).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: peerfleet-node\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.host, url.port
    );
    stream.write_all(request.as_bytes()).await?;
    let limit = MAX_HEAD + max_body;
    let mut raw = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "too large".
    (&mut stream).take(limit as u64 + 1).read_to_end(&mut raw).await?;
    parse_response(&raw, max_body, raw.len() > limit)
}

fn parse_response(raw: &[u8], max_body: usize, truncated: bool) -> Result<Vec<u8>, HttpError> {
    let head_end = find(raw, b"\r\n\r\n").ok_or(HttpError::Malformed("no end of head"))?;
    if head_end > MAX_HEAD {
        return Err(HttpError::Malformed("head too large"));
    }
    let head =
        std::str::from_utf8(&raw[..head_end]).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let code: u16 = code.parse().map_err(|_| HttpError::Malformed("bad status code"))?;
    if code != 200 {
        return Err(HttpError::Status(code));
    }
    let mut content_length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length =
                Some(value.parse::<usize>().map_err(|_| HttpError::Malformed("bad Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && !value.eq_ignore_ascii_case("identity") {
            return Err(HttpError::Malformed("transfer encodings (chunked) are not supported"));
        }
    }
    let body = &raw[head_end + 4..];
    match content_length {
        Some(len) if len > max_body => Err(HttpError::TooLarge(max_body)),
        Some(len) if body.len() < len => Err(HttpError::Malformed("body shorter than Content-Length")),
        Some(len) => Ok(body[..len].to_vec()),
        None if truncated || body.len() > max_body => Err(HttpError::TooLarge(max_body)),
        None => Ok(body.to_vec()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a handler answers.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: Vec<u8>) -> Response {
        Response { status: 200, content_type, body }
    }

    pub fn error(status: u16) -> Response {
        let text = format!("{}\n", reason(status));
        Response { status, content_type: "text/plain; charset=utf-8", body: text.into_bytes() }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Error",
    }
}

/// Maps a request path (query stripped) to a response.
pub(crate) type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Serves `GET` requests on `listener` until shutdown; open connections are dropped then.
pub(crate) async fn serve(listener: TcpListener, handler: Handler, mut shutdown: Shutdown) {
    accept_until_shutdown(&listener, "HTTP", MAX_CONNECTIONS, &mut shutdown, |stream, _| {
        let handler = handler.clone();
        async move {
            // A client that stalls past the deadline just loses its connection.
            let _ = tokio::time::timeout(SERVER_DEADLINE, answer(stream, handler)).await;
        }
    })
    .await;
}

async fn answer(mut stream: TcpStream, handler: Handler) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while find(&head, b"\r\n\r\n").is_none() {
        if head.len() > MAX_HEAD {
            return respond(&mut stream, &Response::error(400)).await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let response = match (parts.next(), parts.next().and_then(|t| std::str::from_utf8(t).ok())) {
        (Some(b"GET"), Some(target)) => handler(target.split('?').next().unwrap_or(target)),
        (Some(_), Some(_)) => Response::error(405),
        _ => Response::error(400),
    };
    respond(&mut stream, &response).await
}

async fn respond(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    let allow = if response.status == 405 { "Allow: GET\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&response.body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parses_host_port_and_path_with_defaults() {
        let url = HttpUrl::parse("http://genesis:8080/genesis.json").expect("valid");
        assert_eq!(url, HttpUrl { host: "genesis".into(), port: 8080, path: "/genesis.json".into() });
        assert_eq!(url.to_string(), "http://genesis:8080/genesis.json");
        let url = HttpUrl::parse("http://[::1]").expect("valid");
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("[::1]", 80, "/"));
    }

    #[test]
    fn url_rejects_other_schemes_credentials_and_bad_ports() {
        for bad in [
            "https://g/x",
            "http://",
            "http://u:p@g/x",
            "http://g:0/",
            "http://g:x/",
            "http://g/a b",
            "http://[]/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn response_body_is_cut_at_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_response(raw, 10, false).expect("ok"), b"abc");
    }

    #[test]
    fn response_without_length_reads_to_close_within_limit() {
        let raw = b"HTTP/1.0 200 OK\r\n\r\nabcdef";
        assert_eq!(parse_response(raw, 10, false).expect("ok"), b"abcdef");
        assert!(matches!(parse_response(raw, 5, false), Err(HttpError::TooLarge(5))));
    }

    #[test]
    fn response_errors_are_classified() {
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse_response(not_found, 10, false), Err(HttpError::Status(404))));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert!(matches!(parse_response(chunked, 100, false), Err(HttpError::Malformed(_))));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert!(matches!(parse_response(short, 100, false), Err(HttpError::Malformed(_))));
        assert!(matches!(parse_response(b"garbage", 100, false), Err(HttpError::Malformed(_))));
    }
}
