//! `dshell`, the operators' shell for lockmesh (see `lockmesh::dshell`).

fn main() -> std::process::ExitCode {
    lockmesh::dshell::main(std::env::args().skip(1).collect())
}
