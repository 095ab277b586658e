//! Orchestrations: `dshell orch run FILE.json [--var k=v]...` runs a file of HTTP and shell
//! steps in order. A step that takes a lock through the lockmesh API makes the run hold and
//! renew it until the step that releases it, or the end of the run; later steps see
//! `{{SCOPE.fencing_token}}`, `{{SCOPE.grant}}` and `{{SCOPE.holder}}`, and shell steps get
//! `LOCKMESH_SCOPE`, `LOCKMESH_HOLDER`, `LOCKMESH_FENCING_TOKEN` and `LOCKMESH_GRANT` for the
//! lock taken last. An unlock or renew step of a held scope names its grant. When a step fails,
//! the rest are skipped except those marked `"always": true`, every lock still held is
//! released, and the run exits 1 naming the step. The whole file is checked before anything
//! runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::client::{check, seconds, Client};
use super::http::{self, Url};
use super::run::{catch_signals, restore_signals, signal_group, Job, PENDING};
use super::session::{Held, Keeper, Lost};
use super::{Failure, Identity};
use crate::clock::BootInstant;

const LOCK_PATH: &str = "/api/v1.0/lock";

#[derive(Debug)]
struct Plan {
    name: String,
    steps: Vec<Step>,
}

#[derive(Debug)]
struct Step {
    name: String,
    always: bool,
    action: Action,
}

#[derive(Debug)]
enum Action {
    Http { method: String, url: String, body: Option<Value>, headers: Vec<(String, String)>, expect: Vec<u16> },
    Shell { code: String, timeout: Option<Duration> },
}

/// A lock the run holds: where to renew and release it.
struct RunLock {
    scope: String,
    holder: String,
    token: u64,
    grant: String,
}

