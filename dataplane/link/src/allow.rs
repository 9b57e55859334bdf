//! Allowed paths: a target's `allowedPaths` globs, compiled once, and the concern that refuses
//! (403) a request whose [normalised](crate::path) path matches none of them before anything
//! else is spent on it. `*` is one segment, `**` any depth; matching is case-sensitive.

use std::sync::Arc;

use futures::future::BoxFuture;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::forward::Forward;
use crate::layer::{Concern, Next};
use crate::path::NormalPath;
use crate::response::{error, ErrorCode, Request, Response};

/// Compiled `allowedPaths` of one target.
#[derive(Debug, Clone)]
pub struct AllowedPaths {
    /// `None` when the list is empty: every path is allowed.
    set: Option<GlobSet>,
}

impl AllowedPaths {
    /// `*` matches exactly one segment, `**` any depth (including zero segments:
    /// `/api/v2/**` also matches `/api/v2` and `/api/v2/`); other glob syntax per globset
    /// with `literal_separator(true)`. An empty list allows every path. Invalid globs are an
    /// error naming the glob.
    pub fn new(globs: &[String]) -> Result<Self, globset::Error> {
        if globs.is_empty() {
            return Ok(Self { set: None });
        }
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            // Compile as written first, so an error names the glob the user wrote.
            compile(glob)?;
            for variant in variants(glob) {
                builder.add(compile(&variant)?);
            }
        }
        Ok(Self {
            set: Some(builder.build()?),
        })
    }

    /// Whether `path` may be forwarded. Matching is case-sensitive and ignores a trailing
    /// slash of the request.
    pub fn allows(&self, path: &NormalPath) -> bool {
        self.set
            .as_ref()
            .is_none_or(|set| set.is_match(path.match_str()))
    }

    /// True when the target has no `allowedPaths`, so the layer can skip normalising.
    pub fn allows_all(&self) -> bool {
        self.set.is_none()
    }
}

/// The globs actually compiled for one configured glob. A trailing slash is dropped, as it is
/// from request paths; a trailing `/**` also yields its prefix so `**` can match zero
/// segments (globset's `a/**` requires at least one).
fn variants(glob: &str) -> Vec<String> {
    let glob = match glob.strip_suffix('/') {
        Some(g) if !g.is_empty() => g,
        _ => glob,
    };
    let mut out = vec![glob.to_owned()];
    if let Some(prefix) = glob.strip_suffix("/**") {
        out.push(if prefix.is_empty() { "/" } else { prefix }.to_owned());
    }
    out
}

fn compile(glob: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// The allowed-paths concern: a request whose normalised path matches none of the target's
/// `allowedPaths` is refused with 403 before anything else is spent on it.
#[derive(Clone)]
pub struct Allow {
    allowed: Arc<AllowedPaths>,
}

impl Allow {
    pub fn new(allowed: AllowedPaths) -> Self {
        Allow {
            allowed: Arc::new(allowed),
        }
    }
}

impl Concern for Allow {
    fn call(&self, req: Request, next: &Next) -> BoxFuture<'static, Response> {
        let refused = match req.extensions().get::<Forward>() {
            Some(f) if self.allowed.allows(&f.path) => None,
            Some(f) => Some(format!(
                "path {} is not allowed for target `{}`",
                f.path.as_str(),
                f.target
            )),
            None => Some("no target for this request".to_owned()),
        };
        match refused {
            Some(message) => {
                let response = error(ErrorCode::PathNotAllowed, message);
                Box::pin(async move { response })
            }
            None => next.handle(req),
        }
    }
}

#[cfg(test)]
mod tests;
