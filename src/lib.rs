//! secretsfs: AWS Secrets Manager as a FUSE filesystem.

#![deny(clippy::undocumented_unsafe_blocks)]

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
