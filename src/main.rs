use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = secretsfs::config::Cli::parse()
        .into_config()
        .and_then(secretsfs::daemon::run);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretsfs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
