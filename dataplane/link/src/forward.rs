//! What the route layer found out about a request, for the layers below it.

use std::sync::Arc;

use crate::path::NormalPath;

/// The target a request is for and the part of its path that is forwarded.
#[derive(Debug, Clone)]
pub struct Forward {
    pub target: Arc<str>,
    /// The path after `/link/{target}`, normalised.
    pub path: NormalPath,
    /// The raw query string, forwarded as it came.
    pub query: Option<String>,
}
