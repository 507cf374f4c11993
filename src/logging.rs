//! Where log lines go and which ones: standard error (coloured only on a
//! terminal; one JSON object a line with `--log-format json`), or journald
//! for a daemonised child. Without RUST_LOG, secretsfs's own lines from
//! info up and other crates' (the AWS SDK, fuser) only from error up: the
//! SDK's warnings are multi-line dumps whose cause the start-up check folds
//! into its own line; `RUST_LOG=info,aws_config=debug` shows them.

use std::io::IsTerminal;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// The filter when RUST_LOG is not set.
pub const DEFAULT_FILTER: &str = "error,secretsfs=info";

/// RUST_LOG when set, else `DEFAULT_FILTER`.
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Sets up logging; returns whether the log goes to standard error.
pub fn init(daemonised: bool, json: bool) -> bool {
    if daemonised
        && std::path::Path::new("/run/systemd/journal/socket").exists()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter())
            .with(journald)
            .init();
        return false;
    }
    let registry = tracing_subscriber::registry().with(filter());
    if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init();
    } else {
        let ansi = std::io::stderr().is_terminal();
        registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init();
    }
    true
}
