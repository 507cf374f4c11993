use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use secretsfs::daemon::{self, Forked};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// Logs to standard error; a daemonised child logs to journald when there is one.
fn init_logging(daemonised: bool) {
    // Without RUST_LOG: info (mounts, versions stored, warnings).
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if daemonised
        && std::path::Path::new("/run/systemd/journal/socket").exists()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn main() -> ExitCode {
    let cfg = match secretsfs::config::Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("secretsfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !daemon::started_by_mount_helper() {
        init_logging(false);
        return report(daemon::run(cfg, || {}));
    }
    // Started by mount(8): return once mounted, serve in the background.
    match daemon::fork_daemon() {
        Err(e) => report(Err(e)),
        Ok(Forked::Parent(mut pipe)) => {
            let mut msg = String::new();
            let _ = pipe.read_to_string(&mut msg);
            match msg.strip_prefix("ready") {
                Some(_) => ExitCode::SUCCESS,
                None if msg.is_empty() => report(Err("the daemon exited before mounting".into())),
                None => report(Err(msg)),
            }
        }
        Ok(Forked::Child(pipe)) => {
            init_logging(true);
            // Whoever speaks first (ready, or the error) closes the pipe, so
            // that the parent's read ends.
            let pipe = std::sync::Arc::new(parking_lot::Mutex::new(Some(pipe)));
            let speak = |p: &parking_lot::Mutex<Option<std::fs::File>>, msg: &[u8]| {
                if let Some(mut f) = p.lock().take() {
                    let _ = f.write_all(msg);
                }
            };
            let ready = pipe.clone();
            let result = daemon::run(cfg, move || speak(&ready, b"ready"));
            if let Err(e) = &result {
                speak(&pipe, e.as_bytes());
            }
            report(result)
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("secretsfs: {e}");
            ExitCode::FAILURE
        }
    }
}
