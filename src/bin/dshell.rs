//! `dshell`, the operators' shell for lockmesh. It is a client of the HTTP API, which does not
//! exist yet; until it does, this binary only reports what it is.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("dshell {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("dshell: the lockmesh HTTP API it talks to is not built yet");
            ExitCode::from(2)
        }
    }
}
