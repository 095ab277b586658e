//! A keep-alive HTTP/1.1 client: one persistent connection per benchmark worker, as a real
//! client library would keep it. Reconnects once if the server closed it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// Connections opened, the first included.
    pub connects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None, connects: 0 }
    }

    /// One request on the connection; the status and the body.
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        // A kept connection the server closed fails at once: try a fresh one, once.
        let reused = self.stream.is_some();
        match self.try_request(method, path, body) {
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, body)
            }
            other => other,
        }
    }

    fn try_request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).map_err(|e| format!("connect {}: {e}", self.addr))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(90))).map_err(|e| e.to_string())?;
            self.stream = Some(BufReader::new(s));
            self.connects += 1;
        }
        let Some(r) = self.stream.as_mut() else { return Err("no connection".into()) };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let sent = r.get_mut().write_all(head.as_bytes()).and_then(|_| r.get_mut().write_all(body.as_bytes()));
        let answer = sent.map_err(|e| e.to_string()).and_then(|_| read_answer(r));
        match answer {
            Ok((status, body, close)) => {
                if close {
                    self.stream = None;
                }
                Ok((status, body))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Status, body, and whether the server will close the connection.
fn read_answer(r: &mut BufReader<TcpStream>) -> Result<(u16, String, bool), String> {
    let mut line = String::new();
    if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("not HTTP: {line:?}"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(|_| "bad chunk".to_string())?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line).map_err(|e| e.to_string())?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(|e| e.to_string())?;
            line.clear();
            r.read_line(&mut line).map_err(|e| e.to_string())?;
        }
    } else {
        let n = length.ok_or("no content-length")?;
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}
