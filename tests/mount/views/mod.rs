//! Views beside a secret's own files: `json/<key>` and the rendered files
//! of `.secretsfs/rendered/` (templates).

mod json;
mod templates;
