//! Writes secretsfs's man page and shell completions from its CLI definition
//! (`secretsfs::config::Cli`), so they say what `--help` says:
//!
//!   secretsfs-gen DIR   ->  DIR/man/secretsfs.1
//!                           DIR/completions/secretsfs.bash, _secretsfs, secretsfs.fish

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};
use secretsfs::config::{Cli, ENVIRONMENT};

const USAGE: &str = "usage: secretsfs-gen DIR\n\
    writes DIR/man/secretsfs.1 and DIR/completions/{secretsfs.bash,_secretsfs,secretsfs.fish}";

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if dir == "-h" || dir == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match generate(Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretsfs-gen: {}: {e}", Path::new(dir).display());
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: &Path) -> std::io::Result<()> {
    let man_dir = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(&completions)?;
    let mut page = Vec::new();
    man_page(&mut page)?;
    std::fs::write(man_dir.join("secretsfs.1"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "secretsfs", &completions)?;
    }
    Ok(())
}

/// clap_mangen's sections, with our own SYNOPSIS (clap_mangen's lists every
/// option and the hidden second path), and ENVIRONMENT (the table `--help`
/// shows too), FILES, EXIT STATUS, EXAMPLES and SEE ALSO in place of its
/// generic EXTRA section.
fn man_page(w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    let usage = cmd.render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage: ").to_string();
    let man = Man::new(cmd).date(date()).manual("secretsfs manual");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;

    let mut roff = Roff::default();
    roff.control("SH", ["SYNOPSIS"]);
    let (name, args) = usage.split_once(' ').unwrap_or((&usage, ""));
    roff.text([bold(name), roman(" "), roman(args)]);
    roff.control("br", []);
    roff.text([
        bold(name),
        roman(" "),
        italic("SOURCE MOUNTPOINT"),
        roman(" [-o OPT,...]   (as mount(8) runs it; SOURCE is ignored)"),
    ]);
    roff.to_writer(&mut page)?;

    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;

    let mut roff = Roff::default();
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, what) in ENVIRONMENT {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(what)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in FILES {
        roff.control("TP", [])
            .text([italic(path)])
            .text([roman(what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "A refusal to start is one line on standard error, secretsfs: error: followed by the cause.",
    )]);
    for (code, what) in secretsfs::refusal::EXIT_STATUSES {
        roff.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(what)]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (what, example) in EXAMPLES {
        roff.text([roman(what)]);
        roff.control("IP", []).text([bold(example)]);
        roff.control("PP", []);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "mount.fuse3(8), fstab(5), systemd.exec(5), fusermount3(1); the README \
         of secretsfs (/usr/share/doc/secretsfs/README.md in the package).",
    )]);
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    w.write_all(&once_preamble(&String::from_utf8_lossy(&page)).into_bytes())
}

/// Each roff fragment starts with the same two-line preamble; one is enough.
fn once_preamble(page: &str) -> String {
    let mut preamble = Vec::new();
    Roff::default()
        .to_writer(&mut preamble)
        .expect("writing to memory");
    let preamble = String::from_utf8_lossy(&preamble);
    match page.strip_prefix(&*preamble) {
        Some(rest) => format!("{preamble}{}", rest.replace(&*preamble, "")),
        None => page.to_string(),
    }
}

/// The page's date, YYYY-MM-DD: SOURCE_DATE_EPOCH when set (reproducible
/// builds), else today (UTC).
fn date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

const FILES: [(&str, &str); 4] = [
    (
        "/etc/secretsfs/secretsfs.toml",
        "Settings of secretsfs.service: the long options as TOML keys, with underscores.",
    ),
    (
        "/etc/secretsfs/secretsfs.env",
        "Environment of secretsfs.service (AWS_REGION, HTTPS_PROXY, ...).",
    ),
    (
        "/etc/secretsfs/INSTANCE.toml, /etc/secretsfs/INSTANCE.env",
        "The same for secretsfs@INSTANCE.service, whose instance name is the escaped mountpoint (systemd-escape --path).",
    ),
    (
        "MOUNTPOINT/.secretsfs/stats",
        "Counters of the running daemon, as JSON.",
    ),
];

const EXAMPLES: [(&str, &str); 4] = [
    (
        "Mount the embedded local store with demo secrets (no AWS account needed):",
        "secretsfs --local /tmp/secretsfs-demo --demo /tmp/secrets",
    ),
    (
        "Mount the secrets under prod/ read-only, owned by www-data:",
        "secretsfs --prefix prod/ --read-only --allow-other --uid www-data --gid www-data /run/secrets",
    ),
    (
        "The same from /etc/fstab:",
        "secretsfs /run/secrets fuse.secretsfs _netdev,prefix=prod/,read_only,allow_other,uid=www-data,gid=www-data 0 0",
    ),
    (
        "Store a new version of a secret:",
        "printf '%s' 'n3w-passw0rd' > /run/secrets/prod/db/password/current",
    ),
];
