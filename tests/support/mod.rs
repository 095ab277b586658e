//! A harness for tests with real `lockmesh agent` processes on 127.0.0.1: certificates,
//! start, kill -9, restart, SIGTERM, and a small HTTP client. Waits are for conditions, with
//! generous bounds, never fixed sleeps standing in for them.

#![allow(dead_code)]

pub mod chaos;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lockmesh");

pub struct Agent {
    pub name: String,
    pub http: SocketAddr,
    pub mesh: SocketAddr,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub certs: PathBuf,
    pub agents: Vec<Agent>,
    /// Nodes live on 127.0.0.N inside this process's own network namespace.
    pub private_network: bool,
    /// Keep the logs and data directories when dropped (a test that found something).
    pub keep_files: bool,
}

fn free_port_pair() -> (SocketAddr, SocketAddr) {
    // Ports the OS hands out now; the tiny race with other processes is acceptable in tests.
    let tcp = TcpListener::bind("127.0.0.1:0").expect("a free TCP port");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    (tcp.local_addr().unwrap(), udp.local_addr().unwrap())
}

pub fn lockmesh(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("lockmesh runs")
}

impl Cluster {
    /// Certificates for `n` nodes (not started yet).
    pub fn new(test: &str, n: usize) -> Cluster {
        let dir = std::env::temp_dir().join(format!("lockmesh-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let certs = dir.join("certs");
        let out = lockmesh(&["certs", "ca", certs.to_str().unwrap()]);
        assert!(out.status.success(), "certs ca: {}", String::from_utf8_lossy(&out.stderr));
        let mut cluster = Cluster { dir, certs, agents: Vec::new(), private_network: false, keep_files: false };
        for _ in 0..n {
            cluster.add_agent();
        }
        cluster
    }

    /// `n` nodes started with `--bootstrap-expect n`, once all of them agree on the roster.
    pub fn started(test: &str, n: usize) -> Cluster {
        let mut c = Cluster::new(test, n);
        c.start_all(&["--bootstrap-expect", &n.to_string()]);
        c.wait_for_roster(&(0..n).collect::<Vec<_>>(), n);
        c
    }

    /// Makes a certificate and addresses for one more node.
    pub fn add_agent(&mut self) -> usize {
        let i = self.agents.len();
        let name = format!("node-{}", i + 1);
        let out = lockmesh(&["certs", "node", self.certs.to_str().unwrap(), &name, "--ip", "127.0.0.1"]);
        assert!(out.status.success(), "certs node: {}", String::from_utf8_lossy(&out.stderr));
        let (http, mesh) = if self.private_network {
            // In a private network namespace: one loopback address per node (127.0.0.11 and
            // up; the test's own client keeps 127.0.0.1), fixed ports.
            let ip = std::net::Ipv4Addr::new(127, 0, 0, i as u8 + 11);
            (SocketAddr::from((ip, 20194)), SocketAddr::from((ip, 20195)))
        } else {
            // The OS may hand a port just released back again: never twice in one cluster.
            let taken = |a: &SocketAddr| self.agents.iter().any(|x| x.http.port() == a.port() || x.mesh.port() == a.port());
            loop {
                let (http, mesh) = free_port_pair();
                if !taken(&http) && !taken(&mesh) && http.port() != mesh.port() {
                    break (http, mesh);
                }
            }
        };
        self.agents.push(Agent { name, http, mesh, data_dir: self.dir.join(format!("data-{i}")), child: None });
        i
    }

    /// Starts node `i`, joining every other node, with extra flags (e.g. `--bootstrap-expect 3`).
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let others: Vec<String> = self.agents.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, a)| a.mesh.to_string()).collect();
        let join = if others.is_empty() { self.agents[0].mesh.to_string() } else { others.join(",") };
        let certs = self.certs.clone();
        // Appended, so a restarted node's log follows its earlier lives.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("node-{}.log", i + 1))).unwrap();
        let a = &mut self.agents[i];
        let child = Command::new(BIN)
            .arg("agent")
            .args(["--name", &a.name, "--http", &a.http.to_string(), "--mesh", &a.mesh.to_string()])
            .arg("--data-dir")
            .arg(&a.data_dir)
            .arg("--certs")
            .arg(&certs)
            .args(["--join", &join])
            .args(if extra.contains(&"--request-timeout-ms") { &[][..] } else { &["--request-timeout-ms", "3000"][..] })
            .args(if extra.contains(&"--users") { &[][..] } else { &["--no-auth"][..] })
            .args(extra)
            .env("RUST_LOG", std::env::var("LOCKMESH_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        a.child = Some(child);
    }

    pub fn start_all(&mut self, extra: &[&str]) {
        for i in 0..self.agents.len() {
            self.start(i, extra);
        }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.agents[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<i32> {
        self.agents[i].child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `i`.
    pub fn pause(&self, i: usize, stop: bool) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT }) };
        }
    }

    /// Kills node `i` and deletes its data directory (a node that lost its disk).
    pub fn wipe(&mut self, i: usize) {
        self.kill(i);
        let _ = std::fs::remove_dir_all(&self.agents[i].data_dir);
    }

    /// SIGTERM, then wait (up to `bound`) for the process to exit.
    pub fn terminate(&mut self, i: usize, bound: Duration) -> bool {
        let Some(mut child) = self.agents[i].child.take() else { return true };
        // SAFETY: kill(2) on our own child's pid with SIGTERM.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn http(&self, i: usize) -> SocketAddr {
        self.agents[i].http
    }

    /// Waits until every listed node reports a roster of `voters` voters, swept.
    pub fn wait_for_roster(&self, nodes: &[usize], voters: usize) {
        wait_for(&format!("nodes {nodes:?} to agree on {voters} voters"), Duration::from_secs(60), || {
            nodes.iter().all(|&i| {
                get(self.http(i), "/api/v1.0/members")
                    .map(|(_, v)| v["roster_size"] == voters && v["sweep_done"] == true)
                    .unwrap_or(false)
            })
        });
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node-{}.log", i + 1))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.agents.len() {
            self.kill(i);
        }
        if !std::thread::panicking() && !self.keep_files {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("test cluster files kept in {}", self.dir.display());
        }
    }
}

