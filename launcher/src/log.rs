//! Logging like a Unix tool: colour only on a terminal (and never with
//! `NO_COLOR`), `-q` silent on success, `-v` (or `RUST_LOG`) for more.

use std::io::IsTerminal;

/// How much the command says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verbosity {
    /// Errors only.
    pub quiet: bool,
    /// Extra detail (repeatable).
    pub verbose: u8,
}

/// Whether stderr may carry colour: a terminal, and `NO_COLOR` unset.
#[must_use]
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install the log subscriber of a process that is rank `rank`.
pub fn init(rank: usize, v: Verbosity) {
    let level = match (v.quiet, v.verbose, rank) {
        (true, _, _) => "error",
        (false, 0, 0) => "info",
        (false, 0, _) => "warn",
        (false, 1, _) => "debug",
        (false, _, _) => "trace",
    };
    let filter = if v.quiet {
        tracing_subscriber::EnvFilter::new(level)
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false)
        .try_init();
}
