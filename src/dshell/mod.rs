//! `dshell`, the operators' client: an interactive shell, one-shot batch commands, commands
//! run under a lock (`manager lock run`), and JSON orchestrations. It talks to the public HTTP
//! API of any node, like any other client.

mod client;
mod commands;
pub mod http;
mod orch;
mod prompt;
mod run;
mod session;
mod shell;
mod watch;
pub mod sse;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

pub use client::{AutoBounds, Client};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failed otherwise (e.g. an orchestration step failed)
  2  usage error (bad flags, bad input, invalid orchestration file)
  3  busy or conflict: the lock is held by someone else, or you are not its holder
  4  unavailable: no quorum, timed out (outcome unknown), or the node is not in a cluster
  5  authentication or permission refused
  6  cannot connect to the node
  7  `lock run`: the lease was lost and the command was stopped
  `lock run` otherwise exits with the command's own code (128+N if a signal N ended it).";

/// Why a command failed, one line, and its exit code.
#[derive(Debug, Clone)]
pub enum Failure {
    Other(String),
    Usage(String),
    Busy(String),
    Unavailable(String),
    Auth(String),
    Connect(String),
    LeaseLost(String),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Busy(_) => 3,
            Failure::Unavailable(_) => 4,
            Failure::Auth(_) => 5,
            Failure::Connect(_) => 6,
            Failure::LeaseLost(_) => 7,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Failure::Other(t) | Failure::Usage(t) | Failure::Busy(t) | Failure::Unavailable(t) | Failure::Auth(t) | Failure::Connect(t) | Failure::LeaseLost(t) => t,
        }
    }
}

