//! A small blocking HTTP/1.1 client: one request per connection, `Content-Length` or chunked
//! bodies, bounded time and size. Enough for the lockmesh API and orchestration steps; `https`
//! is refused with a clear error (nodes serve plain HTTP; put TLS in front if you need it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest response body read (the API's answers are small; orchestration steps rarely
/// need more).
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Why a request got no HTTP answer. `Connect`: it never reached the server (nothing was
/// done); `Io`: it may have been sent, so its effect is unknown.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Url(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("no answer from {0}: {1}")]
    Io(String, String),
}

/// A parsed `http://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        if url.starts_with("https://") {
            return Err(HttpError::Url(format!("{url}: https is not supported (lockmesh nodes serve plain HTTP)")));
        }
        let rest = url.strip_prefix("http://").ok_or_else(|| HttpError::Url(format!("{url}: only http:// URLs are supported")))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h.trim_start_matches('[').trim_end_matches(']'), p.parse().map_err(|_| HttpError::Url(format!("{url}: bad port {p:?}")))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(HttpError::Url(format!("{url}: no host")));
        }
        Ok(Url { host: host.to_string(), port, path: path.to_string() })
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Sends one request and reads the whole answer, within `timeout` per read.
pub fn request(method: &str, url: &Url, headers: &[(String, String)], body: Option<&str>, timeout: Duration) -> Result<Response, HttpError> {
    let authority = url.authority();
    let mut r = send(method, url, headers, body, timeout)?;
    let answer = read_head(&mut r).and_then(|head| read_body(&mut r, &head).map(|body| Response { status: head.status, body }));
    answer.map_err(|e| HttpError::Io(authority, e))
}

/// Connects, sends one request, and returns the connection to read the answer from.
pub(super) fn send(method: &str, url: &Url, headers: &[(String, String)], body: Option<&str>, timeout: Duration) -> Result<BufReader<TcpStream>, HttpError> {
    let authority = url.authority();
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Connect(authority.clone(), e.to_string()))?
        .collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(5))) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e.to_string(),
        }
    }
    let mut stream = stream.ok_or_else(|| HttpError::Connect(authority.clone(), last))?;
    let io = |e: std::io::Error| HttpError::Io(authority.clone(), e.to_string());
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let body = body.unwrap_or("");
    let mut head = format!("{method} {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n", url.path, body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) && !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(HttpError::Url(format!("header {k:?} is not a valid header")));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body.as_bytes()).map_err(io)?;
    Ok(BufReader::new(stream))
}

/// The status line and the headers that say how the body is framed.
pub(super) struct Head {
    pub status: u16,
    length: Option<usize>,
    pub chunked: bool,
}

pub(super) fn read_head(r: &mut impl BufRead) -> Result<Head, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("not an HTTP answer: {:?}", line.trim()))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    Ok(Head { status, length, chunked })
}

/// The size of the next chunk of a chunked body (0 at its end).
pub(super) fn chunk_size(r: &mut impl BufRead) -> Result<usize, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16).map_err(|_| "bad chunk size".to_string())
}

pub(super) fn read_body(r: &mut impl BufRead, head: &Head) -> Result<String, String> {
    let mut line = String::new();
    let mut body = Vec::new();
    if head.chunked {
        loop {
            let size = chunk_size(r)?;
            if size == 0 {
                break;
            }
            if size > MAX_RESPONSE - body.len() {
                return Err("response too large".into());
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(|e| e.to_string())?;
            line.clear();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
        }
    } else if let Some(n) = head.length {
        if n > MAX_RESPONSE {
            return Err("response too large".into());
        }
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
    } else {
        r.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut body).map_err(|e| e.to_string())?;
        if body.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:20194/api/v1.0/lock").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 20194, "/api/v1.0/lock"));
        assert_eq!(Url::parse("http://node").unwrap(), Url { host: "node".into(), port: 80, path: "/".into() });
        assert_eq!(Url::parse("http://[::1]:8080/x").unwrap().authority(), "[::1]:8080");
        assert!(Url::parse("https://node/api").unwrap_err().to_string().contains("https is not supported"));
        assert!(Url::parse("ftp://node").is_err());
        assert!(Url::parse("http://node:99999/").is_err());
    }

    fn read_response(mut r: &[u8]) -> Result<Response, String> {
        let head = read_head(&mut r)?;
        Ok(Response { status: head.status, body: read_body(&mut r, &head)? })
    }

    #[test]
    fn bodies_by_length_and_chunks() {
        let r = read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"[..]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "hi"));
        let r = read_response(&b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (409, "abcde"));
        assert!(read_response(&b"garbage\r\n\r\n"[..]).is_err());
    }
}
