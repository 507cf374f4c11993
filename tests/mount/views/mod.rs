//! Views beside a secret's own files: `json/<key>` and the rendered files
//! of `.secretsfs/rendered/` (templates), and what editing them keeps in
//! memory (memory).

mod json;
mod memory;
mod templates;
