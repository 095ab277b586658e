//! The agent: one lockmesh node as a process. It opens the store, binds the mesh and the HTTP
//! API, and runs the core in a single task (`runtime.rs`) fed by both.

mod changes;
mod config;
mod crl;
mod flush;
mod runtime;
pub mod swim;


use tokio::sync::mpsc;

pub use changes::{Changes, Subscription};
pub use config::{Admission, AgentArgs, AgentConfig, ConfigError};
pub use runtime::{shutdown_signal, ApiCall, Input, MemberView, MembersView, NodeMetrics};

use crate::core::{Config, Node, NodeId};
use crate::mesh::endpoint::Mesh;
use crate::mesh::tls::Identity;
use crate::store::Store;

/// What the HTTP layer needs to reach the node.
#[derive(Clone)]
pub struct Handle {
    pub name: String,
    pub calls: mpsc::Sender<Input>,
    /// `None` with `--no-auth`: everyone is an admin.
    pub users: Option<std::sync::Arc<crate::auth::Users>>,
    pub request_timeout_us: u64,
    /// `--require-grant`: unlocks must name their grant.
    pub require_grant: bool,
    pub metrics: std::sync::Arc<crate::api::HttpMetrics>,
    /// Password checks (argon2) allowed at once.
    pub auth_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// News of scopes this node's acceptor accepted a new value of: a hint for watchers and
    /// waiters that a read may show something new.
    pub changes: std::sync::Arc<Changes>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Tls(#[from] crate::mesh::tls::TlsError),
    #[error(transparent)]
    Mesh(#[from] crate::mesh::endpoint::MeshError),
    #[error("cannot serve HTTP on {0}: {1}")]
    Http(std::net::SocketAddr, std::io::Error),
    #[error("{0}")]
    Users(String),
    #[error("this data dir belongs to cluster {0}, not to --cluster-id {1}")]
    OtherCluster(String, String),
}

/// Runs the agent until SIGTERM or SIGINT, then leaves the roster gracefully.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let users = match &config.users {
        Some(path) => Some(std::sync::Arc::new(crate::auth::Users::load(path).map_err(AgentError::Users)?)),
        None => None,
    };
    let opened = Store::open(&config.data_dir)?;
    let identity = Identity::load(&config.certs, &config.name)?;
    let id = NodeId::new(config.name.clone(), opened.incarnation, identity.key_hash()?);
    tracing::info!(node = %id, data_dir = %config.data_dir.display(), "starting");
    let (input_tx, input_rx) = mpsc::channel(8192);
    let (mesh_tx, mut mesh_rx) = mpsc::channel(8192);
    let mesh = Mesh::bind(config.mesh, &identity, mesh_tx, swim::claimed_sender)?;
    if let Some(path) = &config.crl {
        crl::start(path.clone(), Identity::load(&config.certs, &config.name)?, mesh.clone())?;
    }
    let forward = input_tx.clone();
    tokio::spawn(async move {
        while let Some(inbound) = mesh_rx.recv().await {
            if forward.send(Input::Mesh(inbound)).await.is_err() {
                return;
            }
        }
    });
    let (committed_tx, committed_rx) = mpsc::unbounded_channel();
    let flush = flush::start(opened.store, committed_tx);
    let signer = crate::mesh::signer::NodeSigner::new(&identity)?;
    let mut node = Node::new(Config::default(), id, opened.durable, crate::clock::now(), opened.incarnation, Box::new(signer));
    if let Some(cluster) = config.cluster_id {
        if let Some(r) = node.roster().filter(|r| r.cluster_id != cluster) {
            return Err(AgentError::OtherCluster(format!("{:032x}", r.cluster_id), format!("{cluster:032x}")));
        }
        node.set_cluster_id(cluster);
    }
    match (node.roster(), config.bootstrap, config.bootstrap_expect) {
        (Some(r), _, _) => tracing::info!(version = r.version, voters = r.voters.len(), "member of a cluster (persisted roster)"),
        (None, true, _) => tracing::info!("forming a one-node cluster (--bootstrap)"),
        (None, false, Some(k)) => tracing::info!(expect = k, "waiting for the expected nodes to form a cluster"),
        (None, false, None) => tracing::warn!(
            "not part of a cluster and neither --bootstrap nor --bootstrap-expect given: serving no locks until a cluster reached through --join admits this node"
        ),
    }
    let changes = std::sync::Arc::new(Changes::default());
    let handle = Handle {
        changes: changes.clone(),
        name: config.name.clone(),
        calls: input_tx.clone(),
        users,
        metrics: Default::default(),
        auth_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
        request_timeout_us: config.request_timeout_ms * 1_000,
        require_grant: config.require_grant,
    };
    let listener = tokio::net::TcpListener::bind(config.http).await.map_err(|e| AgentError::Http(config.http, e))?;
    tracing::info!(http = %config.http, mesh = %config.mesh, "serving");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, crate::api::router(handle).into_make_service_with_connect_info::<std::net::SocketAddr>()).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    let runtime = runtime::Runtime::new(config, node, mesh.clone(), flush, changes);
    runtime.run(input_rx, committed_rx, input_tx).await;
    mesh.close();
    Ok(())
}

