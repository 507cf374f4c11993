use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::Parser;
use secretsfs::daemon::{self, Forked};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// Logs to standard error (coloured only on a terminal; one JSON object a
/// line with `--log-format json`); a daemonised child logs to journald when
/// there is one. Returns whether the log goes to standard error.
fn init_logging(daemonised: bool, json: bool) -> bool {
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
        return false;
    }
    let registry = tracing_subscriber::registry().with(filter);
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

fn main() -> ExitCode {
    let cfg = match secretsfs::config::Cli::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("secretsfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cfg.log_json;
    if !daemon::started_by_mount_helper() {
        let on_stderr = init_logging(false, json);
        return report(daemon::run(cfg, || {}), on_stderr);
    }
    // Started by mount(8): return once mounted, serve in the background.
    match daemon::fork_daemon() {
        Err(e) => report(Err(e), false),
        Ok(Forked::Parent(mut pipe)) => {
            let mut msg = String::new();
            let _ = pipe.read_to_string(&mut msg);
            match msg.strip_prefix("ready") {
                Some(_) => ExitCode::SUCCESS,
                None if msg.is_empty() => {
                    report(Err("the daemon exited before mounting".into()), false)
                }
                None => report(Err(msg), false),
            }
        }
        Ok(Forked::Child(pipe)) => {
            let on_stderr = init_logging(true, json);
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
            // The parent prints the error; here it goes to the journal.
            match result {
                Err(e) if !on_stderr => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
                r => report(r, on_stderr),
            }
        }
    }
}

/// Says why the daemon could not run, once: as a log line when the log is
/// standard error (so that `--log-format json` stays JSON), else plainly.
fn report(result: Result<(), String>, logged: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if logged => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("secretsfs: {e}");
            ExitCode::FAILURE
        }
    }
}
