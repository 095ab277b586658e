//! One benchmark worker's lock client: lockmesh's API, or etcd's lock API through its JSON
//! gateway (a session lease per worker, as `etcdctl lock` keeps one), on one kept connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::cluster::Kind;
use crate::http::Conn;

/// A grant: its fencing token (etcd: the revision that granted it) and what releases it
/// (lockmesh: the grant id the answer named; etcd: the lock's key).
pub struct Grant {
    pub token: u64,
    key: String,
}

pub struct LockClient {
    kind: Kind,
    conn: Conn,
    holder: String,
    /// etcd: the session lease every lock of this worker is attached to, and when it was
    /// last granted or kept alive.
    lease: Option<(String, Instant)>,
    requests: u64,
}

const LEASE_SECONDS: u64 = 30;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn parse(status: u16, body: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(body).map_err(|_| format!("HTTP {status}: {}", body.trim()))?;
    if status == 200 {
        Ok(v)
    } else {
        Err(format!("HTTP {status}: {}", v["status"].as_str().or(v["error"].as_str()).or(v["message"].as_str()).unwrap_or(body.trim())))
    }
}

impl LockClient {
    pub fn new(kind: Kind, addr: SocketAddr, holder: String) -> LockClient {
        LockClient { kind, conn: Conn::new(addr), holder, lease: None, requests: 0 }
    }

    /// Connections opened so far (1 means the connection was kept throughout).
    pub fn connects(&self) -> u64 {
        self.conn.connects
    }

    /// Takes the lock on `scope`, waiting for it if `wait`.
    pub fn acquire(&mut self, scope: &str, wait: bool) -> Result<Grant, String> {
        self.requests += 1;
        match self.kind {
            Kind::Lockmesh => {
                let mut body = json!({
                    "scope": scope, "holder": self.holder, "timeout": format!("{LEASE_SECONDS}s"),
                    "request_id": format!("{}-{}", self.holder, self.requests),
                });
                if wait {
                    body["wait"] = json!("120s");
                }
                let (status, text) = self.conn.request("POST", "/api/v1.0/lock", &body.to_string())?;
                let v = parse(status, &text)?;
                let token = v["fencing_token"].as_u64().ok_or_else(|| format!("no token in {text}"))?;
                let key = v["grant"].as_str().ok_or_else(|| format!("no grant in {text}"))?.to_string();
                Ok(Grant { token, key })
            }
            Kind::Etcd => {
                // etcd's lock always waits; without `wait` the benchmark never contends.
                let lease = self.session()?;
                let body = json!({"name": b64(scope), "lease": lease});
                let (status, text) = self.conn.request("POST", "/v3/lock/lock", &body.to_string())?;
                let v = parse(status, &text)?;
                let token = v["header"]["revision"].as_str().and_then(|r| r.parse().ok()).ok_or_else(|| format!("no revision in {text}"))?;
                let key = v["key"].as_str().ok_or_else(|| format!("no key in {text}"))?.to_string();
                Ok(Grant { token, key })
            }
        }
    }

    pub fn release(&mut self, scope: &str, grant: &Grant) -> Result<(), String> {
        let (status, text) = match self.kind {
            Kind::Lockmesh => {
                let body = json!({"scope": scope, "action": "unlock", "holder": self.holder, "grant": grant.key});
                self.conn.request("POST", "/api/v1.0/lock", &body.to_string())?
            }
            Kind::Etcd => self.conn.request("POST", "/v3/lock/unlock", &json!({"key": grant.key}).to_string())?,
        };
        parse(status, &text).map(|_| ())
    }

    /// etcd: the worker's session lease, granted once and kept alive every third of its TTL
    /// (as etcd's client does in the background).
    fn session(&mut self) -> Result<String, String> {
        let third = Duration::from_secs(LEASE_SECONDS / 3);
        match self.lease.clone() {
            Some((id, at)) if at.elapsed() < third => Ok(id),
            Some((id, _)) => {
                let (status, text) = self.conn.request("POST", "/v3/lease/keepalive", &json!({"ID": id}).to_string())?;
                parse(status, &text)?;
                self.lease = Some((id.clone(), Instant::now()));
                Ok(id)
            }
            None => {
                let (status, text) = self.conn.request("POST", "/v3/lease/grant", &json!({"TTL": LEASE_SECONDS}).to_string())?;
                let v = parse(status, &text)?;
                let id = v["ID"].as_str().ok_or_else(|| format!("no lease id in {text}"))?.to_string();
                self.lease = Some((id.clone(), Instant::now()));
                Ok(id)
            }
        }
    }
}
