//! Writes secretsfs's man page, shell completions and the option reference
//! of docs/configuration.md from its CLI definition (`secretsfs::config::Cli`),
//! so they say what `--help` says:
//!
//!   secretsfs-gen DIR               ->  DIR/man/secretsfs.1
//!                                       DIR/completions/secretsfs.bash, _secretsfs, secretsfs.fish
//!   secretsfs-gen --reference FILE  ->  FILE's text between the reference markers
//!
//! A unit test below fails when docs/configuration.md's reference is not what
//! the definition generates, so the reference cannot drift from `--help`.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};
use secretsfs::config::{Cli, ENVIRONMENT};

const USAGE: &str = "usage: secretsfs-gen DIR\n\
    writes DIR/man/secretsfs.1 and DIR/completions/{secretsfs.bash,_secretsfs,secretsfs.fish}\n\
    usage: secretsfs-gen --reference FILE\n\
    rewrites the option reference between FILE's markers (docs/configuration.md)";

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let [flag, file] = args.as_slice()
        && flag == "--reference"
    {
        return match write_reference(Path::new(file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("secretsfs-gen: {}: {e}", Path::new(file).display());
                ExitCode::FAILURE
            }
        };
    }
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

const EXAMPLES: [(&str, &str); 5] = [
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
    (
        "Mount the Parameter Store parameters under /app/ (parameter /app/db/url is /run/params/app/db/url/current):",
        "secretsfs --source ssm --prefix /app/ /run/params",
    ),
];

/// The lines that enclose the generated reference in docs/configuration.md.
const BEGIN: &str = "<!-- BEGIN option reference: generated by `cargo run --bin secretsfs-gen -- --reference docs/configuration.md` from the CLI definition; do not edit -->";
const END: &str = "<!-- END option reference -->";

/// Rewrites the reference between the markers of `file`, in place.
fn write_reference(file: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let new = with_reference(&text).map_err(std::io::Error::other)?;
    if new != text {
        std::fs::write(file, new)?;
    }
    Ok(())
}

/// `text` with what stands between its markers replaced by the reference.
fn with_reference(text: &str) -> Result<String, String> {
    let start = text
        .find(BEGIN)
        .ok_or_else(|| format!("no line '{BEGIN}'"))?
        + BEGIN.len();
    let end = start
        + text[start..]
            .find(END)
            .ok_or_else(|| format!("no line '{END}' after the first marker"))?;
    Ok(format!(
        "{}\n{}{}",
        &text[..start],
        options_reference(),
        &text[end..]
    ))
}

/// The option reference in Markdown: every argument of the CLI definition in
/// its order (the help texts `--help` shows, with their ranges and defaults),
/// then the environment variables `--help` lists.
fn options_reference() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = String::from(
        "| option | as `-o` | what it does |\n\
         | --- | --- | --- |\n",
    );
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let values: Vec<String> = arg
            .get_value_names()
            .unwrap_or_default()
            .iter()
            .map(|v| format!("<{v}>"))
            .collect();
        let takes_value = arg.get_action().takes_values();
        let option = match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(l)) => format!("-{s}, --{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => String::new(),
        };
        let option = match (option.is_empty(), takes_value) {
            (true, _) => values.join(" "),
            (false, true) => format!("{option} {}", values.join(" ")),
            (false, false) => option,
        };
        // -o spells every long option with underscores (config.rs's
        // apply_options); the mountpoint, -o itself, help and version are not.
        let as_o = match arg.get_long() {
            Some("help" | "version") | None => String::new(),
            Some(l) if takes_value => format!("`{}=`", l.replace('-', "_")),
            Some(l) => format!("`{}`", l.replace('-', "_")),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let mut what = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !possible.is_empty() && takes_value {
            what.push_str(&format!(" (one of {})", possible.join(", ")));
        }
        out.push_str(&format!("| `{option}` | {} | {} |\n", as_o, cell(&what)));
    }
    out.push_str(
        "\nThe environment (`--help` lists it too):\n\n\
         | variable | what it does |\n\
         | --- | --- |\n",
    );
    for (name, what) in ENVIRONMENT {
        let names: Vec<String> = name.split(", ").map(|n| format!("`{n}`")).collect();
        out.push_str(&format!("| {} | {} |\n", names.join(", "), cell(what)));
    }
    out
}

/// Text for a Markdown table cell: `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_reference_in_the_docs_is_what_the_cli_definition_generates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let want = with_reference(&text).unwrap();
        assert!(
            text == want,
            "{}'s option reference is not what the CLI definition generates: run \
             `cargo run --bin secretsfs-gen -- --reference docs/configuration.md`\n\
             committed:\n{}\ngenerated:\n{}",
            path.display(),
            &text[text.find(BEGIN).unwrap()..],
            &want[want.find(BEGIN).unwrap()..]
        );
    }

    #[test]
    fn the_reference_names_every_option_and_a_changed_one_is_caught() {
        let reference = options_reference();
        let mut cmd = Cli::command();
        cmd.build();
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                assert!(reference.contains(&format!("--{long}")), "--{long}");
            }
        }
        let doc = format!("intro\n{BEGIN}\n| old |\n{END}\nrest\n");
        let new = with_reference(&doc).unwrap();
        assert_ne!(new, doc);
        assert_eq!(with_reference(&new).unwrap(), new, "stable once written");
        assert!(new.starts_with("intro\n") && new.ends_with(&format!("{END}\nrest\n")));
        assert!(with_reference("no markers").is_err());
    }
}
