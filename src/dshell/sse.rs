//! Server-sent events over the blocking HTTP client: `GET .../watch` read one event at a time.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::Duration;

use super::http::{self, HttpError, Response, Url};

/// Longest silence before the stream counts as broken: the node sends a comment every 15 s.
const SILENCE: Duration = Duration::from_secs(45);
/// The longest event accepted.
const MAX_EVENT: usize = 1024 * 1024;

/// One event: its type (`message` if unnamed), `id` and data lines joined by newlines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An open event stream, or the answer that refused it.
pub enum Opened {
    Stream(Events),
    Refused(Response),
}

pub struct Events {
    lines: BufReader<Body<BufReader<TcpStream>>>,
    /// To unblock a reader from another thread.
    socket: TcpStream,
}

impl Events {
    /// Opens `url` as an event stream, resuming after `last_id` if given.
    pub fn open(url: &Url, headers: &[(String, String)], last_id: Option<&str>) -> Result<Opened, HttpError> {
        let mut headers = headers.to_vec();
        headers.push(("Accept".into(), "text/event-stream".into()));
        if let Some(id) = last_id {
            headers.push(("Last-Event-ID".into(), id.to_string()));
        }
        let mut r = http::send("GET", url, &headers, None, SILENCE)?;
        let io = |e: String| HttpError::Io(url.authority(), e);
        let head = http::read_head(&mut r).map_err(io)?;
        if head.status != 200 {
            let body = http::read_body(&mut r, &head).map_err(io)?;
            return Ok(Opened::Refused(Response { status: head.status, body }));
        }
        let socket = r.get_ref().try_clone().map_err(|e| io(e.to_string()))?;
        let body = Body { inner: r, chunked: head.chunked, left: 0, started: false, done: false };
        Ok(Opened::Stream(Events { lines: BufReader::new(body), socket }))
    }

    /// A handle that ends the stream when shut down (from any thread).
    pub fn socket(&self) -> Result<TcpStream, String> {
        self.socket.try_clone().map_err(|e| e.to_string())
    }

    /// The next event; `None` when the stream ended.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        next_event(&mut self.lines)
    }
}

/// Parses the next event of an event stream.
fn next_event(lines: &mut impl BufRead) -> Result<Option<SseEvent>, String> {
        let mut event = SseEvent { event: String::new(), id: None, data: String::new() };
        let mut has_data = false;
        let mut line = String::new();
        loop {
            line.clear();
            let n = lines.take(MAX_EVENT as u64).read_line(&mut line).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(None);
            }
            if !line.ends_with('\n') {
                return Err(if n >= MAX_EVENT { "event too large".into() } else { "the stream ended inside an event".into() });
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if has_data {
                    if event.event.is_empty() {
                        event.event = "message".into();
                    }
                    return Ok(Some(event));
                }
                // A block without data dispatches nothing, and its type does not carry over.
                event.event.clear();
                continue;
            }
            let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
            match field {
                "" => {} // a comment: keep-alive
                "event" => event.event = value.to_string(),
                "id" => event.id = Some(value.to_string()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                    if event.data.len() > MAX_EVENT {
                        return Err("event too large".into());
                    }
                }
                _ => {}
            }
        }
}

/// A response body as plain bytes, chunked or not.
struct Body<R> {
    inner: R,
    chunked: bool,
    /// Bytes left in the current chunk.
    left: usize,
    started: bool,
    done: bool,
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            if self.started {
                let mut crlf = String::new();
                self.inner.read_line(&mut crlf)?;
            }
            self.started = true;
            self.left = http::chunk_size(&mut self.inner).map_err(std::io::Error::other)?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_from_a_chunked_stream() {
        let parts = ["id: 3\nevent: granted\ndata: {\"a\"", ": 1}\n\n: keep-alive\n\ndata: x", "\ndata: y", "\n\n"];
        let mut stream: String = parts.iter().map(|p| format!("{:x}\r\n{p}\r\n", p.len())).collect();
        stream.push_str("0\r\n\r\n");
        let body = Body { inner: stream.as_bytes(), chunked: true, left: 0, started: false, done: false };
        let mut lines = BufReader::new(body);
        let first = next_event(&mut lines).unwrap().unwrap();
        assert_eq!(first, SseEvent { event: "granted".into(), id: Some("3".into()), data: "{\"a\": 1}".into() });
        let second = next_event(&mut lines).unwrap().unwrap();
        assert_eq!(second, SseEvent { event: "message".into(), id: None, data: "x\ny".into() });
        assert_eq!(next_event(&mut lines).unwrap(), None);
    }
}
