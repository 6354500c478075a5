//! The `roomlet` command line, built a second time inside this crate so
//! the multi-process tests can start real nodes by path
//! (`CARGO_BIN_EXE_roomlet-node`); a binary of another package has no such
//! path. The source is the host's own `main.rs`, unchanged.

#[path = "../../host/src/main.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
