//! The mount's own files, under `.secretsfs/`: `stats` (JSON) and
//! `metrics` (Prometheus text), made at each open; `refresh`, write-only,
//! where names written drop their cache entries; and `rendered/`, the
//! files rendered from templates (rendering is templates/).

use std::sync::Arc;

use async_trait::async_trait;

use super::view::{Content, Listing, Parent, View};
use crate::error::{Error, Result};
use crate::fs::core::Core;
use crate::fs::handles::Handle;
use crate::fs::templates::{RENDERED_DIR, Render, TemplateDef};
use crate::fs::types::{Attr, Caller, Entry, Kind, Opened};
use crate::inode::{Ino, Node, Report};
use crate::store::SecretName;
use crate::tree::{self, METRICS_FILE, REFRESH_FILE, STATS_DIR, STATS_FILE};

/// The largest write(2) to `refresh` (one page: the kernel hands it over
/// whole).
pub(in crate::fs) const MAX_REFRESH_WRITE: usize = 4096;

/// A handle whose reads are answered from memory and whose close does
/// nothing.
const PLAIN: Opened = Opened {
    fh: 0,
    keep_cache: false,
    direct_io: true,
    no_flush: true,
};

pub(super) struct OwnFiles;

/// What one line written to `refresh` names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Secret(SecretName),
    /// A prefix ending in `/`, or "" for `*`.
    Prefix(String),
}

