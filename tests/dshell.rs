//! dshell against real agents: batch commands and their exit codes, an interactive session
//! through piped stdin, `lock run` (token and exit code passed through, ten concurrent runs
//! never overlapping, a lost lease stopping the command before anyone else gets the lock, a
//! lease that ran out during a suspend stopping it at once), and orchestrations (the seed's
//! example, a failure in the middle, validation errors).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{wait_for, Cluster};

const DSHELL: &str = env!("CARGO_BIN_EXE_dshell");

/// A dshell command against node `node`, with HOME in the test's directory and USER "ops".
fn dshell_cmd(c: &Cluster, node: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new(DSHELL);
    cmd.args(["-s", "127.0.0.1", "-p", &c.http(node).port().to_string()])
        .args(args)
        .env("HOME", &c.dir)
        .env("USER", "ops")
        .env_remove("DSHELL_SERVER")
        .env_remove("DSHELL_PORT")
        .env_remove("DSHELL_USER")
        .env_remove("DSHELL_PASSWORD")
        .env_remove("DSHELL_TOKEN")
        .stdin(Stdio::null());
    cmd
}

fn dshell(c: &Cluster, node: usize, args: &[&str]) -> Output {
    dshell_cmd(c, node, args).output().expect("dshell runs")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn batch_commands_lock_report_and_release_with_distinct_exit_codes() {
    let c = Cluster::started("dshell-batch", 3);
    let o = dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "db-migration", "--timeout", "5m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).starts_with("Lock acquired. Holder: ops@"), "{}", text(&o));
    // It names the grant, which a later release can give.
    let printed = stdout(&o);
    let grant = printed.split("grant ").nth(1).and_then(|g| g.split(',').next()).unwrap_or_default().to_string();
    assert!(grant.split_once('-').is_some_and(|(t, i)| t.parse::<u64>().is_ok() && i.parse::<u64>().is_ok()), "{printed}");

    let o = dshell(&c, 1, &["manager", "lock", "status", "--scope", "db-migration"]);
    assert!(stdout(&o).starts_with("LOCKED by ops@") && stdout(&o).contains("/3 nodes)"), "{}", text(&o));

    // Someone else: busy (3), with a one-line reason naming the holder.
    let o = dshell(&c, 2, &["manager", "lock", "acquire", "--scope", "db-migration", "--holder", "someone-else"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("busy: held by ops@"), "{}", text(&o));

    // --json prints the API's answer.
    let o = dshell(&c, 2, &["manager", "lock", "status", "--scope", "db-migration", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["status"], "locked", "{v}");

    // A release naming another grant is refused; the printed one releases it. A later batch
    // release by the same user on the same machine needs no holder.
    let o = dshell(&c, 1, &["manager", "lock", "release", "--scope", "db-migration", "--grant", "99-99"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not the one named"), "{}", text(&o));
    let o = dshell(&c, 1, &["manager", "lock", "release", "--scope", "db-migration", "--grant", &grant]);
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), "Lock released"), "{}", text(&o));
    let o = dshell(&c, 0, &["manager", "lock", "status", "--scope", "db-migration"]);
    assert!(stdout(&o).starts_with("FREE"), "{}", text(&o));

    let o = dshell(&c, 0, &["manager", "member", "list"]);
    assert!(stdout(&o).contains("node-3") && stdout(&o).contains("3 voters"), "{}", text(&o));
    assert_eq!(dshell(&c, 0, &["manager", "lock", "acquire"]).status.code(), Some(2), "usage");
    assert_eq!(dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "bad scope"]).status.code(), Some(2), "bad input");
    let closed = Command::new(DSHELL).args(["-p", "1", "manager", "lock", "list"]).env("HOME", &c.dir).output().unwrap();
    assert_eq!(closed.status.code(), Some(6), "cannot connect: {}", text(&closed));
}

