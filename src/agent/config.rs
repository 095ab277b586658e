//! The agent's settings: flags, a TOML file with the same names, and defaults. Flags override
//! the file. Anything wrong is one line naming the problem (the binary exits with 2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::certs::valid_node_name;

/// `lockmesh agent` flags. Every one may also come from `--config FILE`.
#[derive(Debug, Default, clap::Args)]
pub struct AgentArgs {
    /// This node's name (its certificate's name): 1-63 of a-z, 0-9, '-'.
    #[arg(long)]
    pub name: Option<String>,
    /// HTTP API address [default: 127.0.0.1:20194].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Mesh (QUIC, UDP) address [default: 127.0.0.1:20195].
    #[arg(long)]
    pub mesh: Option<SocketAddr>,
    /// Where the node keeps its voter state.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory with ca.pem, NAME.pem and NAME.key.
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// Certificate revocation list (`lockmesh certs revoke` writes one): peers whose
    /// certificate it lists are refused, and their connections closed. Re-read when it changes.
    #[arg(long)]
    pub crl: Option<PathBuf>,
    /// Mesh addresses of nodes to join, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<SocketAddr>,
    /// Form a new cluster once this many nodes have met and all acknowledged the set.
    #[arg(long)]
    pub bootstrap_expect: Option<usize>,
    /// Form a new one-node cluster.
    #[arg(long)]
    pub bootstrap: bool,
    /// How many voters a cluster formed by this node keeps (odd, 1-9) [default: 5]; the
    /// others are members that do not vote. Give every node of a bootstrap set the same; an
    /// admin changes it later (`PUT /api/v1.0/cluster`). Ignored by a node that joins.
    #[arg(long)]
    pub voters: Option<u8>,
    /// This node's zone (a rack, a site, a region: 1-63 of a-z, 0-9, '-'): voters are spread
    /// so that losing one zone leaves a majority of them [default: none].
    #[arg(long)]
    pub zone: Option<String>,
    /// Replace a voter that has been down this long by a healthy member, in seconds
    /// [default: 30]. (A member down for --reap-after-secs is removed altogether.)
    #[arg(long, alias = "replace-after")]
    pub replace_after_secs: Option<u64>,
    /// How long a member must have been up before it may become a voter, in seconds
    /// [default: 10].
    #[arg(long)]
    pub stabilize_secs: Option<u64>,
    /// Users file (`lockmesh users add`): HTTP Basic and bearer tokens, with roles.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Serve the API without authentication.
    #[arg(long)]
    pub no_auth: bool,
    /// How long a request may take before it is answered "timeout" or "no quorum", in ms.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Remove a voter that has been down this long from the roster [default: 259200 = 72h].
    #[arg(long)]
    pub reap_after_secs: Option<u64>,
    /// Refuse unlocks that name no grant (neither `grant` nor `fencing_token`).
    #[arg(long)]
    pub require_grant: bool,
    /// How new nodes join: `auto` (any node certificate of the CA that greets a member is
    /// admitted) or `approve` (they wait, listed `pending`, until an admin approves them)
    /// [default: auto]. Give every node the same.
    #[arg(long, value_parser = ["auto", "approve"])]
    pub admission: Option<String>,
    /// The id of the cluster to join (32 hex digits, as `GET /api/v1.0/members` and
    /// `lockmesh dev` show it): the node installs only rosters proven back to that cluster's
    /// first roster, from whichever member it hears them. Without it, the node takes its
    /// first roster from the nodes it reaches through --join.
    #[arg(long)]
    pub cluster_id: Option<String>,
    /// A TOML file with any of the settings above.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    name: Option<String>,
    http: Option<SocketAddr>,
    mesh: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    certs: Option<PathBuf>,
    crl: Option<PathBuf>,
    join: Option<Vec<SocketAddr>>,
    bootstrap_expect: Option<usize>,
    bootstrap: Option<bool>,
    voters: Option<u8>,
    zone: Option<String>,
    replace_after_secs: Option<u64>,
    stabilize_secs: Option<u64>,
    users: Option<PathBuf>,
    no_auth: Option<bool>,
    request_timeout_ms: Option<u64>,
    reap_after_secs: Option<u64>,
    require_grant: Option<bool>,
    admission: Option<String>,
    cluster_id: Option<String>,
}

/// How new nodes become members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Any node certificate of the CA that greets a member is admitted.
    Auto,
    /// A new node waits until an admin approves it.
    Approve,
}