impl Cluster {
    /// Like `new`, but in a fresh network namespace of this test's thread (root only), where
    /// links between nodes can be cut with nftables. Returns `None` without root or `nft`.
    pub fn in_private_network(test: &str, n: usize) -> Option<Cluster> {
        // SAFETY: unshare(2) only changes this thread's namespaces; children it spawns inherit.
        if unsafe { libc::geteuid() } != 0 || Command::new("nft").arg("--version").output().is_err() {
            return None;
        }
        // SAFETY: as above.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let up = Command::new("ip").args(["link", "set", "lo", "up"]).status().ok()?;
        assert!(up.success(), "cannot bring up the namespace's loopback");
        let nft = Command::new("nft").args(["add table inet lockmesh_test"]).status().ok()?;
        assert!(nft.success());
        for (chain, hook) in [("out", "output"), ("in", "input")] {
            let rule = format!("add chain inet lockmesh_test {chain} {{ type filter hook {hook} priority 0; }}");
            assert!(Command::new("nft").arg(rule).status().ok()?.success());
        }
        let mut cluster = Cluster::new(test, 0);
        cluster.private_network = true;
        for _ in 0..n {
            cluster.add_agent();
        }
        Some(cluster)
    }

    fn ip(&self, i: usize) -> String {
        self.agents[i].mesh.ip().to_string()
    }

    /// Drops every mesh packet (UDP) from node `a` to node `b` (one direction). The HTTP API
    /// (TCP) stays reachable, so the test can ask each side.
    pub fn cut_one_way(&self, a: usize, b: usize) {
        let rule = format!("add rule inet lockmesh_test out ip saddr {} ip daddr {} meta l4proto udp drop", self.ip(a), self.ip(b));
        assert!(Command::new("nft").arg(rule).status().unwrap().success());
    }

    /// Cuts every link between the two groups, both ways.
    pub fn split(&self, left: &[usize], right: &[usize]) {
        for &a in left {
            for &b in right {
                self.cut_one_way(a, b);
                self.cut_one_way(b, a);
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        assert!(Command::new("nft").arg("flush chain inet lockmesh_test out").status().unwrap().success());
    }
}

/// A lock record that keeps every invariant, granting its scope to `mallory` for 10 minutes:
/// what an attacker would plant.
pub fn mallory() -> lockmesh::core::LockRecord {
    use lockmesh::core::{Acquire, LeaseRule, Limits, LockOp, LockRecord, LockType, Priority, RequestId};
    let mut record = LockRecord::default();
    let acquire = Acquire {
        request_id: RequestId("mallory".into()),
        holder: "mallory".into(),
        lock_type: LockType::Write,
        lease: LeaseRule::Fixed(600_000_000),
        lock_delay_us: 0,
        wait: false,
        wait_lease_us: 0,
        priority: Priority::Normal,
        reason: None,
        node: String::new(),
        poll: false,
    };
    record.apply(&LockOp::Acquire(acquire), 0, &Limits::default());
    record
}

/// Polls `condition` every 100 ms until it holds; panics after `bound`.
pub fn wait_for(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {bound:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 request; returns the status code and the JSON body.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), String> {
    request_with(addr, None, method, path, body)
}

fn request_with(addr: SocketAddr, auth: Option<&str>, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), String> {
    let (status, payload) = raw(addr, auth, method, path, body)?;
    Ok((status, serde_json::from_str(&payload).unwrap_or(Value::Null)))
}

/// GET returning the body as text (for /metrics).
pub fn get_text(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    raw(addr, None, "GET", path, None)
}

fn raw(addr: SocketAddr, auth: Option<&str>, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default()
    );
    stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    stream.write_all(body.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let payload = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, payload.to_string()))
}

/// One HTTP/1.1 request with an `Authorization` header.
pub fn request_as(addr: SocketAddr, auth: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Value), String> {
    request_with(addr, Some(auth), method, path, body)
}

pub fn post(addr: SocketAddr, body: &str) -> Result<(u16, Value), String> {
    request(addr, "POST", "/api/v1.0/lock", Some(body))
}

pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, Value), String> {
    request(addr, "GET", path, None)
}

/// A QUIC client endpoint on 127.0.0.1 holding the certificate `name` of the CA in `certs`,
/// as a peer's would, with its identity: for tests that speak to a node's mesh themselves.
/// Call it inside a tokio runtime.
pub fn mesh_client(certs: &std::path::Path, name: &str) -> (quinn::Endpoint, lockmesh::mesh::tls::Identity) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let id = lockmesh::mesh::tls::Identity::load(certs, name).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(lockmesh::mesh::tls::client_config(&id).unwrap());
    (endpoint, id)
}