/// Checks the whole file: every problem, one per line, before anything runs.
fn parse(text: &str, vars: &BTreeMap<String, String>) -> Result<Plan, Vec<String>> {
    let v: Value = serde_json::from_str(text).map_err(|e| vec![format!("not valid JSON: {e}")])?;
    let mut errors = Vec::new();
    let Value::Object(top) = v else { return Err(vec!["the file must hold a JSON object".into()]) };
    for k in top.keys().filter(|k| !["name", "steps", "description"].contains(&k.as_str())) {
        errors.push(format!("unknown field {k:?} (expected name, steps, description)"));
    }
    let name = match top.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            errors.push("\"name\" is required (a non-empty string)".into());
            String::new()
        }
    };
    let raw_steps = match top.get("steps") {
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        _ => {
            errors.push("\"steps\" is required (a non-empty array)".into());
            Vec::new()
        }
    };
    let mut steps = Vec::new();
    let mut locked_scopes: Vec<String> = Vec::new();
    for (i, raw) in raw_steps.iter().enumerate() {
        let label = format!("step {} ({})", i + 1, raw.get("name").and_then(Value::as_str).map_or("unnamed".into(), |n| format!("{n:?}")));
        for placeholder in placeholders(raw) {
            let known = vars.contains_key(&placeholder)
                || placeholder.rsplit_once('.').is_some_and(|(scope, field)| {
                    ["fencing_token", "grant", "holder"].contains(&field) && locked_scopes.iter().any(|s| s == scope)
                });
            if !known {
                errors.push(format!("{label}: unknown variable {{{{{placeholder}}}}} (give it with --var, or lock that scope in an earlier step)"));
            }
        }
        match parse_step(raw) {
            Ok(step) => {
                if let Some((scope, "lock")) = step_lock_call(&step, vars) {
                    locked_scopes.push(scope);
                }
                steps.push(step);
            }
            Err(e) => errors.extend(e.into_iter().map(|e| format!("{label}: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(Plan { name, steps })
    } else {
        Err(errors)
    }
}

fn parse_step(raw: &Value) -> Result<Step, Vec<String>> {
    let Value::Object(m) = raw else { return Err(vec!["a step must be a JSON object".into()]) };
    let mut errors = Vec::new();
    let string = |k: &str, errors: &mut Vec<String>| match m.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None => None,
        Some(_) => {
            errors.push(format!("\"{k}\" must be a non-empty string"));
            None
        }
    };
    let name = string("name", &mut errors);
    if name.is_none() && errors.is_empty() {
        errors.push("\"name\" is required".into());
    }
    let always = match m.get("always") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push("\"always\" must be true or false".into());
            false
        }
    };
    let kind = string("action_type", &mut errors);
    let (allowed, action): (&[&str], Option<Action>) = match kind.as_deref() {
        Some("http") => {
            let method = string("method", &mut errors).map(|s| s.to_ascii_uppercase());
            if method.is_none() {
                errors.push("\"method\" is required for an http step".into());
            }
            if let Some(m) = &method {
                if !["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"].contains(&m.as_str()) {
                    errors.push(format!("unknown method {m:?}"));
                }
            }
            let url = string("url", &mut errors);
            match &url {
                None => errors.push("\"url\" is required for an http step".into()),
                Some(u) if !u.contains("{{") => {
                    if let Err(e) = Url::parse(u) {
                        errors.push(e.to_string());
                    }
                }
                Some(_) => {}
            }
            let headers = match m.get("headers") {
                None => Vec::new(),
                Some(Value::Object(h)) => h
                    .iter()
                    .filter_map(|(k, v)| match v.as_str() {
                        Some(v) => Some((k.clone(), v.to_string())),
                        None => {
                            errors.push(format!("header {k:?} must be a string"));
                            None
                        }
                    })
                    .collect(),
                Some(_) => {
                    errors.push("\"headers\" must be an object of strings".into());
                    Vec::new()
                }
            };
            let expect = match m.get("expect_status") {
                None => Vec::new(),
                Some(v) => {
                    let list = if let Some(a) = v.as_array() { a.clone() } else { vec![v.clone()] };
                    let codes: Vec<u16> = list.iter().filter_map(|c| c.as_u64().filter(|c| (100..600).contains(c)).map(|c| c as u16)).collect();
                    if codes.len() != list.len() || codes.is_empty() {
                        errors.push("\"expect_status\" must be an HTTP status or a list of them".into());
                    }
                    codes
                }
            };
            let action = match (method, url) {
                (Some(method), Some(url)) => Some(Action::Http { method, url, body: m.get("body").cloned(), headers, expect }),
                _ => None,
            };
            (&["name", "action_type", "method", "url", "body", "headers", "expect_status", "always", "description"], action)
        }
        Some("shell") => {
            let code = string("code", &mut errors);
            if code.is_none() {
                errors.push("\"code\" is required for a shell step".into());
            }
            let timeout = match m.get("timeout") {
                None => None,
                Some(Value::String(s)) => match seconds(s) {
                    Some(t) if t > 0.0 => Some(Duration::from_secs_f64(t)),
                    _ => {
                        errors.push(format!("invalid timeout {s:?}: use e.g. 30s, 5m"));
                        None
                    }
                },
                Some(Value::Number(n)) if n.as_f64().is_some_and(|t| t > 0.0 && t < 86_400.0) => n.as_f64().map(Duration::from_secs_f64),
                Some(_) => {
                    errors.push("\"timeout\" must be a duration like \"30s\" or a number of seconds".into());
                    None
                }
            };
            (&["name", "action_type", "code", "timeout", "always", "description"], code.map(|code| Action::Shell { code, timeout }))
        }
        Some(other) => {
            errors.push(format!("unknown action_type {other:?} (use \"http\" or \"shell\")"));
            (&[], None)
        }
        None => {
            errors.push("\"action_type\" is required (\"http\" or \"shell\")".into());
            (&[], None)
        }
    };
    if !allowed.is_empty() {
        for k in m.keys().filter(|k| !allowed.contains(&k.as_str())) {
            errors.push(format!("unknown field {k:?}"));
        }
    }
    match (name, action) {
        (Some(name), Some(action)) if errors.is_empty() => Ok(Step { name, always, action }),
        _ => Err(errors),
    }
}

/// Every `{{name}}` in a step's strings.
fn placeholders(raw: &Value) -> Vec<String> {
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    let mut texts = Vec::new();
    strings(raw, &mut texts);
    let mut found = Vec::new();
    for t in texts {
        let mut rest = t;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else { break };
            found.push(rest[start + 2..start + 2 + len].trim().to_string());
            rest = &rest[start + 2 + len + 2..];
        }
    }
    found
}