#[test]
fn credentials_come_from_flags_and_environment_and_wrong_ones_exit_5() {
    let mut c = Cluster::new("dshell-auth", 3);
    let users = c.dir.join("users.toml");
    let out = Command::new(support::BIN)
        .args(["users", "add", "--file", users.to_str().unwrap(), "--name", "ops", "--role", "operator", "--password-env", "PW"])
        .env("PW", "s3cret-pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let users = users.to_str().unwrap().to_string();
    c.start_all(&["--bootstrap-expect", "3", "--users", &users]);
    wait_for("the cluster", Duration::from_secs(60), || {
        let o = dshell_cmd(&c, 0, &["-u", "ops", "manager", "member", "list", "--json"]).env("DSHELL_PASSWORD", "s3cret-pass").output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok_and(|v| v["roster_size"] == 3 && v["sweep_done"] == true)
    });
    let o = dshell_cmd(&c, 0, &["-u", "ops", "manager", "lock", "acquire", "--scope", "s"]).env("DSHELL_PASSWORD", "s3cret-pass").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = dshell_cmd(&c, 0, &["-u", "ops", "manager", "lock", "list"]).env("DSHELL_PASSWORD", "wrong").output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let o = dshell(&c, 0, &["manager", "lock", "list"]);
    assert_eq!(o.status.code(), Some(5), "no credentials: {}", text(&o));
    // An operator may not revoke.
    let o = dshell_cmd(&c, 0, &["-u", "ops", "manager", "lock", "release", "--scope", "s", "--force"]).env("DSHELL_PASSWORD", "s3cret-pass").output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
}

/// Reads a child's stdout lines on a thread.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn expect_line(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        if line.contains(what) {
            return line;
        }
    }
    panic!("no line containing {what:?} within 30 s");
}

