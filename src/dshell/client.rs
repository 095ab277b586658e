//! The lockmesh API as dshell calls it: where the node is, who we are, and one method per
//! request. Answers come back as status and JSON; `Failure` maps them to exit codes.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::http::{self, HttpError, Url};
use super::Failure;

/// How to reach a node and who we are to it.
#[derive(Clone, Debug)]
pub struct Client {
    pub host: String,
    pub port: u16,
    /// The `Authorization` header value, if any.
    pub auth: Option<String>,
}

/// What a lock request carries besides scope and holder.
#[derive(Clone, Debug, Default)]
pub struct LockOptions {
    pub lock_type: Option<String>,
    pub timeout: Option<String>,
    /// Bounds and learning window of `timeout: auto`.
    pub auto: AutoBounds,
    pub wait: Option<String>,
    pub priority: Option<String>,
    pub reason: Option<String>,
}

/// `--min-timeout`, `--max-timeout` and `--learning-window`, for `--timeout auto`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AutoBounds {
    /// With --timeout auto: the shortest lease to choose (server default 5s).
    #[arg(long)]
    pub min_timeout: Option<String>,
    /// With --timeout auto: the longest lease, and the one used without history (default 300s).
    #[arg(long)]
    pub max_timeout: Option<String>,
    /// With --timeout auto: how many days of holds to learn from, e.g. 7d (the default).
    #[arg(long)]
    pub learning_window: Option<String>,
}

/// A `--timeout` is a duration or `auto` (chosen by the cluster from the scope's history).
pub fn check_timeout(timeout: &str) -> Result<(), Failure> {
    if timeout == "auto" || seconds(timeout).is_some() {
        Ok(())
    } else {
        Err(Failure::Usage(format!("invalid --timeout {timeout:?}: use e.g. 30s, 5m or auto")))
    }
}

/// The fencing token and grant a lock answer names.
pub fn granted(v: &Value) -> Result<(u64, String), Failure> {
    match (v["fencing_token"].as_u64(), v["grant"].as_str()) {
        (Some(token), Some(grant)) => Ok((token, grant.to_string())),
        _ => Err(Failure::Other(format!("a grant without a fencing token and grant id: {v}"))),
    }
}

/// The lease a grant got (from the answer), and what to renew it with: the `--timeout` asked
/// for (`auto` renewals keep the chosen lease and its source).
pub fn granted_lease(v: &Value, asked: &str) -> Result<(String, Duration), Failure> {
    let text = v["timeout"].as_str().unwrap_or_default();
    let lease = seconds(text).ok_or_else(|| Failure::Other(format!("a grant without a usable timeout: {v}")))?;
    Ok((asked.to_string(), Duration::from_secs_f64(lease)))
}

pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Seconds in an API duration like `"30s"` or `"500ms"` (None if it is not one).
pub fn seconds(duration: &str) -> Option<f64> {
    crate::api::input::duration_us("duration", duration).ok().map(|us| us as f64 / 1e6)
}

impl Client {
    pub fn url(&self, path: &str) -> Url {
        Url { host: self.host.clone(), port: self.port, path: path.to_string() }
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        self.auth.iter().map(|a| ("Authorization".to_string(), a.clone())).collect()
    }

