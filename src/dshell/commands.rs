//! What each dshell command does and prints. The same code serves batch mode (one command,
//! then exit) and the interactive shell (where a session holds and renews what it acquires).

use std::time::Duration;

use serde_json::Value;

use super::client::{check, check_timeout, granted, granted_lease, LockOptions};
use crate::clock::BootInstant;
use super::session::{batch_holder, Held, Keeper};
use super::{orch, run, watch, AcquireArgs, ClusterCommand, Command, Failure, Identity, LockCommand, Manager, MemberCommand, Orch, Output};

/// An interactive shell's session: its holder name and the locks it holds.
pub struct Session {
    pub holder: String,
    pub keeper: Keeper,
}

/// Runs one command in batch mode; the exit code.
pub fn batch(me: &Identity, command: Command, out: Output) -> Result<u8, Failure> {
    execute(me, None, command, out)
}

/// Runs one command, printing its result; the exit code (failures as `Err`).
pub fn execute(me: &Identity, session: Option<&Session>, command: Command, out: Output) -> Result<u8, Failure> {
    match command {
        Command::Manager { what: Manager::Lock { what } } => match what {
            LockCommand::Acquire(args) => acquire(me, session, args, out),
            LockCommand::Status { scope, watch: false } => status(me, &scope, out),
            LockCommand::Status { scope, watch: true } => watch::watch(me, &scope, out),
            LockCommand::Release { scope, holder, grant, force } => release(me, session, &scope, holder, grant, force, out),
            LockCommand::List => list(me, out),
            LockCommand::Run(args) => run::run(me, args),
        },
        Command::Manager { what: Manager::Member { what } } => match what {
            MemberCommand::List => members(me, out),
            MemberCommand::Remove { name, key } => remove_member(me, &name, key.as_deref(), out),
            MemberCommand::Approve { name, key } => approve_member(me, &name, key.as_deref(), out),
        },
        Command::Manager { what: Manager::Cluster { what } } => match what {
            ClusterCommand::Show => cluster(me, out),
            ClusterCommand::Voters { count } => set_voters(me, count, out),
        },
        Command::Orch { what: Orch::Run { file, vars } } => orch::run_file(me, &file, &vars),
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints the API's answer as JSON if asked (and then it is done: `None`), or returns it for
/// the text output; a failure either way.
fn text_or_json((code, v): (u16, Value), out: Output) -> Result<Option<Value>, Failure> {
    if out.json {
        print_json(&v);
    }
    check(code, &v)?;
    Ok((!out.json).then_some(v))
}

/// "2/3 nodes agreed" → "2/3 nodes".
fn nodes(v: &Value) -> String {
    v["quorum"].as_str().map(|q| q.trim_end_matches(" agreed").to_string()).unwrap_or_default()
}

/// A scope as one path segment.
pub(super) fn path_segment(scope: &str) -> String {
    scope.replace('%', "%25").replace('/', "%2F")
}

fn acquire(me: &Identity, session: Option<&Session>, args: AcquireArgs, out: Output) -> Result<u8, Failure> {
    let holder = args.holder.clone().or_else(|| session.map(|s| s.holder.clone())).unwrap_or_else(|| batch_holder(&me.user, &me.host));
    if let Some(held) = session.and_then(|s| s.keeper.get(&args.scope)).filter(|h| h.holder == holder) {
        println!("Already held by this session (fencing token {}, grant {})", held.token, held.grant);
        return Ok(0);
    }
    check_timeout(&args.timeout)?;
    let options = LockOptions {
        lock_type: Some(args.lock_type.clone()),
        timeout: Some(args.timeout.clone()),
        auto: args.auto.clone(),
        wait: args.wait.clone(),
        priority: args.priority.clone(),
        reason: args.reason.clone(),
    };
    let progress = args.wait.as_ref().and_then(|_| watch::Progress::start(me, &args.scope));
    let sent = BootInstant::now();
    let answer = me.client.lock(&args.scope, &holder, &options);
    progress.map(watch::Progress::stop);
    let (code, v) = answer?;
    if out.json {
        print_json(&v);
    }
    if let Err(Failure::Busy(why)) = check(code, &v) {
        let queued = v["queue_position"].as_u64().map(|p| format!(" (waited {}, number {p} in the queue)", args.wait.as_deref().unwrap_or("0s")));
        return Err(Failure::Busy(format!("{why}{}", queued.unwrap_or_default())));
    }
    check(code, &v)?;
    let (token, grant) = granted(&v)?;
    let (timeout, lease) = granted_lease(&v, &args.timeout)?;
    if let Some(s) = session {
        let held = Held { holder: holder.clone(), token, grant: grant.clone(), timeout: timeout.clone(), lease, renewed: sent, last_error: None };
        s.keeper.add(&args.scope, held);
    }
    if !out.json {
        println!("Lock acquired. Holder: {holder} (fencing token {token}, grant {grant}, {})", v["quorum"].as_str().unwrap_or(""));
        if let Some(source) = v["timeout_source"].as_str() {
            println!("Lease {}: {source}", v["timeout"].as_str().unwrap_or("?"));
        }
    }
    Ok(0)
}

fn status(me: &Identity, scope: &str, out: Output) -> Result<u8, Failure> {
    let Some(v) = text_or_json(me.client.get(&format!("/api/v1.0/lock/{}", path_segment(scope)))?, out)? else { return Ok(0) };
    print_status(&v);
    Ok(0)
}

/// A scope's status (as `GET /api/v1.0/lock/{scope}` answers it) for people.
pub(super) fn print_status(v: &Value) {
    let holders = v["holders"].as_array().cloned().unwrap_or_default();
    if holders.is_empty() {
        println!("FREE ({})", nodes(&v));
    } else {
        let names: Vec<&str> = holders.iter().filter_map(|h| h["holder"].as_str()).collect();
        let kind = if v["lock_type"] == "read" { " (read)" } else { "" };
        println!("LOCKED{kind} by {} ({})", names.join(", "), nodes(&v));
        for h in &holders {
            let revoked = if h["revoked"] == true { ", revoked" } else { "" };
            let waiting = if h["collected"] == false { ", handed over (its waiter has not collected it yet)" } else { "" };
            let reason = h["reason"].as_str().map(|r| format!(", reason {r}")).unwrap_or_default();
            println!(
                "  {}: fencing token {}, grant {}, held for {}, expires in {}, priority {}{reason}{revoked}{waiting}",
                h["holder"].as_str().unwrap_or("?"),
                h["fencing_token"],
                h["grant"].as_str().unwrap_or("?"),
                h["held_for"].as_str().unwrap_or("?"),
                h["expires_in"].as_str().unwrap_or("?"),
                h["priority"].as_str().unwrap_or("normal")
            );
        }
    }
    let queue = v["queue"].as_array().cloned().unwrap_or_default();
    if !queue.is_empty() {
        let waiting: Vec<String> = queue
            .iter()
            .map(|w| {
                let reason = w["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
                let waited = w["waited"].as_str().map(|t| format!(", waited {t}")).unwrap_or_default();
                format!("{}. {} ({}, {}{reason}{waited})", w["position"], w["holder"].as_str().unwrap_or("?"), w["lock_type"].as_str().unwrap_or("?"), w["priority"].as_str().unwrap_or("?"))
            })
            .collect();
        println!("Queue: {}", waiting.join(", "));
    }
    let high = v["high_priority_requests"].as_array().cloned().unwrap_or_default();
    if !high.is_empty() {
        let recent: Vec<String> = high
            .iter()
            .map(|h| format!("{} ({}) {} ago", h["holder"].as_str().unwrap_or("?"), h["reason"].as_str().unwrap_or("no reason"), h["ago"].as_str().unwrap_or("?")))
            .collect();
        println!("High priority: {}", recent.join(", "));
    }
    if let Some(c) = v.get("contention").filter(|c| c["attempts"].as_u64().unwrap_or(0) > 0) {
        println!(
            "Contention (last {}): {} waiting, hold duration {}, conflict rate {}",
            c["window"].as_str().unwrap_or("10m"),
            c["waiters"],
            c["hold_duration"].as_str().unwrap_or("?"),
            c["conflict_rate"].as_str().unwrap_or("?")
        );
    }
}

fn release(
    me: &Identity,
    session: Option<&Session>,
    scope: &str,
    holder: Option<String>,
    grant: Option<String>,
    force: bool,
    out: Output,
) -> Result<u8, Failure> {
    let held = session.and_then(|s| s.keeper.get(scope));
    let (holder, grant) = match (&holder, &held) {
        (Some(h), _) => (h.clone(), grant.or_else(|| held.as_ref().filter(|x| &x.holder == h).map(|x| x.grant.clone()))),
        (None, Some(x)) => (x.holder.clone(), grant.or_else(|| Some(x.grant.clone()))),
        (None, None) => (session.map(|s| s.holder.clone()).unwrap_or_else(|| batch_holder(&me.user, &me.host)), grant),
    };
    let answer = if force { me.client.unlock(scope, None, None, true)? } else { me.client.unlock(scope, Some(&holder), grant.as_deref(), false)? };
    let text = text_or_json(answer, out)?;
    if let Some(s) = session {
        if force || held.as_ref().is_some_and(|x| x.holder == holder && grant.as_deref() == Some(x.grant.as_str())) {
            s.keeper.remove(scope);
        }
    }
    if let Some(v) = text {
        if v["status"] == "revoked" {
            println!("Lock revoked: renewals are refused, and it ends when its lease runs out");
        } else {
            println!("Lock released");
        }
    }
    Ok(0)
}

fn list(me: &Identity, out: Output) -> Result<u8, Failure> {
    let Some(v) = text_or_json(me.client.get("/api/v1.0/locks")?, out)? else { return Ok(0) };
    let locks = v["locks"].as_array().cloned().unwrap_or_default();
    if locks.is_empty() {
        println!("No locks held");
    } else {
        println!("{:<32} {:<6} {:>7} {:>7}  HOLDERS", "SCOPE", "TYPE", "TOKEN", "WAITING");
        for l in &locks {
            let holders: Vec<&str> = l["holders"].as_array().map(|h| h.iter().filter_map(|x| x["holder"].as_str()).collect()).unwrap_or_default();
            let token = l["holders"][0]["fencing_token"].as_u64().unwrap_or(0);
            let waiting = l["waiters"].as_u64().unwrap_or(0);
            println!("{:<32} {:<6} {:>7} {:>7}  {}", l["scope"].as_str().unwrap_or("?"), l["lock_type"].as_str().unwrap_or("?"), token, waiting, holders.join(", "));
        }
    }
    if v["unread"].as_u64().unwrap_or(0) > 0 || v["truncated"] == true {
        println!("(incomplete: {} scopes could not be read{})", v["unread"], if v["truncated"] == true { ", list truncated" } else { "" });
    }
    Ok(0)
}

fn members(me: &Identity, out: Output) -> Result<u8, Failure> {
    let Some(v) = text_or_json(me.client.get("/api/v1.0/members")?, out)? else { return Ok(0) };
    println!("{:<20} {:<8} {:<8} {:<12} {:>8} {:<22} MESH", "NAME", "STATE", "ROLE", "ZONE", "UP", "HTTP");
    for m in v["members"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<20} {:<8} {:<8} {:<12} {:>8} {:<22} {}",
            m["name"].as_str().unwrap_or("?"),
            m["state"].as_str().unwrap_or("?"),
            m["role"].as_str().unwrap_or("?"),
            m["zone"].as_str().filter(|z| !z.is_empty()).unwrap_or("-"),
            m["alive_for_secs"].as_u64().map_or("-".to_string(), |s| format!("{s}s")),
            m["http_addr"].as_str().unwrap_or("?"),
            m["mesh_addr"].as_str().unwrap_or("?")
        );
    }
    println!(
        "Roster version {}: {} voters (target {}), quorum {}{}",
        v["roster_version"],
        v["roster_size"],
        v["voter_target"],
        v["quorum_size"],
        if v["sweep_done"] == true { "" } else { " (change in progress)" }
    );
    for b in v["banned"].as_array().cloned().unwrap_or_default() {
        println!("Banned: {} (key {})", b["name"].as_str().unwrap_or("(key only)"), b["key"].as_str().unwrap_or("?"));
    }
    if v["admission"] == "approve" {
        println!("Admission: approve (pending nodes wait for `dshell manager member approve NAME`)");
    }
    Ok(0)
}

fn cluster(me: &Identity, out: Output) -> Result<u8, Failure> {
    let Some(v) = text_or_json(me.client.get("/api/v1.0/cluster")?, out)? else { return Ok(0) };
    let names = |key: &str| v[key].as_array().map(|a| a.iter().filter_map(|n| n.as_str()).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    println!("Cluster {}", v["cluster_id"].as_str().unwrap_or("(none yet)"));
    println!("Voters ({} of target {}, quorum {}): {}", v["roster_size"], v["voter_target"], v["quorum_size"], names("voters"));
    println!("Members that do not vote: {}", Some(names("members")).filter(|n| !n.is_empty()).unwrap_or_else(|| "none".into()));
    for z in v["zones"].as_array().cloned().unwrap_or_default() {
        println!("Zone {}: {} voters, {} members", z["zone"].as_str().filter(|z| !z.is_empty()).unwrap_or("(none)"), z["voters"], z["members"]);
    }
    Ok(0)
}

fn set_voters(me: &Identity, count: u8, out: Output) -> Result<u8, Failure> {
    let body = serde_json::json!({"voters": count});
    let answer = me.client.call("PUT", "/api/v1.0/cluster", Some(&body), Duration::from_secs(30))?;
    if let Some(v) = text_or_json(answer, out)? {
        println!("Voter target {}: roster version {}, {} voters now (placement moves toward the target)", v["voter_target"], v["roster_version"], v["roster_size"]);
    }
    Ok(0)
}

fn remove_member(me: &Identity, name: &str, key: Option<&str>, out: Output) -> Result<u8, Failure> {
    let body = serde_json::json!({"name": name, "key": key});
    let answer = me.client.call("POST", "/api/v1.0/members/remove", Some(&body), Duration::from_secs(30))?;
    if let Some(v) = text_or_json(answer, out)? {
        println!("Removed {name}: roster version {}, {} voters", v["roster_version"], v["roster_size"]);
    }
    Ok(0)
}

fn approve_member(me: &Identity, name: &str, key: Option<&str>, out: Output) -> Result<u8, Failure> {
    let body = serde_json::json!({"name": name, "key": key});
    let answer = me.client.call("POST", "/api/v1.0/members/approve", Some(&body), Duration::from_secs(30))?;
    if let Some(v) = text_or_json(answer, out)? {
        match v["status"].as_str() {
            Some("approved") => println!("Approved {name}: roster version {}, {} voters", v["roster_version"], v["roster_size"]),
            Some("member") => println!("{name} is a member (roster version {})", v["roster_version"]),
            _ => println!("Re-admitted {name}: {}", v["note"].as_str().unwrap_or("")),
        }
    }
    Ok(0)
}

/// Releases what a session still holds, saying what could not be released.
pub fn end_session(me: &Identity, mut session: Session) {
    let super::session::Released { released, failed } = session.keeper.release_all(&me.client);
    for (scope, token) in released {
        println!("Released {scope} (token {token})");
    }
    for (scope, why) in failed {
        eprintln!("dshell: could not release {scope}: {why} (its lease will run out)");
    }
}
