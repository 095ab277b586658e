//! Clusters to measure: release-built `lockmesh agent`s, or etcd servers, as child processes
//! on 127.0.0.1 with their data in a temporary directory (removed afterwards).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Conn;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Lockmesh,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Lockmesh => "lockmesh",
            Kind::Etcd => "etcd",
        }
    }
}

struct Node {
    /// Where clients connect (HTTP API, or etcd's JSON gateway).
    client: SocketAddr,
    /// Where nodes talk to each other.
    peer: SocketAddr,
    child: Option<Child>,
}

pub struct Cluster {
    pub kind: Kind,
    dir: PathBuf,
    binary: PathBuf,
    nodes: Vec<Node>,
    /// How many nodes formed the cluster; later ones join it.
    formed_by: usize,
}

/// A port nobody listens on now (TCP and UDP), never one of `taken`.
fn free_port(taken: &[u16]) -> Result<u16, String> {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        if !taken.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

fn run(binary: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new(binary).args(args).output().map_err(|e| format!("{}: {e}", binary.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} {args:?}: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Cluster {
    /// `n` nodes of `kind` (addresses, and certificates for lockmesh), not started yet.
    /// `binary` is `lockmesh` or `etcd`.
    pub fn prepare(kind: Kind, binary: &Path, n: usize, tag: &str) -> Result<Cluster, String> {
        let dir = std::env::temp_dir().join(format!("lockmesh-bench-{}-{tag}-{}", kind.name(), std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut cluster = Cluster { kind, dir, binary: binary.to_path_buf(), nodes: Vec::new(), formed_by: n };
        if kind == Kind::Lockmesh {
            let certs = cluster.certs()?;
            run(binary, &["certs", "ca", &certs])?;
        }
        for _ in 0..n {
            cluster.add_node()?;
        }
        Ok(cluster)
    }

    fn certs(&self) -> Result<String, String> {
        Ok(self.dir.join("certs").to_str().ok_or("temporary directory is not UTF-8")?.to_string())
    }

    /// Addresses (and a certificate, for lockmesh) for one more node, not started yet; one
    /// started after the cluster formed joins it.
    pub fn add_node(&mut self) -> Result<usize, String> {
        let taken: Vec<u16> = self.nodes.iter().flat_map(|n| [n.client.port(), n.peer.port()]).collect();
        let client = free_port(&taken)?;
        let peer = free_port(&[&taken[..], &[client]].concat())?;
        let i = self.nodes.len();
        if self.kind == Kind::Lockmesh {
            run(&self.binary, &["certs", "node", &self.certs()?, &format!("node-{}", i + 1), "--ip", "127.0.0.1"])?;
        }
        self.nodes.push(Node { client: SocketAddr::from(([127, 0, 0, 1], client)), peer: SocketAddr::from(([127, 0, 0, 1], peer)), child: None });
        Ok(i)
    }

    /// Starts every node and waits until the cluster serves.
    pub fn launch(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.start_node(i)?;
        }
        self.wait_ready(Duration::from_secs(120))
    }

    /// `n` nodes of `kind`, started and serving.
    pub fn start(kind: Kind, binary: &Path, n: usize, tag: &str) -> Result<Cluster, String> {
        let mut cluster = Cluster::prepare(kind, binary, n, tag)?;
        cluster.launch()?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].client
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.client).collect()
    }

    /// Starts (or restarts) node `i` on its data directory.
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        let n = self.formed_by;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("node-{}.log", i + 1))).map_err(|e| e.to_string())?;
        let data = self.dir.join(format!("data-{}", i + 1));
        let mut cmd = Command::new(&self.binary);
        match self.kind {
            Kind::Lockmesh => {
                let join: Vec<String> = self.nodes.iter().map(|x| x.peer.to_string()).collect();
                cmd.arg("agent")
                    .args(["--name", &format!("node-{}", i + 1)])
                    .args(["--http", &self.nodes[i].client.to_string(), "--mesh", &self.nodes[i].peer.to_string()])
                    .arg("--data-dir")
                    .arg(&data)
                    .arg("--certs")
                    .arg(self.dir.join("certs"))
                    .args(["--join", &join.join(","), "--no-auth"])
                    .args(if i < n { vec!["--bootstrap-expect".to_string(), n.to_string()] } else { Vec::new() })
                    .env("RUST_LOG", "warn");
            }
            Kind::Etcd => {
                let peers: Vec<String> = self.nodes.iter().enumerate().map(|(j, x)| format!("e{}=http://{}", j + 1, x.peer)).collect();
                let client = format!("http://{}", self.nodes[i].client);
                let peer = format!("http://{}", self.nodes[i].peer);
                cmd.args(["--name", &format!("e{}", i + 1)])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &peers.join(","), "--initial-cluster-state", "new"])
                    .args(["--log-level", "warn"]);
            }
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().map_err(|e| format!("{}: {e}", self.binary.display()))?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// SIGKILL to node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Resident memory of node `i`, in bytes.
    pub fn rss(&self, i: usize) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid(i)?)).ok()?;
        let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    }

    /// Waits until every node serves, and (lockmesh) all of them are voters.
    pub fn wait_ready(&self, bound: Duration) -> Result<(), String> {
        let deadline = Instant::now() + bound;
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            while !self.ready(i) {
                if Instant::now() > deadline {
                    return Err(format!("{} node {} not ready after {bound:?} (logs in {})", self.kind.name(), i + 1, self.dir.display()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn ready(&self, i: usize) -> bool {
        if TcpStream::connect_timeout(&self.nodes[i].client, Duration::from_millis(200)).is_err() {
            return false;
        }
        let mut conn = Conn::new(self.nodes[i].client);
        match self.kind {
            Kind::Lockmesh => conn.request("GET", "/api/v1.0/members", "").is_ok_and(|(s, body)| {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                s == 200 && v["roster_size"] == self.nodes.len() && v["sweep_done"] == true
            }),
            Kind::Etcd => conn.request("POST", "/v3/kv/range", r#"{"key": "cmVhZHk="}"#).is_ok_and(|(s, _)| s == 200),
        }
    }

    /// Node `i`'s installed roster (lockmesh): its size, and whether its sweep is done.
    pub fn roster_seen(&self, i: usize) -> Option<(usize, bool)> {
        let (s, body) = Conn::new(self.nodes[i].client).request("GET", "/api/v1.0/members", "").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (s == 200).then(|| (v["roster_size"].as_u64().unwrap_or(0) as usize, v["sweep_done"] == true))
    }

    /// Asks node `i` to remove the member `name` from the roster (lockmesh).
    pub fn remove_member(&self, i: usize, name: &str) -> Result<(), String> {
        let body = serde_json::json!({"name": name}).to_string();
        match Conn::new(self.nodes[i].client).request("POST", "/api/v1.0/members/remove", &body) {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("remove {name}: HTTP {status}: {body}")),
            Err(e) => Err(format!("remove {name}: {e}")),
        }
    }

    /// Node `i`'s view of the membership (lockmesh): the names of members it sees alive, and
    /// the roster size.
    pub fn members_seen(&self, i: usize) -> Option<(Vec<String>, usize)> {
        let (s, body) = Conn::new(self.nodes[i].client).request("GET", "/api/v1.0/members", "").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let alive = v["members"].as_array()?.iter().filter(|m| m["state"] == "alive").filter_map(|m| m["name"].as_str().map(String::from)).collect();
        (s == 200).then(|| (alive, v["roster_size"].as_u64().unwrap_or(0) as usize))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
