//! `lockmesh dev`: a local cluster for trying lockmesh out. Certificates go into a temporary
//! directory; the nodes run as child processes of this one until Ctrl-C, then everything is
//! stopped and removed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn http_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20194 + 100 * i as u16))
}

fn mesh_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20195 + 100 * i as u16))
}

pub fn run(nodes: usize) -> ExitCode {
    if !(1..=9).contains(&nodes) {
        eprintln!("lockmesh dev: --nodes must be 1 to 9");
        return ExitCode::from(2);
    }
    let dir = std::env::temp_dir().join(format!("lockmesh-dev-{}", std::process::id()));
    let result = start(&dir, nodes);
    let code = match result {
        Ok(children) => wait_for_ctrl_c(children),
        Err(e) => {
            eprintln!("lockmesh dev: {e}");
            ExitCode::FAILURE
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn start(dir: &Path, nodes: usize) -> Result<Vec<Child>, String> {
    let certs = dir.join("certs");
    lockmesh::certs::make_ca(&certs, lockmesh::certs::CA_DAYS).map_err(|e| e.to_string())?;
    let users = dir.join("users.toml");
    let password = random_password()?;
    let token = lockmesh::auth::Users::add(&users, "admin", lockmesh::auth::Role::Admin, &password)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut children = Vec::new();
    for i in 0..nodes {
        let name = format!("node-{}", i + 1);
        lockmesh::certs::make_node(&certs, &name, &["127.0.0.1".parse().map_err(|_| "bad ip")?], &[], lockmesh::certs::NODE_DAYS, false).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&exe);
        cmd.arg("agent")
            .args(["--name", &name])
            .args(["--http", &http_addr(i).to_string()])
            .args(["--mesh", &mesh_addr(i).to_string()])
            .arg("--data-dir")
            .arg(dir.join(&name))
            .arg("--certs")
            .arg(&certs)
            .args(["--join", &mesh_addr(0).to_string()])
            .arg("--users")
            .arg(&users)
            .stdout(Stdio::null())
            .stderr(log);
        // The nodes die with this process, however it ends.
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the child about to exec; it
        // allocates nothing and is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if nodes == 1 {
            cmd.arg("--bootstrap");
        } else {
            cmd.args(["--bootstrap-expect", &nodes.to_string()]);
        }
        children.push(cmd.spawn().map_err(|e| format!("cannot start {name}: {e}"))?);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..nodes).any(|i| in_cluster(http_addr(i)).is_none()) {
        if Instant::now() > deadline {
            stop(&mut children);
            return Err(format!("the cluster did not form within 30 s; logs were in {}", dir.display()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cluster_id = in_cluster(http_addr(0)).unwrap_or_default();
    print_welcome(nodes, dir, &password, &token, &cluster_id);
    Ok(children)
}

fn random_password() -> Result<String, String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn print_welcome(nodes: usize, dir: &Path, password: &str, token: &str, cluster_id: &str) {
    let api = http_addr(0);
    println!("lockmesh dev: {nodes} nodes are up (logs in {}).", dir.display());
    println!("  cluster id {cluster_id} (a node joining elsewhere: --cluster-id {cluster_id})");
    for i in 0..nodes {
        println!("  node-{}  http://{}  mesh {}", i + 1, http_addr(i), mesh_addr(i));
    }
    println!();
    println!("User admin, password {password} (bearer token {token}). Try:");
    println!("  curl -s -u admin:{password} -X POST http://{api}/api/v1.0/lock -d '{{\"scope\": \"db-migration\", \"action\": \"lock\"}}'");
    println!("  curl -s -u admin:{password} http://{api}/api/v1.0/lock/db-migration");
    println!("  curl -s -u admin:{password} -X POST http://{api}/api/v1.0/lock -d '{{\"scope\": \"db-migration\", \"action\": \"unlock\", \"grant\": \"1-1\"}}'");
    println!("    (the \"grant\" the lock answer named; an unlock naming none frees only grants made before it arrived)");
    println!("  curl -s -H 'Authorization: Bearer {token}' http://{api}/api/v1.0/members");
    println!();
    println!("Or with dshell (after `export DSHELL_PASSWORD={password}`):");
    println!("  cargo run --release --bin dshell -- -u admin                  # the interactive shell");
    println!("  cargo run --release --bin dshell -- -u admin manager lock acquire --scope db-migration --timeout 5m");
    println!("  cargo run --release --bin dshell -- -u admin manager lock run --scope db-migration -- echo migrating");
    println!();
    println!("Ctrl-C stops the cluster and removes its files.");
}

/// A plain HTTP/1.1 GET of /healthz: the id of the cluster the node has joined, if any.
fn in_cluster(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body: serde_json::Value = serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()?;
    body["cluster_id"].as_str().map(str::to_string)
}

fn wait_for_ctrl_c(mut children: Vec<Child>) -> ExitCode {
    let stop_now = Arc::new(AtomicBool::new(false));
    let flag = stop_now.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    if let Ok(runtime) = runtime {
        std::thread::spawn(move || {
            runtime.block_on(lockmesh::agent::shutdown_signal());
            flag.store(true, Ordering::SeqCst);
        });
    }
    while !stop_now.load(Ordering::SeqCst) {
        if let Some(i) = children.iter_mut().position(|c| matches!(c.try_wait(), Ok(Some(_)))) {
            eprintln!("lockmesh dev: node-{} exited; stopping", i + 1);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nstopping");
    stop(&mut children);
    ExitCode::SUCCESS
}

fn stop(children: &mut [Child]) {
    for child in children.iter_mut() {
        // SIGKILL: the dev cluster is thrown away with its data, so nobody needs to leave.
        let _ = child.kill();
    }
    for child in children.iter_mut() {
        let _ = child.wait();
    }
}