/// The lines of one write(2) to `refresh`, all checked before any is done.
fn parse_targets(data: &[u8]) -> Result<Vec<Target>> {
    let bad = |why: &str| Error::Invalid(format!("refresh: {why}"));
    let text = std::str::from_utf8(data).map_err(|_| bad("not UTF-8"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.split('\n')
        .map(|line| match line {
            "" => Err(bad("an empty line")),
            "*" => Ok(Target::Prefix(String::new())),
            p if p.ends_with('/') && tree::valid_path(&p[..p.len() - 1]) => {
                Ok(Target::Prefix(p.to_string()))
            }
            n if !n.ends_with('/') && tree::valid_path(n) => Ok(Target::Secret(SecretName::new(n))),
            _ => Err(bad(
                "a line is not a secret name, a prefix ending in '/' or '*'",
            )),
        })
        .collect()
}

/// A write(2) to `refresh`: every line is checked, then each one's cache
/// entries and the kernel's caches go; the write returns when that is done.
pub(in crate::fs) async fn refresh(core: &Core, data: &[u8]) -> Result<u32> {
    // One write(2) is one request; a larger one may reach us in pieces
    // cut mid-line, which would be taken as other names.
    if data.len() > MAX_REFRESH_WRITE {
        return Err(Error::Invalid(format!(
            "write at most {MAX_REFRESH_WRITE} bytes at once to refresh"
        )));
    }
    for target in parse_targets(data)? {
        match &target {
            Target::Secret(s) => core.refresh_secret(s),
            Target::Prefix(p) => core.refresh_prefix(p),
        }
        tracing::info!(target = ?target, "refresh: cache entries dropped");
        core.stats.refreshed();
    }
    Ok(data.len() as u32)
}

/// `.secretsfs/refresh`: write-only, the mount's owner's.
fn refresh_attr(core: &Core, ino: Ino) -> Attr {
    Attr {
        ino,
        kind: Kind::File,
        size: 0,
        mtime: core.mounted_at,
        perm: 0o200,
        uid: core.cfg.uid,
        gid: core.cfg.gid,
    }
}

/// A rendered file's attributes: its template's owner and mode, the
/// render's size and date.
fn rendered_attr(core: &Core, ino: Ino, def: &TemplateDef, r: &Render) -> Attr {
    Attr {
        ino,
        kind: Kind::File,
        size: r.size(),
        mtime: r.mtime,
        perm: def.mode,
        uid: def.uid.unwrap_or(core.cfg.uid),
        gid: def.gid.unwrap_or(core.cfg.gid),
    }
}

#[async_trait]
impl View for OwnFiles {
    fn owns(&self, node: &Node) -> bool {
        matches!(
            node,
            Node::StatsDir
                | Node::StatsFile(_)
                | Node::RefreshFile
                | Node::RenderedDir
                | Node::Rendered(_)
        )
    }

    fn kind(&self, node: &Node) -> Kind {
        match node {
            Node::StatsDir | Node::RenderedDir => Kind::Dir,
            _ => Kind::File,
        }
    }

    fn path(&self, node: &Node) -> String {
        match node {
            Node::StatsDir => STATS_DIR.into(),
            Node::StatsFile(Report::Json) => format!("{STATS_DIR}/{STATS_FILE}"),
            Node::StatsFile(Report::Prometheus) => format!("{STATS_DIR}/{METRICS_FILE}"),
            Node::RefreshFile => format!("{STATS_DIR}/{REFRESH_FILE}"),
            Node::RenderedDir => format!("{STATS_DIR}/{RENDERED_DIR}"),
            Node::Rendered(n) => format!("{STATS_DIR}/{RENDERED_DIR}/{n}"),
            _ => unreachable!("not one of the mount's own files"),
        }
    }

    async fn lookup(
        &self,
        core: &Core,
        dir: &mut Parent,
        name: &str,
        _caller: Caller,
    ) -> Result<Option<Node>> {
        Ok(match &dir.node {
            Node::Dir(p) if p.is_empty() && name == STATS_DIR => Some(Node::StatsDir),
            Node::StatsDir => match name {
                STATS_FILE => Some(Node::StatsFile(Report::Json)),
                METRICS_FILE => Some(Node::StatsFile(Report::Prometheus)),
                REFRESH_FILE => Some(Node::RefreshFile),
                RENDERED_DIR if core.has_templates() => Some(Node::RenderedDir),
                _ => return Err(Error::NotFound),
            },
            Node::RenderedDir if core.has_template(name) => Some(Node::Rendered(Arc::from(name))),
            Node::RenderedDir => return Err(Error::NotFound),
            _ => None,
        })
    }

    async fn list(
        &self,
        core: &Core,
        dir: &mut Parent,
        _caller: Caller,
        out: &mut Listing<'_>,
    ) -> Result<()> {
        match &dir.node {
            Node::StatsDir => {
                out.push(Node::StatsFile(Report::Json), Kind::File, STATS_FILE);
                out.push(
                    Node::StatsFile(Report::Prometheus),
                    Kind::File,
                    METRICS_FILE,
                );
                out.push(Node::RefreshFile, Kind::File, REFRESH_FILE);
                if core.has_templates() {
                    out.push(Node::RenderedDir, Kind::Dir, RENDERED_DIR);
                }
            }
            Node::RenderedDir => {
                for n in core.template_names() {
                    out.push(Node::Rendered(n.clone()), Kind::File, &n);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn attr(&self, core: &Core, ino: Ino, node: &Node) -> Result<Entry> {
        Ok(match node {
            Node::StatsDir | Node::RenderedDir => Entry {
                attr: core.reserved_dir_attr(ino),
                ttl: core.cfg.ttl,
            },
            Node::StatsFile(r) => {
                let size = core.report(*r).len() as u64;
                Entry::uncached(core.file_attr(ino, size, std::time::SystemTime::now(), false))
            }
            Node::RefreshFile => Entry::uncached(refresh_attr(core, ino)),
            Node::Rendered(n) => {
                // Rendered now if a secret it used moved: never cached by
                // the kernel, so stat's size is always that of what an open
                // reads now; the kernel view is told which render they
                // describe, so page-cache fills (maps, read-only mounts)
                // are answered from it. A failed render is a file of size
                // 0 whose opens fail with EIO.
                let (slot, r) = core.rendered(n).await?;
                let mut attr = rendered_attr(core, ino, &slot.def, &r);
                if let Ok(bytes) = r.bytes() {
                    let told = core.kernel.tell(ino, &r.shown(&bytes));
                    attr.size = told.value.len() as u64;
                }
                Entry::uncached(attr)
            }
            _ => return Err(Error::NotFound),
        })
    }

    async fn open(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened> {
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        match node {
            Node::StatsFile(_) | Node::Rendered(_) if writing => {
                Err(Error::Refused("read-only file"))
            }
            Node::StatsFile(r) => {
                let fh = core.handles.add(Handle::Plain(Arc::from(core.report(*r))));
                Ok(Opened { fh, ..PLAIN })
            }
            Node::RefreshFile => {
                // The mount's owner or root, writing.
                if caller.uid != 0 && caller.uid != core.cfg.uid {
                    return Err(Error::Refused("only the mount's owner may refresh"));
                }
                if !writing {
                    return Err(Error::Refused("write-only file"));
                }
                if core.cfg.read_only {
                    return Err(Error::ReadOnly);
                }
                Ok(Opened {
                    fh: core.handles.add(Handle::Refresh),
                    ..PLAIN
                })
            }
            Node::Rendered(n) => {
                // A read handle pins the bytes rendered at open; direct
                // I/O, so that no page cache of older bytes is ever served.
                let (slot, r) = core.rendered(n).await?;
                let bytes = r.bytes()?;
                let attr = rendered_attr(core, ino, &slot.def, &r);
                let fh = core.handles.add(Handle::Rendered { bytes, attr });
                Ok(Opened { fh, ..PLAIN })
            }
            _ => Err(Error::IsDir),
        }
    }

    /// The refresh file's open says why it cannot be written (read-only).
    fn served_without_open(&self, node: &Node) -> bool {
        !matches!(node, Node::RefreshFile)
    }

    /// A rendered file reads the secrets its render now uses.
    async fn reads(&self, core: &Core, node: &Node) -> Result<Vec<SecretName>> {
        match node {
            Node::Rendered(n) => core.rendered_secrets(n).await,
            _ => Ok(Vec::new()),
        }
    }

    async fn content(&self, core: &Core, node: &Node) -> Result<Content> {
        match node {
            Node::StatsFile(r) => Ok(Content::Plain(core.report(*r))),
            Node::Rendered(n) => {
                let (_, r) = core.rendered(n).await?;
                Ok(Content::Version(r.shown(&r.bytes()?)))
            }
            Node::RefreshFile => Err(Error::BadHandle),
            _ => Err(Error::IsDir),
        }
    }

    /// `echo name > refresh` truncates first: nothing to truncate.
    async fn truncate(
        &self,
        core: &Core,
        ino: Ino,
        node: &Node,
        _handle: Option<crate::fs::handles::Handle>,
        _size: u64,
    ) -> Result<Option<Entry>> {
        match node {
            Node::RefreshFile => Ok(Some(Entry::uncached(refresh_attr(core, ino)))),
            _ => Err(Error::Refused("read-only file")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_lines_are_names_prefixes_or_a_star() {
        assert_eq!(
            parse_targets(b"prod/db\nprod/web/\n*\n").unwrap(),
            vec![
                Target::Secret(SecretName::new("prod/db")),
                Target::Prefix("prod/web/".into()),
                Target::Prefix(String::new()),
            ]
        );
        assert_eq!(
            parse_targets(b"a").unwrap(),
            vec![Target::Secret(SecretName::new("a"))]
        );
    }

    #[test]
    fn empty_or_invalid_refresh_lines_are_refused() {
        for bad in [
            &b""[..],
            b"\n",
            b"a\n\nb\n",
            b"/",
            b"a//b",
            b"../x",
            b"\xff",
            b"a\n\n",
        ] {
            assert!(
                matches!(parse_targets(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