/// Settings after merging flags, file and defaults, and checking them.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub name: String,
    pub http: SocketAddr,
    pub mesh: SocketAddr,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    pub crl: Option<PathBuf>,
    pub join: Vec<SocketAddr>,
    pub bootstrap_expect: Option<usize>,
    pub bootstrap: bool,
    /// The voter target of a cluster this node forms.
    pub voters: u8,
    pub zone: String,
    pub replace_after_secs: u64,
    pub stabilize_secs: u64,
    pub no_auth: bool,
    pub users: Option<PathBuf>,
    pub request_timeout_ms: u64,
    pub reap_after_secs: u64,
    pub require_grant: bool,
    pub admission: Admission,
    pub cluster_id: Option<u128>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    pub fn from_args(args: AgentArgs) -> Result<AgentConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let name = args.name.or(file.name).ok_or_else(|| ConfigError("--name is required".into()))?;
        if !valid_node_name(&name) {
            return Err(ConfigError(format!("--name {name:?}: use 1-63 of a-z, 0-9 and '-', not starting with '-'")));
        }
        let data_dir = args.data_dir.or(file.data_dir).ok_or_else(|| ConfigError("--data-dir is required".into()))?;
        let certs = args.certs.or(file.certs).ok_or_else(|| ConfigError("--certs is required".into()))?;
        let join = if args.join.is_empty() { file.join.unwrap_or_default() } else { args.join };
        let bootstrap = args.bootstrap || file.bootstrap.unwrap_or(false);
        let bootstrap_expect = args.bootstrap_expect.or(file.bootstrap_expect);
        if bootstrap && bootstrap_expect.is_some() {
            return Err(ConfigError("--bootstrap and --bootstrap-expect exclude each other".into()));
        }
        if bootstrap_expect == Some(0) {
            return Err(ConfigError("--bootstrap-expect must be at least 1".into()));
        }
        let voters = args.voters.or(file.voters).unwrap_or(crate::core::roster::DEFAULT_TARGET);
        if !crate::core::roster::valid_target(voters) {
            return Err(ConfigError(format!("--voters {voters}: use an odd number from 1 to {}", crate::core::roster::MAX_TARGET)));
        }
        let zone = args.zone.or(file.zone).unwrap_or_default();
        if !zone.is_empty() && !valid_node_name(&zone) {
            return Err(ConfigError(format!("--zone {zone:?}: use 1-63 of a-z, 0-9 and '-', not starting with '-'")));
        }
        let no_auth = args.no_auth || file.no_auth.unwrap_or(false);
        let users = args.users.or(file.users);
        if users.is_some() && no_auth {
            return Err(ConfigError("--users and --no-auth exclude each other".into()));
        }
        if users.is_none() && !no_auth {
            return Err(ConfigError("refusing to serve without authentication: give --users FILE or --no-auth".into()));
        }
        let request_timeout_ms = args.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(5_000);
        if request_timeout_ms == 0 {
            return Err(ConfigError("--request-timeout-ms must be positive".into()));
        }
        let admission = match args.admission.or(file.admission).as_deref() {
            None | Some("auto") => Admission::Auto,
            Some("approve") => Admission::Approve,
            Some(other) => return Err(ConfigError(format!("admission {other:?}: use auto or approve"))),
        };
        let cluster_id = match args.cluster_id.or(file.cluster_id) {
            None => None,
            Some(hex) => Some(parse_cluster_id(&hex)?),
        };
        Ok(AgentConfig {
            admission,
            cluster_id,
            name,
            http: args.http.or(file.http).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 20194))),
            mesh: args.mesh.or(file.mesh).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 20195))),
            data_dir,
            certs,
            crl: args.crl.or(file.crl),
            join,
            bootstrap_expect,
            bootstrap,
            voters,
            zone,
            replace_after_secs: args.replace_after_secs.or(file.replace_after_secs).unwrap_or(30),
            stabilize_secs: args.stabilize_secs.or(file.stabilize_secs).unwrap_or(10),
            no_auth,
            users,
            request_timeout_ms,
            reap_after_secs: args.reap_after_secs.or(file.reap_after_secs).unwrap_or(72 * 3600),
            require_grant: args.require_grant || file.require_grant.unwrap_or(false),
        })
    }
}

