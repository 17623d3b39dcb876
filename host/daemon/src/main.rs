//! `mgre`: the multipoint GRE daemon and its command line.
//!
//! `mgre run` starts the daemon, `mgre check` validates a config, `mgre show` asks a running
//! daemon over its control socket.

mod alloc_count;
mod config;
mod control;
mod metrics;
mod nhrp;
mod plugins;
mod policy;
mod routes;
mod run;
mod show;
mod snapshot;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

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
    /// Reload a running daemon's plugins (re-reads the config file's plugin sections and
    /// every plugin file; like SIGHUP). A plugin that fails keeps its previous version.
    Reload {
        #[command(flatten)]
        locate: Locate,
    },
}

#[derive(Subcommand)]
enum ShowWhat {
    /// Peers with their underlay address, encapsulation, MTU and counters.
    Peers(ShowOpts),
    /// Traffic counters and drops by reason.
    Stats(ShowOpts),
    /// Policy plugins: hooks, generation, content hash, calls, cost, faults, state.
    Plugins(ShowOpts),
    /// The NHRP cache: overlay prefix, underlay address, type (static/dynamic), expiry,
    /// flags; and the NHRP counters.
    Nhrp(ShowOpts),
    /// A spoke's Next Hop Servers: registration state, priority, NAT, counters.
    Nhs(ShowOpts),
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

/// `mgre check`: the config, then every plugin it names (compiled and initialised).
fn check(file: &std::path::Path) -> ExitCode {
    let c = match config::Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match plugins::check(&c) {
        Ok(errors) if errors.is_empty() => {}
        Ok(errors) => {
            for e in errors {
                eprintln!("{}: {e}", file.display());
            }
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{}: {e:#}", file.display());
            return ExitCode::FAILURE;
        }
    }
    let plugins = c.plugins.as_ref().map_or(0, |p| p.plugins.len());
    let nhrp = match (&c.nhrp, c.dataplane.role) {
        (None, _) => "",
        (Some(_), mgre_proto::Role::Hub) => ", NHRP server",
        (Some(n), mgre_proto::Role::Spoke) if n.nhs.len() == 1 => ", NHRP client of 1 NHS",
        (Some(_), mgre_proto::Role::Spoke) => ", NHRP client",
    };
    println!(
        "{}: ok ({} peers, {} routes, tunnel MTU {}, {plugins} plugins{nhrp})",
        file.display(),
        c.dataplane.peers.len(),
        c.routes.len(),
        c.tun.mtu
    );
    ExitCode::SUCCESS
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
        Command::Check { config } => return check(&config),
        Command::Show { what } => show::show(what),
        Command::Reload { locate } => show::reload(&locate),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mgre: {e:#}");
            ExitCode::FAILURE
        }
    }
}
