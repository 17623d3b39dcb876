//! `mgre`: the multipoint GRE daemon and its command line.
//!
//! `mgre run` starts the daemon, `mgre check` validates a config, `mgre show` asks a running
//! daemon over its control socket.

mod config;
mod control;
mod metrics;
mod routes;
mod run;
mod show;
mod snapshot;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mgre",
    version,
    about = "Multipoint GRE hub/spoke dataplane with programmable policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground until SIGTERM or SIGINT.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the state of a running daemon.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
    },
}

#[derive(Subcommand)]
enum ShowWhat {
    /// Peers with their underlay address, encapsulation, MTU and counters.
    Peers(ShowOpts),
    /// Traffic counters and drops by reason.
    Stats(ShowOpts),
}

/// Which daemon to ask and how to print.
#[derive(Args)]
struct ShowOpts {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    locate: Locate,
}

/// Where the daemon's control socket is.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct Locate {
    /// The daemon's config file (its control socket path is read from it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The daemon's control socket.
    #[arg(long, short)]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        // A one-shot command piped into `head` should end quietly, like other Unix tools;
        // the daemon keeps Rust's default (SIGPIPE ignored) so a closed log pipe cannot kill it.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Check { config } => match config::Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} peers, {} routes, tunnel MTU {})",
                    config.display(),
                    c.dataplane.peers.len(),
                    c.routes.len(),
                    c.tun.mtu
                );
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Show { what } => show::show(what),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mgre: {e:#}");
            ExitCode::FAILURE
        }
    }
}