/// A cluster id as shown: 32 hex digits.
pub fn parse_cluster_id(hex: &str) -> Result<u128, ConfigError> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ConfigError(format!("--cluster-id {hex:?}: give the 32 hex digits the cluster shows (GET /api/v1.0/members)")));
    }
    u128::from_str_radix(hex, 16).map_err(|e| ConfigError(format!("--cluster-id {hex:?}: {e}")))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("--config {}: {}", path.display(), e.message())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AgentArgs {
        AgentArgs {
            name: Some("n1".into()),
            data_dir: Some("/tmp/x".into()),
            certs: Some("/tmp/c".into()),
            no_auth: true,
            ..AgentArgs::default()
        }
    }

    #[test]
    fn defaults_and_clear_errors() {
        let c = AgentConfig::from_args(args()).unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:20194");
        assert_eq!(c.mesh.to_string(), "127.0.0.1:20195");
        let e = AgentConfig::from_args(AgentArgs { name: Some("N_1".into()), ..args() }).unwrap_err();
        assert!(e.0.contains("--name"), "{e}");
        let e = AgentConfig::from_args(AgentArgs { no_auth: false, ..args() }).unwrap_err();
        assert!(e.0.contains("authentication"), "{e}");
        let e = AgentConfig::from_args(AgentArgs { bootstrap: true, bootstrap_expect: Some(3), ..args() }).unwrap_err();
        assert!(e.0.contains("exclude"), "{e}");
        assert_eq!((c.voters, c.zone.as_str(), c.replace_after_secs, c.stabilize_secs), (5, "", 30, 10));
        for voters in [0, 2, 4, 11] {
            let e = AgentConfig::from_args(AgentArgs { voters: Some(voters), ..args() }).unwrap_err();
            assert!(e.0.contains("--voters") && e.0.contains("odd"), "{e}");
        }
        let e = AgentConfig::from_args(AgentArgs { zone: Some("Rack 1".into()), ..args() }).unwrap_err();
        assert!(e.0.contains("--zone"), "{e}");
        let c = AgentConfig::from_args(AgentArgs { voters: Some(3), zone: Some("rack-1".into()), ..args() }).unwrap();
        assert_eq!((c.voters, c.zone.as_str()), (3, "rack-1"));
    }

    #[test]
    fn the_file_fills_in_and_flags_win() {
        let path = std::env::temp_dir().join(format!("lockmesh-config-{}.toml", std::process::id()));
        std::fs::write(&path, "http = \"127.0.0.1:9000\"\nmesh = \"127.0.0.1:9001\"\nbootstrap-expect = 3\n").unwrap();
        let c = AgentConfig::from_args(AgentArgs { config: Some(path.clone()), mesh: Some("127.0.0.1:7".parse().unwrap()), ..args() }).unwrap();
        assert_eq!(c.http.to_string(), "127.0.0.1:9000");
        assert_eq!(c.mesh.to_string(), "127.0.0.1:7");
        assert_eq!(c.bootstrap_expect, Some(3));
        assert_eq!(c.admission, Admission::Auto);
        std::fs::write(&path, "admission = \"approve\"\n").unwrap();
        assert_eq!(AgentConfig::from_args(AgentArgs { config: Some(path.clone()), ..args() }).unwrap().admission, Admission::Approve);
        std::fs::write(&path, "cluster-id = \"000102030405060708090a0b0c0d0e0f\"\n").unwrap();
        assert_eq!(AgentConfig::from_args(AgentArgs { config: Some(path.clone()), ..args() }).unwrap().cluster_id, Some(0x000102030405060708090a0b0c0d0e0f));
        for bad in ["12", "zz0102030405060708090a0b0c0d0e0f", "000102030405060708090a0b0c0d0e0f00"] {
            let e = AgentConfig::from_args(AgentArgs { cluster_id: Some(bad.into()), ..args() }).unwrap_err();
            assert!(e.0.contains("--cluster-id"), "{e}");
        }
        std::fs::write(&path, "admission = \"maybe\"\n").unwrap();
        let e = AgentConfig::from_args(AgentArgs { config: Some(path.clone()), ..args() }).unwrap_err();
        assert!(e.0.contains("auto or approve"), "{e}");
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        let e = AgentConfig::from_args(AgentArgs { config: Some(path.clone()), ..args() }).unwrap_err();
        assert!(e.0.contains("colour"), "{e}");
        let _ = std::fs::remove_file(path);
    }
}
