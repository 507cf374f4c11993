//! Sets SECRETSFS_VERSION for `--version`: the package version, plus the git
//! commit when this is built from a git checkout of secretsfs itself
//! ("0.1.0 (git 1a2b3c4)"). Without git or outside a checkout (a crate
//! tarball), it is the package version alone.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=build.rs");
    let full = match commit(&manifest_dir) {
        Some(commit) => format!("{version} (git {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=SECRETSFS_VERSION={full}");
}

/// `git` in `dir`, its trimmed standard output when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// The short commit of HEAD, when `dir` is the top of a git checkout (not a
/// tarball unpacked inside some other repository). Also tells cargo to run
/// this again when HEAD moves: a checkout, or a commit on the branch.
fn commit(dir: &Path) -> Option<String> {
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    for name in ["HEAD", "packed-refs"] {
        watch(dir, name, false);
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch(dir, &branch, true);
    }
    Some(commit)
}

/// rerun-if-changed for a path under the git directory. A path that does not
/// exist would make cargo run this at every build, so it is skipped; for a
/// branch only in packed-refs, its directory is watched instead, where the
/// next commit writes it.
fn watch(dir: &Path, name: &str, or_parent: bool) {
    let Some(path) = git(dir, &["rev-parse", "--git-path", name]) else {
        return;
    };
    let mut path = dir.join(path);
    if !path.exists() && or_parent {
        path.pop();
    }
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