#[test]
fn an_interactive_session_holds_and_renews_its_locks_and_releases_them_on_exit() {
    let c = Cluster::started("dshell-shell", 3);
    let mut shell = dshell_cmd(&c, 0, &[]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = shell.stdin.take().unwrap();
    let rx = lines_of(&mut shell);
    expect_line(&rx, "Session holder: ops@");
    writeln!(input, "help").unwrap();
    expect_line(&rx, "manager");
    writeln!(input, "manager lock acquire --scope deploy --timeout 2s").unwrap();
    let line = expect_line(&rx, "Lock acquired.");
    assert!(line.contains("/dshell-session-001"), "{line}");
    // Three leases later the session still holds it: it renews.
    std::thread::sleep(Duration::from_secs(6));
    let o = dshell(&c, 1, &["manager", "lock", "status", "--scope", "deploy"]);
    assert!(stdout(&o).starts_with("LOCKED by ops@") && stdout(&o).contains("dshell-session-001"), "{}", text(&o));
    writeln!(input, "manager lock status --scope deploy").unwrap();
    expect_line(&rx, "LOCKED by");
    writeln!(input, "manager lock nonsense").unwrap();
    writeln!(input, "manager lock acquire --scope other --type read").unwrap();
    expect_line(&rx, "Lock acquired.");
    writeln!(input, "manager lock release --scope other").unwrap();
    expect_line(&rx, "Lock released");
    writeln!(input, "exit").unwrap();
    let status = shell.wait().unwrap();
    assert!(status.success());
    // Exiting released the session's lock.
    let o = dshell(&c, 2, &["manager", "lock", "status", "--scope", "deploy"]);
    assert!(stdout(&o).starts_with("FREE"), "{}", text(&o));
    // The next shell is session 002.
    let o = dshell_cmd(&c, 0, &[]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap().wait_with_output().unwrap();
    assert!(stdout(&o).contains("dshell-session-002"), "{}", text(&o));
}

#[test]
fn lock_run_gives_the_command_its_token_and_returns_its_exit_code() {
    let c = Cluster::started("dshell-run", 3);
    let file = c.dir.join("seen");
    let script = format!("echo \"$LOCKMESH_SCOPE $LOCKMESH_FENCING_TOKEN $LOCKMESH_HOLDER $LOCKMESH_GRANT\" > {}; exit 3", file.display());
    let o = dshell(&c, 1, &["manager", "lock", "run", "--scope", "job", "--timeout", "2s", "--", "sh", "-c", &script]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let seen = std::fs::read_to_string(&file).unwrap();
    let parts: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(parts[0], "job");
    assert!(parts[1].parse::<u64>().unwrap() >= 1, "{seen}");
    assert!(parts[2].starts_with("ops@"), "{seen}");
    assert!(parts[3].split_once('-').is_some_and(|(t, _)| t == parts[1]), "the grant carries the token: {seen}");
    // Released when the command exited.
    assert!(stdout(&dshell(&c, 0, &["manager", "lock", "status", "--scope", "job"])).starts_with("FREE"));
    // A command that cannot start: the lock is released and dshell says so.
    let o = dshell(&c, 0, &["manager", "lock", "run", "--scope", "job", "--", "/nonexistent/tool"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o));
    assert!(stdout(&dshell(&c, 0, &["manager", "lock", "status", "--scope", "job"])).starts_with("FREE"));

    // --timeout auto: with no history the lease is --max-timeout (2s); the command runs for
    // longer, kept by renewals of the lease the cluster chose.
    let o = dshell(&c, 2, &["manager", "lock", "run", "--scope", "auto", "--timeout", "auto", "--max-timeout", "2s", "--", "sleep", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "auto", "--timeout", "auto", "--min-timeout", "1s"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("Lease 300s: auto: max_timeout, as 1 holds in 7d are fewer than 10"), "{}", text(&o));
    let o = dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "other", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn ten_concurrent_lock_runs_on_different_nodes_never_overlap_and_see_rising_tokens() {
    let c = Cluster::started("dshell-ten", 3);
    let log = c.dir.join("log");
    let script = format!(
        "echo \"start $LOCKMESH_FENCING_TOKEN $(date +%s%N)\" >> {0}; sleep 0.3; echo \"end $LOCKMESH_FENCING_TOKEN $(date +%s%N)\" >> {0}",
        log.display()
    );
    let runs: Vec<Child> = (0..10)
        .map(|i| {
            dshell_cmd(&c, i % 3, &["manager", "lock", "run", "--scope", "migration", "--wait", "120s", "--timeout", "10s", "--", "sh", "-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let o = r.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let mut events: Vec<(u128, String, u64)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            (p[2].parse().unwrap(), p[0].to_string(), p[1].parse().unwrap())
        })
        .collect();
    events.sort();
    assert_eq!(events.len(), 20, "{events:?}");
    let mut last_token = 0;
    for pair in events.chunks(2) {
        assert_eq!((pair[0].1.as_str(), pair[1].1.as_str()), ("start", "end"), "overlapping runs: {events:?}");
        assert_eq!(pair[0].2, pair[1].2, "{events:?}");
        assert!(pair[0].2 > last_token, "tokens must rise: {events:?}");
        last_token = pair[0].2;
    }
}

/// A command that records when it started and when it was stopped (TERM), in `file`.
fn stoppable(file: &Path) -> String {
    format!(
        "trap 'echo \"stopped $(date +%s%N)\" >> {0}; exit 143' TERM; echo \"started $(date +%s%N)\" >> {0}; while true; do sleep 0.1; done",
        file.display()
    )
}

/// `lock run` through node 0 of a command that marks `file` (see `stoppable`), once started.
fn run_stoppable(c: &Cluster, lease: &str, file: &Path) -> Child {
    let run = dshell_cmd(c, 0, &["manager", "lock", "run", "--scope", "job", "--timeout", lease, "--", "sh", "-c", &stoppable(file)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the command to start", Duration::from_secs(30), || recorded(file, "started").is_some());
    run
}

fn recorded(file: &Path, what: &str) -> Option<u128> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| l.strip_prefix(what)?.trim().parse().ok())
}

#[test]
fn signals_to_a_lock_run_go_to_its_command_and_the_lock_is_released() {
    let c = Cluster::started("dshell-signal", 3);
    let file = c.dir.join("marks");
    let run = dshell_cmd(&c, 2, &["manager", "lock", "run", "--scope", "job", "--", "sh", "-c", &stoppable(&file)]).spawn().unwrap();
    wait_for("the command to start", Duration::from_secs(30), || recorded(&file, "started").is_some());
    // SAFETY: kill(2) on our own child (dshell).
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "the command's own exit code: {}", text(&o));
    assert!(recorded(&file, "stopped").is_some(), "the command did not get the signal");
    assert!(stdout(&dshell(&c, 0, &["manager", "lock", "status", "--scope", "job"])).starts_with("FREE"));
}

#[test]
fn a_lock_run_whose_renewal_is_refused_stops_its_command() {
    let c = Cluster::started("dshell-revoked", 3);
    let file = c.dir.join("marks");
    let run = run_stoppable(&c, "30s", &file);
    let o = dshell(&c, 1, &["manager", "lock", "release", "--scope", "job", "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lost the lock on job: renewal refused (revoked)"), "{}", text(&o));
    assert!(recorded(&file, "stopped").is_some(), "the command was not told to stop");
}

#[test]
fn a_lock_run_that_cannot_renew_stops_its_command_before_anyone_else_is_granted() {
    let c = Cluster::started("dshell-lost", 3);
    let file = c.dir.join("marks");
    let run = run_stoppable(&c, "4s", &file);
    // node-1 alone cannot renew: its peers are stopped, for longer than the lease.
    c.pause(1, true);
    c.pause(2, true);
    std::thread::sleep(Duration::from_secs(8));
    c.pause(1, false);
    c.pause(2, false);
    // The next holder, as soon as node-1 sees its peers again.
    wait_for("the next holder to be granted", Duration::from_secs(60), || {
        dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "job", "--wait", "10s", "--holder", "next"]).status.code() == Some(0)
    });
    let granted = now_ns();
    let stopped = recorded(&file, "stopped").expect("the command was stopped");
    assert!(stopped < granted, "the command ran on after the lock was granted to the next holder");
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lost the lock on job"), "{}", text(&o));
}

/// Writes an orchestration file into the test's directory.
fn orchestration(c: &Cluster, name: &str, json: &str) -> PathBuf {
    let path = c.dir.join(name);
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn the_seed_orchestration_runs_as_written_against_a_node() {
    let c = Cluster::started("dshell-orch", 3);
    // A stand-in `alembic` that records what it was run with.
    let bin = c.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = c.dir.join("alembic-calls");
    let alembic = bin.join("alembic");
    std::fs::write(&alembic, format!("#!/bin/sh\necho \"$* $LOCKMESH_FENCING_TOKEN\" >> {}\n", calls.display())).unwrap();
    std::fs::set_permissions(&alembic, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/safe-db-migration.json")).unwrap();
    let file = orchestration(&c, "seed.json", &seed.replace("127.0.0.1:20194", &c.http(1).to_string()));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let o = dshell_cmd(&c, 0, &["orch", "run", file.to_str().unwrap()]).env("PATH", &path).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("[2/3] run-migration: ok") && stdout(&o).contains("succeeded"), "{}", text(&o));
    let call = std::fs::read_to_string(&calls).unwrap();
    assert!(call.starts_with("upgrade head "), "{call}");
    assert!(call.trim().rsplit(' ').next().unwrap().parse::<u64>().is_ok(), "the token reached the step: {call}");
    assert!(stdout(&dshell(&c, 0, &["manager", "lock", "status", "--scope", "db-migration"])).starts_with("FREE"));
}

#[test]
fn a_failing_step_skips_the_rest_releases_the_lock_and_names_the_step() {
    let c = Cluster::started("dshell-orch-fail", 3);
    let marks = c.dir.join("marks");
    // The URL comes from --var: the lock is still recognised, held and renewed.
    let url = "{{node}}/api/v1.0/lock";
    let json = format!(
        r#"{{"name": "fails", "steps": [
          {{"name": "lock", "action_type": "http", "method": "POST", "url": "{url}", "body": {{"scope": "db", "action": "lock", "timeout": "3s"}}}},
          {{"name": "slow", "action_type": "shell", "code": "sleep 4; echo slow {{{{db.fencing_token}}}} >> {m}"}},
          {{"name": "boom", "action_type": "shell", "code": "exit 4"}},
          {{"name": "never", "action_type": "shell", "code": "echo never >> {m}"}},
          {{"name": "cleanup", "action_type": "shell", "code": "echo cleanup $LOCKMESH_FENCING_TOKEN >> {m}", "always": true}},
          {{"name": "unlock", "action_type": "http", "method": "POST", "url": "{url}", "body": {{"scope": "db", "action": "unlock"}}}}]}}"#,
        m = marks.display()
    );
    let file = orchestration(&c, "fails.json", &json);
    let node = format!("node=http://{}", c.http(2));
    let o = dshell(&c, 0, &["orch", "run", file.to_str().unwrap(), "--var", &node]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failed at step \"boom\""), "{}", text(&o));
    assert!(stdout(&o).contains("[4/6] never: skipped") && stdout(&o).contains("[6/6] unlock: skipped"), "{}", text(&o));
    let m = std::fs::read_to_string(&marks).unwrap();
    // The 3 s lease outlived a 4 s step: it was renewed. The cleanup ran; "never" did not.
    assert!(m.contains("slow ") && m.contains("cleanup ") && !m.contains("never"), "{m}");
    assert!(stdout(&dshell(&c, 0, &["manager", "lock", "status", "--scope", "db"])).starts_with("FREE"), "the run released its lock");
}

#[test]
fn an_invalid_orchestration_is_refused_before_any_step_runs() {
    let c = Cluster::started("dshell-orch-invalid", 3);
    let marks = c.dir.join("marks");
    let json = format!(
        r#"{{"name": "bad", "steps": [
          {{"name": "first", "action_type": "shell", "code": "echo ran >> {}"}},
          {{"name": "second", "action_type": "ftp"}},
          {{"name": "third", "action_type": "http", "url": "http://x/"}}]}}"#,
        marks.display()
    );
    let file = orchestration(&c, "bad.json", &json);
    let o = dshell(&c, 0, &["orch", "run", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown action_type \"ftp\"") && err.contains("\"method\" is required"), "{err}");
    assert!(!marks.exists(), "a step ran before validation finished");
}