/// If a request is a call of the lock API: its scope and action.
fn lock_call(method: &str, url: &str, body: Option<&Value>) -> Option<(String, &'static str)> {
    let Some(Value::Object(body)) = body else { return None };
    let path = url.split_once("://").map(|(_, r)| r).and_then(|r| r.find('/').map(|i| &r[i..])).unwrap_or("");
    if !method.eq_ignore_ascii_case("POST") || path.trim_end_matches('/') != LOCK_PATH {
        return None;
    }
    let scope = body.get("scope")?.as_str()?.to_string();
    let action = match body.get("action").and_then(Value::as_str).unwrap_or("lock") {
        "lock" => "lock",
        "unlock" => "unlock",
        "renew" => "renew",
        _ => return None,
    };
    Some((scope, action))
}

/// The lock call a step makes, once the values known so far are put in.
fn step_lock_call(step: &Step, vars: &BTreeMap<String, String>) -> Option<(String, &'static str)> {
    let Action::Http { method, url, body, .. } = &step.action else { return None };
    lock_call(method, &substitute(url, vars), body.as_ref().map(|b| substitute_json(b, vars)).as_ref())
}

/// Puts values in for `{{ name }}` (spaces inside the braces allowed); unknown names stay.
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let (mut out, mut rest) = (String::new(), text);
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else { break };
        let name = rest[start + 2..start + 2 + len].trim();
        out.push_str(&rest[..start]);
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + len + 2]),
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Substitutes in every string of a JSON value; a string that is exactly one fencing-token
/// placeholder becomes a number (so `"fencing_token": "{{db.fencing_token}}"` is an integer).
fn substitute_json(v: &Value, vars: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => {
            let t = s.trim();
            let token = t.starts_with("{{") && t.ends_with("}}") && t.matches("{{").count() == 1 && t.trim_end_matches("}}").trim().ends_with(".fencing_token");
            let replaced = substitute(s, vars);
            match replaced.parse::<u64>() {
                Ok(n) if token => json!(n),
                _ => Value::String(replaced),
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute_json(x, vars)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), substitute_json(x, vars))).collect::<Map<_, _>>()),
        other => other.clone(),
    }
}

struct Runner<'a> {
    me: &'a Identity,
    holder: String,
    vars: BTreeMap<String, String>,
    /// One keeper per node the run took locks through (by authority and credentials).
    keepers: Vec<(Client, Keeper)>,
    /// Locks held, in the order taken.
    locks: Vec<RunLock>,
    /// Locks lost during the run, with until when they were trusted.
    lost: Vec<Lost>,
}

