//! The `lockmesh` binary: `agent` (one node), `dev` (a local cluster), `certs` (the cluster CA
//! and node certificates). Bad flags or settings: one line on stderr, exit code 2.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lockmesh::agent::{AgentArgs, AgentConfig};

mod dev;

#[derive(Parser)]
#[command(name = "lockmesh", version, about = "Peer-to-peer distributed locks with fencing tokens")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Agent(AgentArgs),
    /// Run a local cluster on 127.0.0.1 for trying lockmesh out, until Ctrl-C.
    Dev {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Make the cluster CA and node certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Manage the users file of the HTTP API.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user (or replace one of that name); prints the user's bearer token.
    Add {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from this environment variable instead of standard input.
        #[arg(long)]
        password_env: Option<String>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write DIR/ca.pem and DIR/ca.key.
    Ca {
        dir: PathBuf,
        /// Days the CA certificate is valid [default: 3650].
        #[arg(long, default_value_t = lockmesh::certs::CA_DAYS)]
        days: u32,
    },
    /// Write DIR/NAME.pem and DIR/NAME.key, signed by the CA in DIR.
    Node {
        dir: PathBuf,
        name: String,
        /// An IP address the certificate is also valid for (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// A DNS name the certificate is also valid for (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Days the certificate is valid [default: 365].
        #[arg(long, default_value_t = lockmesh::certs::NODE_DAYS)]
        days: u32,
        /// Keep the node's key (DIR/NAME.key) and replace only its certificate: the node keeps
        /// its identity in the roster.
        #[arg(long)]
        renew: bool,
    },
    /// Write DIR/NAME.pem and DIR/NAME.key for a client (client use only; the mesh refuses it).
    Client {
        dir: PathBuf,
        name: String,
        #[arg(long, default_value_t = lockmesh::certs::NODE_DAYS)]
        days: u32,
    },
    /// Revoke DIR/NAME.pem (and its renewals): list it in DIR/revoked.txt and write DIR/crl.pem,
    /// signed by the CA in DIR. Copy crl.pem to every node's --crl file: nodes re-read it and
    /// refuse the certificate, closing its connections.
    Revoke {
        dir: PathBuf,
        name: String,
        /// Days the revocation list is valid [default: 365].
        #[arg(long, default_value_t = lockmesh::certs::CRL_DAYS)]
        days: u32,
    },
    /// Write DIR/crl.pem anew from DIR/revoked.txt (an empty list if nothing is revoked).
    Crl {
        dir: PathBuf,
        #[arg(long, default_value_t = lockmesh::certs::CRL_DAYS)]
        days: u32,
    },
    /// Write DIR/NAME.pem and DIR/NAME.key for serving HTTP over TLS (server use only; the mesh
    /// refuses it).
    Http {
        dir: PathBuf,
        name: String,
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, default_value_t = lockmesh::certs::NODE_DAYS)]
        days: u32,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => {
            let _ = e.print();
            return if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
        Err(e) => {
            // One line naming the problem; `--help` has the rest.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("lockmesh: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Agent(args) => {
            let config = match AgentConfig::from_args(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lockmesh agent: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging();
            let _ = rustls::crypto::ring::default_provider().install_default();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("lockmesh agent: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(lockmesh::agent::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lockmesh agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev { nodes } => dev::run(nodes),
        Command::Users { command: UsersCommand::Add { file, name, role, password_env } } => {
            let result = (|| {
                let role = lockmesh::auth::Role::parse(&role)?;
                let password = match password_env {
                    Some(var) => std::env::var(&var).map_err(|_| format!("environment variable {var} is not set"))?,
                    None => {
                        let mut line = String::new();
                        std::io::stdin().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
                        line.trim_end_matches(['\n', '\r']).to_string()
                    }
                };
                lockmesh::auth::Users::add(&file, &name, role, &password)
            })();
            match result {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lockmesh users: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Certs { command } => {
            let result = match command {
                CertsCommand::Ca { dir, days } => lockmesh::certs::make_ca(&dir, days),
                CertsCommand::Node { dir, name, ip, dns, days, renew } => lockmesh::certs::make_node(&dir, &name, &ip, &dns, days, renew),
                CertsCommand::Client { dir, name, days } => lockmesh::certs::make_client(&dir, &name, days),
                CertsCommand::Http { dir, name, ip, dns, days } => lockmesh::certs::make_http(&dir, &name, &ip, &dns, days),
                CertsCommand::Revoke { dir, name, days } => lockmesh::certs::revoke(&dir, &name, days),
                CertsCommand::Crl { dir, days } => lockmesh::certs::write_crl(&dir, days),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lockmesh certs: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_writer(std::io::stderr).init();
}
