//! The `lockmesh` binary. The node runtime (agent, dev cluster, certificates) is built on the
//! core in issue 3; until then this binary only reports what it is.

use std::process::ExitCode;

const USAGE: &str = "\
lockmesh — peer-to-peer distributed locks with fencing tokens

USAGE:
    lockmesh --version

The protocol core and its simulator are in place (see README.md). The node commands
`agent`, `dev` and `certs` are not built yet.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("lockmesh {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help") | Some("-h") | None => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("lockmesh: unknown command '{other}' (the node commands are not built yet; see --help)");
            ExitCode::from(2)
        }
    }
}