#[test]
fn status_watch_prints_each_transition_and_ends_on_ctrl_c() {
    let c = Cluster::started("dshell-watch", 3);
    let mut watch = dshell_cmd(&c, 2, &["manager", "lock", "status", "--scope", "deploy", "--watch"]).stdout(Stdio::piped()).spawn().unwrap();
    let rx = lines_of(&mut watch);
    expect_line(&rx, "FREE (");
    let o = dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "deploy", "--holder", "ops/a", "--timeout", "1m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(expect_line(&rx, "granted"), "#1 granted ops/a (write, fencing token 1)");
    let o = dshell(&c, 1, &["manager", "lock", "release", "--scope", "deploy", "--holder", "ops/a"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(expect_line(&rx, "released"), "#2 released ops/a (write, fencing token 1)");
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a watch normally");
}

#[test]
fn a_wait_on_a_terminal_shows_who_holds_the_scope() {
    let c = Cluster::started("dshell-progress", 3);
    let o = dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "deploy", "--holder", "ops/first", "--timeout", "1m"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let printed = stdout(&o);
    let grant = printed.split("grant ").nth(1).and_then(|g| g.split(',').next()).unwrap_or_default().trim().to_string();
    // `script` runs dshell on a terminal of its own (a pty), where the progress is shown.
    let port = c.http(1).port();
    let line = format!("{DSHELL} -s 127.0.0.1 -p {port} manager lock acquire --scope deploy --holder ops/second --wait 60s");
    let mut waiting = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("HOME", &c.dir)
        .env("USER", "ops")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let rx = lines_of(&mut waiting);
    expect_line(&rx, "Waiting for deploy: held by ops/first");
    let o = dshell(&c, 2, &["manager", "lock", "release", "--scope", "deploy", "--holder", "ops/first", "--grant", &grant]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    expect_line(&rx, "Lock acquired. Holder: ops/second");
    assert!(waiting.wait().unwrap().success());
    // Without a terminal, nothing but the answer.
    let o = dshell(&c, 0, &["manager", "lock", "acquire", "--scope", "deploy", "--holder", "ops/third", "--wait", "1s"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("Waiting for"), "{}", text(&o));
}

/// A shared library that, preloaded into dshell, makes `CLOCK_BOOTTIME` run ahead by the
/// number of seconds written in the file `$SLEPT_FILE`, while `CLOCK_MONOTONIC` does not move:
/// what a system suspend of that long looks like to a process. Built with the C compiler the
/// Rust toolchain links with.
fn suspend_shim(c: &Cluster) -> PathBuf {
    let source = c.dir.join("slept.c");
    std::fs::write(
        &source,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef int (*clock_fn)(clockid_t, struct timespec *);
int clock_gettime(clockid_t id, struct timespec *ts) {
    clock_fn real = (clock_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    if (r == 0 && id == CLOCK_BOOTTIME) {
        const char *path = getenv("SLEPT_FILE");
        FILE *f = path ? fopen(path, "r") : NULL;
        long secs = 0;
        if (f) {
            if (fscanf(f, "%ld", &secs) != 1) secs = 0;
            fclose(f);
        }
        ts->tv_sec += secs;
    }
    return r;
}
"#,
    )
    .unwrap();
    let shim = c.dir.join("slept.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let o = Command::new(&cc).args(["-shared", "-fPIC", "-o"]).arg(&shim).arg(&source).arg("-ldl").output().expect("a C compiler");
    assert!(o.status.success(), "cannot build the suspend shim: {}", String::from_utf8_lossy(&o.stderr));
    shim
}

#[test]
fn a_lock_run_suspended_past_its_lease_stops_its_command_at_once() {
    // A machine that sleeps keeps CLOCK_BOOTTIME running and stops CLOCK_MONOTONIC. A lock run
    // that measured its lease on the latter would wake up and trust a lease the voters already
    // let run out, for as long again as it had left before the suspend.
    let c = Cluster::started("dshell-suspend", 3);
    let shim = suspend_shim(&c);
    let slept = c.dir.join("slept");
    std::fs::write(&slept, "0").unwrap();
    let file = c.dir.join("marks");
    let script = format!("echo \"pid $$\" >> {0}; echo \"started $(date +%s%N)\" >> {0}; while true; do sleep 0.1; done", file.display());
    let run = dshell_cmd(&c, 0, &["manager", "lock", "run", "--scope", "job", "--timeout", "300s", "--", "sh", "-c", &script])
        .env("LD_PRELOAD", &shim)
        .env("SLEPT_FILE", &slept)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the command to start", Duration::from_secs(30), || recorded(&file, "started").is_some());
    let command = recorded(&file, "pid").expect("the command wrote its pid") as i32;
    // The nodes stay silent after the wake-up, so no renewal can restore the lease: only
    // dshell's own clock can tell it that the lease is gone.
    for i in 0..3 {
        c.pause(i, true);
    }
    // The machine sleeps for ten minutes.
    // SAFETY: kill(2) on our own child (dshell).
    unsafe { libc::kill(run.id() as i32, libc::SIGSTOP) };
    std::fs::write(&slept, "600").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(run.id() as i32, libc::SIGCONT) };
    // SAFETY: kill(2) with signal 0 only asks whether the process still exists.
    wait_for("the command to be stopped", Duration::from_secs(60), || unsafe { libc::kill(command, 0) } != 0);
    for i in 0..3 {
        c.pause(i, false);
    }
    let o = run.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lost the lock on job"), "{}", text(&o));
}
