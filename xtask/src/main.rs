//! `cargo xtask`: the project's own commands, in plain Rust so they work wherever cargo does.
//!
//! - `build`: adds the `wasm32-wasip2` target when it is missing, builds the Wasm components
//!   (release, wasm) and the host (dev profile, optimised by Cargo.toml).
//! - `run`: builds, then runs `ctxhost serve --config ctxhost.toml` in the foreground.
//! - `test`: builds, then runs every test and lint; this is what CI runs.
//! - `image`: builds the OCI image (static host, plugins, `FROM scratch`).
//! - `bench [SUITE]`, `bench-resilience`: builds in release and runs a benchmark suite.
//!
//! `cargo xtask <command> --help` gives the details. Which package is built, tested and
//! linted how is decided by the one table in `packages.rs`.

mod cli;
mod commands;
mod image;
mod packages;
mod toolchain;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Cmd, Suite};
use crate::workspace::{Profile, Workspace};

fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        Cli::command().print_help()?;
        return Ok(());
    };
    let ws = Workspace::load()?;
    match command {
        Cmd::Build => commands::build(&ws),
        Cmd::Run { args } => commands::run(&ws, &args),
        Cmd::Test => commands::test(&ws),
        Cmd::Image {
            release,
            name,
            tag,
            tool,
        } => {
            let opts = image::ImageOptions {
                profile: if release {
                    Profile::Release
                } else {
                    Profile::Dev
                },
                name,
                tag,
                tool,
            };
            image::image(&ws, &opts)
        }
        Cmd::Bench { suite, args } => commands::bench(&ws, suite, &args),
        Cmd::BenchResilience { clients, seconds } => {
            // The `resilience` suite, with this command's historical flags and defaults.
            let args = [
                "--connections".to_owned(),
                clients.to_string(),
                "--seconds".to_owned(),
                seconds.to_string(),
            ];
            commands::bench(&ws, Suite::Resilience, &args)
        }
    }
}