impl Runner<'_> {
    fn keeper(&mut self, client: &Client) -> &Keeper {
        let i = match self.keepers.iter().position(|(c, _)| c.host == client.host && c.port == client.port && c.auth == client.auth) {
            Some(i) => i,
            None => {
                self.keepers.push((client.clone(), Keeper::new(client.clone())));
                self.keepers.len() - 1
            }
        };
        &self.keepers[i].1
    }

    /// Collects locks the keepers lost; the first reason, if any was lost since last asked.
    fn collect_lost(&mut self) -> Option<String> {
        let mut first = None;
        for (_, k) in &self.keepers {
            for l in k.take_lost() {
                first.get_or_insert(format!("the lock on {} was lost: {}", l.scope, l.why));
                self.locks.retain(|x| x.scope != l.scope);
                self.lost.push(l);
            }
        }
        first
    }

    /// The earliest trusted end among the locks held or lost during the run.
    fn deadline(&self) -> Option<(String, BootInstant, Duration)> {
        let held = self.keepers.iter().flat_map(|(_, k)| {
            k.held.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(s, h)| (s.clone(), h.trusted_until(), h.lease)).collect::<Vec<_>>()
        });
        let lost = self.lost.iter().map(|l| (l.scope.clone(), l.trusted_until, Duration::ZERO));
        held.chain(lost).min_by_key(|(_, d, _)| *d)
    }

    fn http(&mut self, step: &Step) -> Result<String, String> {
        let Action::Http { method, url, body, headers, expect } = &step.action else { return Err("not an http step".into()) };
        let url_text = substitute(url, &self.vars);
        let url = Url::parse(&url_text).map_err(|e| e.to_string())?;
        let mut headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.clone(), substitute(v, &self.vars))).collect();
        let mut body = body.as_ref().map(|b| substitute_json(b, &self.vars));
        let call = lock_call(method, &url_text, body.as_ref());
        if call.is_some() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            if let Some(auth) = &self.me.client.auth {
                headers.push(("Authorization".into(), auth.clone()));
            }
        }
        // Lock calls act for this run's holder, and an unlock or renewal names its grant.
        if let (Some((scope, action)), Some(Value::Object(b))) = (&call, body.as_mut()) {
            let held = self.locks.iter().find(|l| &l.scope == scope);
            if !b.contains_key("holder") {
                b.insert("holder".into(), json!(held.map_or(self.holder.clone(), |l| l.holder.clone())));
            }
            if *action != "lock" && !b.contains_key("fencing_token") && !b.contains_key("grant") {
                if let Some(l) = held {
                    b.insert("grant".into(), json!(l.grant));
                }
            }
        }
        let wait = body.as_ref().and_then(|b| b["wait"].as_str()).and_then(seconds).unwrap_or(0.0);
        let text = body.as_ref().map(Value::to_string);
        let sent = BootInstant::now();
        let answer = http::request(method, &url, &headers, text.as_deref(), Duration::from_secs_f64(60.0 + wait)).map_err(|e| e.to_string())?;
        let ok = if expect.is_empty() { (200..300).contains(&answer.status) } else { expect.contains(&answer.status) };
        let v: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
        if !ok {
            let why = check(answer.status, &v).err().map(|f| f.text().to_string()).unwrap_or_else(|| answer.body.trim().chars().take(200).collect());
            return Err(format!("HTTP {}: {why}", answer.status));
        }
        let Some((scope, action)) = call else { return Ok(format!("HTTP {}", answer.status)) };
        let auth = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.clone());
        let client = Client { host: url.host.clone(), port: url.port, auth };
        match (action, v["fencing_token"].as_u64(), v["grant"].as_str()) {
            ("lock", Some(token), Some(grant)) if answer.status == 200 => {
                let grant = grant.to_string();
                let holder = v["holder"].as_str().or(body.as_ref().and_then(|b| b["holder"].as_str())).unwrap_or(&self.holder).to_string();
                let requested = body.as_ref().and_then(|b| b["timeout"].as_str()).unwrap_or("60s");
                let timeout = v["timeout"].as_str().unwrap_or(requested).to_string();
                let lease = Duration::from_secs_f64(seconds(&timeout).unwrap_or(0.0));
                // A grant that came after a wait is confirmed by a renewal before it is used.
                let renewed = super::run::confirm(&client, &scope, &holder, &grant, &timeout, lease, sent).map_err(|f| f.text().to_string());
                let held = Held { holder: holder.clone(), token, grant: grant.clone(), timeout, lease, renewed: renewed.clone().unwrap_or(sent), last_error: None };
                self.keeper(&client).add(&scope, held);
                self.vars.insert(format!("{scope}.fencing_token"), token.to_string());
                self.vars.insert(format!("{scope}.grant"), grant.clone());
                self.vars.insert(format!("{scope}.holder"), holder.clone());
                self.locks.retain(|l| l.scope != scope);
                self.locks.push(RunLock { scope, holder, token, grant });
                renewed?;
            }
            ("unlock", _, _) if answer.status == 200 => {
                for (_, k) in &self.keepers {
                    k.remove(&scope);
                }
                self.locks.retain(|l| l.scope != scope);
            }
            _ => {}
        }
        Ok(format!("HTTP {}", answer.status))
    }

    fn shell(&mut self, step: &Step) -> Result<String, String> {
        let Action::Shell { code, timeout } = &step.action else { return Err("not a shell step".into()) };
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(substitute(code, &self.vars));
        if let Some(l) = self.locks.last() {
            command
                .env("LOCKMESH_SCOPE", &l.scope)
                .env("LOCKMESH_HOLDER", &l.holder)
                .env("LOCKMESH_FENCING_TOKEN", l.token.to_string())
                .env("LOCKMESH_GRANT", &l.grant);
        }
        let started = BootInstant::now();
        let mut job = Job::spawn(&mut command).map_err(|e| format!("cannot start sh: {e}"))?;
        let mut stopping: Option<(BootInstant, String)> = None;
        loop {
            if let Some(status) = job.poll().map_err(|e| e.to_string())? {
                if let Some((_, why)) = stopping {
                    job.kill();
                    return Err(why);
                }
                if job.group_alive() {
                    eprintln!("dshell: step {:?} left processes running; stopping them", step.name);
                    job.stop_group(STEP_GRACE);
                }
                return match status.code() {
                    Some(0) => Ok("exit 0".into()),
                    Some(c) => Err(format!("exit code {c}")),
                    None => Err("ended by a signal".into()),
                };
            }
            let signal = PENDING.swap(0, Ordering::SeqCst);
            if signal != 0 && signal != libc::SIGTSTP {
                signal_group(job.pgid, signal);
                stopping.get_or_insert((BootInstant::now(), format!("interrupted by signal {signal}")));
            }
            let now = BootInstant::now();
            if timeout.is_some_and(|t| now - started >= t) && stopping.is_none() {
                stopping = Some((now, format!("timed out after {:.0?}", timeout.unwrap_or_default())));
                signal_group(job.pgid, libc::SIGTERM);
            }
            // A lock lost, or about to run out unrenewed: stop the step before anyone else
            // can be granted it, SIGKILL at the latest just before its trusted end.
            let lost = self.collect_lost();
            let deadline = self.deadline();
            let (grace, margin, left) = match &deadline {
                Some((_, d, lease)) => ((*lease / 3).min(STEP_GRACE), (*lease / 20).max(Duration::from_millis(200)), Some(d.saturating_duration_since(now))),
                None => (STEP_GRACE, Duration::ZERO, None),
            };
            let due = lost.or_else(|| {
                let (scope, _, _) = deadline.as_ref()?;
                left.filter(|l| *l <= grace + margin).map(|_| format!("the lock on {scope} could not be renewed in time"))
            });
            if let (None, Some(why)) = (&stopping, due) {
                signal_group(job.pgid, libc::SIGTERM);
                stopping = Some((now, why));
            }
            if let Some((at, _)) = &stopping {
                if now - *at >= STEP_GRACE || left.is_some_and(|l| l <= margin) {
                    job.kill();
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Releases every lock the run still holds.
    fn release_all(&mut self) {
        for (client, keeper) in &mut self.keepers {
            let super::session::Released { released, failed } = keeper.release_all(client);
            for (scope, token) in released {
                println!("released {scope} (token {token})");
            }
            for (scope, why) in failed {
                eprintln!("dshell: could not release {scope}: {why} (its lease will run out)");
            }
        }
        self.locks.clear();
    }
}

/// How long a step gets between SIGTERM and SIGKILL (less if a lock would run out first).
const STEP_GRACE: Duration = Duration::from_secs(5);

pub fn run_file(me: &Identity, file: &Path, vars: &[String]) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", file.display())))?;
    let mut given = BTreeMap::new();
    for v in vars {
        let (k, val) = v.split_once('=').ok_or_else(|| Failure::Usage(format!("--var {v:?}: use KEY=VALUE")))?;
        given.insert(k.trim().to_string(), val.to_string());
    }
    let plan = parse(&text, &given).map_err(|errors| Failure::Usage(format!("invalid orchestration {}:\n  {}", file.display(), errors.join("\n  "))))?;
    let holder = format!("{}@{}/orch-{}-{}", me.user, me.host, plan.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"), std::process::id());
    let mut runner = Runner { me, holder, vars: given, keepers: Vec::new(), locks: Vec::new(), lost: Vec::new() };
    catch_signals();
    let started = Instant::now();
    let total = plan.steps.len();
    let mut failed: Option<(String, String)> = None;
    println!("Orchestration {}: {total} steps", plan.name);
    for (i, step) in plan.steps.iter().enumerate() {
        let n = i + 1;
        if failed.is_some() && !step.always {
            println!("[{n}/{total}] {}: skipped", step.name);
            continue;
        }
        let kind = match &step.action {
            Action::Http { method, url, .. } => format!("{method} {}", substitute(url, &runner.vars)),
            Action::Shell { .. } => "shell".to_string(),
        };
        println!("[{n}/{total}] {} ({kind})", step.name);
        let t = Instant::now();
        let result = match &step.action {
            Action::Http { .. } => runner.http(step),
            Action::Shell { .. } => runner.shell(step),
        };
        let took = t.elapsed().as_secs_f64();
        match result {
            Ok(what) => println!("[{n}/{total}] {}: ok, {what}, {took:.2}s", step.name),
            Err(why) => {
                println!("[{n}/{total}] {}: FAILED, {why}, {took:.2}s", step.name);
                failed.get_or_insert((step.name.clone(), why));
            }
        }
        if failed.is_none() {
            if let Some(why) = runner.collect_lost() {
                failed = Some((step.name.clone(), why));
            }
        }
        // A signal between steps (or during an http step) ends the run like a failure.
        let signal = PENDING.swap(0, Ordering::SeqCst);
        if signal != 0 && signal != libc::SIGTSTP && failed.is_none() {
            failed = Some((step.name.clone(), format!("interrupted by signal {signal}")));
        }
    }
    runner.release_all();
    restore_signals();
    let took = started.elapsed().as_secs_f64();
    match failed {
        None => {
            println!("Orchestration {}: succeeded in {took:.2}s", plan.name);
            Ok(0)
        }
        Some((step, why)) => {
            println!("Orchestration {}: FAILED at step {step:?} ({why}) after {took:.2}s", plan.name);
            Err(Failure::Other(format!("orchestration {:?} failed at step {step:?}: {why}", plan.name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"name": "safe-db-migration", "steps": [
        {"name": "acquire-lock", "action_type": "http", "method": "POST", "url": "http://node:20194/api/v1.0/lock",
         "body": {"scope": "db-migration", "action": "lock"}},
        {"name": "run-migration", "action_type": "shell", "code": "alembic upgrade head"},
        {"name": "release-lock", "action_type": "http", "method": "POST", "url": "http://node:20194/api/v1.0/lock",
         "body": {"scope": "db-migration", "action": "unlock"}}]}"#;

    #[test]
    fn the_seed_example_parses() {
        let plan = parse(SEED, &BTreeMap::new()).unwrap();
        assert_eq!(plan.name, "safe-db-migration");
        assert_eq!(plan.steps.len(), 3);
        let none = BTreeMap::new();
        assert_eq!(step_lock_call(&plan.steps[0], &none), Some(("db-migration".into(), "lock")));
        assert_eq!(step_lock_call(&plan.steps[2], &none), Some(("db-migration".into(), "unlock")));
        assert_eq!(step_lock_call(&plan.steps[1], &none), None);
    }

    #[test]
    fn every_problem_is_reported_before_running() {
        let bad = r#"{"steps": [
            {"name": "a", "action_type": "ftp"},
            {"name": "b", "action_type": "http", "url": "http://x/"},
            {"action_type": "shell"},
            {"name": "d", "action_type": "shell", "code": "echo {{nope}}", "timeout": "soon"},
            {"name": "e", "action_type": "shell", "code": "true", "colour": "red"}]}"#;
        let errors = parse(bad, &BTreeMap::new()).unwrap_err();
        for expected in [
            "\"name\" is required (a non-empty string)",
            "step 1 (\"a\"): unknown action_type \"ftp\"",
            "step 2 (\"b\"): \"method\" is required",
            "step 3 (unnamed): \"name\" is required",
            "step 3 (unnamed): \"code\" is required",
            "step 4 (\"d\"): invalid timeout",
            "step 4 (\"d\"): unknown variable {{nope}}",
            "step 5 (\"e\"): unknown field \"colour\"",
        ] {
            assert!(errors.iter().any(|e| e.contains(expected)), "{expected:?} not in {errors:#?}");
        }
        assert!(parse("[]", &BTreeMap::new()).is_err());
        assert!(parse("{", &BTreeMap::new()).is_err());
    }

    #[test]
    fn placeholders_need_a_var_or_an_earlier_lock() {
        let uses_token = r#"{"name": "n", "steps": [
            {"name": "s", "action_type": "shell", "code": "echo {{db.fencing_token}} {{env}}"}]}"#;
        let vars: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())].into();
        assert!(parse(uses_token, &vars).unwrap_err()[0].contains("{{db.fencing_token}}"));
        let after_lock = r#"{"name": "n", "steps": [
            {"name": "l", "action_type": "http", "method": "POST", "url": "http://n/api/v1.0/lock", "body": {"scope": "db"}},
            {"name": "s", "action_type": "shell", "code": "echo {{db.fencing_token}} {{env}}"}]}"#;
        assert!(parse(after_lock, &vars).is_ok());
        let values: BTreeMap<String, String> = [("db.fencing_token".to_string(), "7".to_string())].into();
        assert_eq!(substitute_json(&json!({"t": "{{db.fencing_token}}", "s": "x{{db.fencing_token}}"}), &values), json!({"t": 7, "s": "x7"}));
    }
}
