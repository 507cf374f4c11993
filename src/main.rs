#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use secretsfs::daemon::{self, Forked};
use secretsfs::refusal::{self, Refusal};

fn main() -> ExitCode {
    let cli = match secretsfs::config::Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return report(Err(Refusal::from_clap(&e)), false),
    };
    let cfg = match cli.into_config() {
        Ok(c) => c,
        Err(e) => return report(Err(Refusal::config(e)), false),
    };
    let json = cfg.log_json;
    if !daemon::started_by_mount_helper() {
        // A refusal is the plain line, unless the log is JSON.
        let on_stderr = secretsfs::logging::init(false, json);
        return report(daemon::run(cfg, || {}), on_stderr && json);
    }
    // Started by mount(8): return once mounted, serve in the background.
    match daemon::fork_daemon() {
        Err(e) => report(Err(Refusal::failure(e)), false),
        Ok(Forked::Parent(mut pipe)) => {
            let mut msg = String::new();
            let _ = pipe.read_to_string(&mut msg);
            report(from_pipe(&msg), false)
        }
        Ok(Forked::Child(pipe)) => {
            let on_stderr = secretsfs::logging::init(true, json);
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
                speak(&pipe, format!("{} {}", e.code(), e.message).as_bytes());
            }
            // The parent prints the error; it goes to the journal too.
            match result {
                Err(e) if on_stderr => ExitCode::from(e.code()),
                r => report(r, true),
            }
        }
    }
}

/// The child's word through the pipe: "ready", or "<status> <cause>".
fn from_pipe(msg: &str) -> Result<(), Refusal> {
    if msg.starts_with("ready") {
        return Ok(());
    }
    if msg.is_empty() {
        return Err(Refusal::failure("the daemon exited before mounting"));
    }
    match msg.split_once(' ') {
        Some((code, cause)) if code == refusal::EXIT_CONFIG.to_string() => {
            Err(Refusal::config(cause))
        }
        Some((_, cause)) => Err(Refusal::failure(cause)),
        None => Err(Refusal::failure(msg)),
    }
}

/// Says why the daemon did not run, once, and exits with its status: as a
/// log line when `logged` (JSON on standard error, or journald), else as
/// the plain line `secretsfs: error: <cause>`.
fn report(result: Result<(), Refusal>, logged: bool) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if logged {
                tracing::error!(exit_status = e.code(), "{}", e.message);
            } else {
                eprintln!("{}", refusal::line(&e.message));
            }
            ExitCode::from(e.code())
        }
    }
}
