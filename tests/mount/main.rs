//! The real-mount tests: one test binary (linked once) with a module per
//! behaviour, each mounting the secretsfs binary for real against moto (a
//! Secrets Manager emulator on 127.0.0.1) or the local store, through an
//! RAII guard that unmounts on drop. Shared helpers live in tests/common
//! (also used by the benches). The fs-layer and model tests stay in their
//! own binaries (tests/fs_layer.rs, tests/fs_model.rs).
//!
//! Run one behaviour with `cargo test --test mount MODULE::`, e.g.
//! `cargo test --test mount views::json::`.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod coherence;
mod editors;
mod exact_reads;
mod hooks;
mod local_store;
mod operability;
mod operator;
mod packaging;
mod read;
mod regions;
mod reliability;
mod review18;
mod review18b;
mod review21;
mod review22;
mod review23;
mod rpm;
mod rules;
mod selinux;
mod service;
mod ssm;
mod stages;
mod startup;
mod systemd;
mod views;
mod write;
