//! secretsfs: AWS Secrets Manager as a FUSE filesystem.

#![deny(clippy::undocumented_unsafe_blocks)]

/// The version `--version` prints and the stats report: the package's, and
/// the git commit it was built from when built from a git checkout (set by
/// build.rs). Here at the root, so that every module may name it.
pub const VERSION: &str = env!("SECRETSFS_VERSION");

pub mod access;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod hooks;
pub mod inode;
pub mod jsonobj;
pub mod logging;
pub mod mount;
pub mod preflight;
pub mod process;
pub mod refusal;
pub mod rules;
pub mod selinux;
pub mod stats;
pub mod store;
pub mod tree;

#[cfg(test)]
mod layout {
    /// The import graph of src/ has no cycle: `.ci/imports` (which the
    /// README's Layout section describes) reads every module's paths.
    #[test]
    fn the_import_graph_has_no_cycle() {
        let out = std::process::Command::new("python3")
            .arg(".ci/imports")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("python3 runs .ci/imports");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(" modules, "), "{text}");
    }
}