    /// One request to the node; the JSON answer (or `{"error": text}` if it was not JSON).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>, timeout: Duration) -> Result<(u16, Value), Failure> {
        let body = body.map(Value::to_string);
        let answer = http::request(method, &self.url(path), &self.headers(), body.as_deref(), timeout).map_err(|e| match e {
            HttpError::Url(why) => Failure::Usage(why),
            HttpError::Connect(..) => Failure::Connect(e.to_string()),
            HttpError::Io(..) => Failure::Unavailable(format!("{e} (the outcome is unknown)")),
        })?;
        let value = serde_json::from_str(&answer.body).unwrap_or_else(|_| json!({"error": answer.body.trim()}));
        Ok((answer.status, value))
    }

    /// A lock request: `wait` extends how long we read for the answer.
    pub fn lock(&self, scope: &str, holder: &str, o: &LockOptions) -> Result<(u16, Value), Failure> {
        let mut body = json!({"scope": scope, "action": "lock", "holder": holder});
        let a = &o.auto;
        let fields = [
            ("lock_type", &o.lock_type),
            ("timeout", &o.timeout),
            ("min_timeout", &a.min_timeout),
            ("max_timeout", &a.max_timeout),
            ("learning_window", &a.learning_window),
            ("wait", &o.wait),
            ("priority", &o.priority),
            ("reason", &o.reason),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        let wait = o.wait.as_deref().and_then(seconds).unwrap_or(0.0);
        self.call("POST", "/api/v1.0/lock", Some(&body), Duration::from_secs_f64(wait + 30.0))
    }

    /// An unlock of `grant` (as the lock answer named it); without one, of the holder's grants
    /// older than the request (the server's rule for an unlock naming no grant).
    pub fn unlock(&self, scope: &str, holder: Option<&str>, grant: Option<&str>, force: bool) -> Result<(u16, Value), Failure> {
        let mut body = json!({"scope": scope, "action": "unlock"});
        if let Some(h) = holder {
            body["holder"] = json!(h);
        }
        if let Some(g) = grant {
            body["grant"] = json!(g);
        }
        if force {
            body["force"] = json!(true);
        }
        self.call("POST", "/api/v1.0/lock", Some(&body), Duration::from_secs(30))
    }

    pub fn renew(&self, scope: &str, holder: &str, grant: &str, timeout: &str, within: Duration) -> Result<(u16, Value), Failure> {
        let body = json!({"scope": scope, "action": "renew", "holder": holder, "grant": grant, "timeout": timeout});
        self.call("POST", "/api/v1.0/lock", Some(&body), within)
    }

    pub fn get(&self, path: &str) -> Result<(u16, Value), Failure> {
        self.call("GET", path, None, Duration::from_secs(30))
    }
}

/// The failure an API answer stands for, if it is not a success.
pub fn check(status: u16, v: &Value) -> Result<(), Failure> {
    let text = || v["error"].as_str().or(v["status"].as_str()).unwrap_or("").to_string();
    match status {
        200..=299 => Ok(()),
        400 | 404 | 413 => Err(Failure::Usage(text())),
        401 => Err(Failure::Auth(format!("{}: give a password (-u, DSHELL_PASSWORD) or a token (DSHELL_TOKEN)", text()))),
        403 => Err(Failure::Auth(text())),
        409 => {
            let holders: Vec<&str> = v["holders"].as_array().map(|h| h.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            Err(Failure::Busy(match (v["status"].as_str(), holders.is_empty()) {
                (Some("busy"), false) => format!("busy: held by {}", holders.join(", ")),
                (Some("busy"), true) if v["lock_delay_remaining"].is_string() => {
                    format!("busy: closed for {} more after an expired lease (lock_delay)", v["lock_delay_remaining"].as_str().unwrap_or("?"))
                }
                (Some("not_holder"), false) => match v["error"].as_str() {
                    Some(why) => format!("not the holder: {why} (held by {})", holders.join(", ")),
                    None => format!("not the holder: held by {}", holders.join(", ")),
                },
                (Some(s), _) => v["error"].as_str().map_or(s.replace('_', " "), |e| format!("{}: {e}", s.replace('_', " "))),
                (None, _) => text(),
            }))
        }
        429 | 502..=504 => Err(Failure::Unavailable(text())),
        _ => Err(Failure::Other(format!("HTTP {status}: {}", text()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_failures() {
        assert!(check(200, &json!({})).is_ok());
        assert!(matches!(check(409, &json!({"status": "busy", "holders": ["a"]})), Err(Failure::Busy(t)) if t == "busy: held by a"));
        let closed = json!({"status": "busy", "holders": [], "lock_delay_remaining": "0.8s"});
        assert!(matches!(check(409, &closed), Err(Failure::Busy(t)) if t == "busy: closed for 0.8s more after an expired lease (lock_delay)"));
        assert!(matches!(check(503, &json!({"status": "no_quorum", "error": "no quorum: 1/3"})), Err(Failure::Unavailable(t)) if t == "no quorum: 1/3"));
        assert!(matches!(check(401, &json!({"error": "no credentials"})), Err(Failure::Auth(_))));
        assert!(matches!(check(400, &json!({"error": "invalid scope"})), Err(Failure::Usage(_))));
        assert_eq!(seconds("1500ms"), Some(1.5));
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