#[derive(Parser, Debug)]
#[command(name = "dshell", version, about = "The lockmesh shell: locks from a terminal and from scripts", after_help = EXIT_CODES)]
struct Cli {
    /// The node to talk to [env: DSHELL_SERVER; ~/.dshell `server`; default 127.0.0.1].
    #[arg(short = 's', long)]
    server: Option<String>,
    /// Its HTTP port [env: DSHELL_PORT; ~/.dshell `port`; default 20194].
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// User name [env: DSHELL_USER; ~/.dshell `user`]. The password comes from DSHELL_PASSWORD
    /// or ~/.dshell `password`, or is asked for on a terminal. Without -u, a bearer token from
    /// DSHELL_TOKEN or ~/.dshell `token` is used if set.
    #[arg(short = 'u', long)]
    user: Option<String>,
    #[command(flatten)]
    output: Output,
    /// Without a command: the interactive shell.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone, Copy, Default)]
pub struct Output {
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Locks and members.
    Manager {
        #[command(subcommand)]
        what: Manager,
    },
    /// Orchestrations: JSON files of HTTP and shell steps.
    Orch {
        #[command(subcommand)]
        what: Orch,
    },
}

#[derive(Subcommand, Debug)]
pub enum Manager {
    /// Acquire, inspect, release locks; run a command under one.
    Lock {
        #[command(subcommand)]
        what: LockCommand,
    },
    /// The cluster's members.
    Member {
        #[command(subcommand)]
        what: MemberCommand,
    },
    /// The cluster as a whole: voter target, voters, zones.
    Cluster {
        #[command(subcommand)]
        what: ClusterCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The voter target, the voters and members, the quorum and the zones.
    Show,
    /// Set how many voters the cluster keeps (admin): an odd number from 1 to 9.
    Voters { count: u8 },
}

#[derive(Subcommand, Debug)]
pub enum LockCommand {
    /// Acquire a lock (in the shell: held and renewed until released or the shell exits).
    Acquire(AcquireArgs),
    /// Who holds a scope, with its queue; --watch then prints every change as it happens.
    Status {
        #[arg(long)]
        scope: String,
        /// Follow the scope: grants, releases, expiries and the queue, until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Release a lock.
    Release {
        #[arg(long)]
        scope: String,
        /// Whose lock (default: this shell session's, or in batch mode USER@HOST).
        #[arg(long)]
        holder: Option<String>,
        /// The grant to release, as `acquire` printed it (a session knows its own). Without
        /// it, only grants of the holder made before this release reached the node are freed.
        #[arg(long)]
        grant: Option<String>,
        /// Revoke it whoever holds it (admin only).
        #[arg(long)]
        force: bool,
    },
    /// The scopes held now.
    List,
    /// Run a command while holding the lock, renewing it; stop the command if it is lost.
    Run(RunArgs),
}

#[derive(Args, Debug, Clone)]
pub struct AcquireArgs {
    #[arg(long)]
    pub scope: String,
    /// write (exclusive) or read (shared).
    #[arg(long = "type", default_value = "write")]
    pub lock_type: String,
    /// The lease, e.g. 30s, 10m, or auto (chosen from the scope's history of holds). In batch
    /// mode nothing renews it: it is the lock's lifetime.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    #[command(flatten)]
    pub auto: AutoBounds,
    /// How long to wait in the queue if the lock is taken, e.g. 10s.
    #[arg(long)]
    pub wait: Option<String>,
    /// high (needs --reason), normal or low.
    #[arg(long)]
    pub priority: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Holder name (default: this shell session's, or in batch mode USER@HOST).
    #[arg(long)]
    pub holder: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long)]
    pub scope: String,
    /// The lease, renewed every third of it while the command runs; auto: chosen from the
    /// scope's history of holds (how long this command usually takes).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    #[command(flatten)]
    pub auto: AutoBounds,
    /// How long to wait for the lock, e.g. 5m (default: do not wait).
    #[arg(long)]
    pub wait: Option<String>,
    /// write (exclusive) or read (shared).
    #[arg(long = "type", default_value = "write")]
    pub lock_type: String,
    /// How long the command gets between SIGTERM and SIGKILL when the lease is lost.
    #[arg(long, default_value = "5s")]
    pub grace: String,
    #[arg(long)]
    pub holder: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Members, their state, role (voter, member, pending, banned), zone and time up, the
    /// roster and its bans.
    List,
    /// Remove a member from the roster for good (admin): banned until re-admitted.
    Remove {
        name: String,
        /// Only the node of this certificate key (as `member list --json` shows it).
        #[arg(long)]
        key: Option<String>,
    },
    /// Re-admit a removed node, or admit one waiting as pending (admin). With --key, admit
    /// that certificate under the name (a replacement device; the old key stays banned).
    Approve {
        name: String,
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum Orch {
    /// Run an orchestration file.
    Run {
        file: PathBuf,
        /// A value for `{{KEY}}` in the file, as KEY=VALUE (repeatable).
        #[arg(long = "var")]
        vars: Vec<String>,
    },
}

/// `~/.dshell`, TOML: server, port, user, password, token (all optional).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

fn config_file() -> Result<ConfigFile, Failure> {
    let Some(path) = home().map(|h| h.join(".dshell")) else { return Ok(ConfigFile::default()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| Failure::Usage(format!("{}: {}", path.display(), e.message()))),
        Err(_) => Ok(ConfigFile::default()),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Who we are: the user's name (for holder names) and the client.
pub struct Identity {
    pub user: String,
    pub host: String,
    pub client: Client,
}

fn connect(cli: &Cli, interactive: bool) -> Result<Identity, Failure> {
    let file = config_file()?;
    let host = cli.server.clone().or_else(|| env("DSHELL_SERVER")).or(file.server).unwrap_or_else(|| "127.0.0.1".into());
    let port = match cli.port {
        Some(p) => p,
        None => match env("DSHELL_PORT") {
            Some(p) => p.parse().map_err(|_| Failure::Usage(format!("DSHELL_PORT {p:?} is not a port")))?,
            None => file.port.unwrap_or(20194),
        },
    };
    let named = cli.user.clone().or_else(|| env("DSHELL_USER")).or(file.user);
    // `-u` on the command line means that user, with a password, whatever token is set.
    let token = if cli.user.is_some() { None } else { env("DSHELL_TOKEN").or(file.token) };
    let auth = match (&named, token) {
        (_, Some(token)) => Some(format!("Bearer {token}")),
        (Some(user), None) => match env("DSHELL_PASSWORD").or(file.password) {
            Some(password) => Some(client::basic(user, &password)),
            None if prompt::is_terminal() => Some(client::basic(user, &prompt::password(&format!("Password for {user}: "))?)),
            None if interactive => return Err(Failure::Auth(format!("no password for {user}: set DSHELL_PASSWORD or DSHELL_TOKEN"))),
            None => None,
        },
        (None, None) => None,
    };
    let user = named.or_else(|| env("USER")).unwrap_or_else(|| "anonymous".into());
    Ok(Identity { user, host: session::hostname(), client: Client { host, port, auth } })
}

/// Runs dshell with these arguments (without the program name); the exit code.
pub fn main(args: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once("dshell".to_string()).chain(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let interactive = cli.command.is_none();
    let me = match connect(&cli, interactive) {
        Ok(me) => me,
        Err(f) => {
            eprintln!("dshell: {}", f.text());
            return ExitCode::from(f.code());
        }
    };
    let result = match cli.command {
        None => shell::run(me),
        Some(command) => commands::batch(&me, command, cli.output),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("dshell: {}", f.text());
            ExitCode::from(f.code())
        }
    }
}
