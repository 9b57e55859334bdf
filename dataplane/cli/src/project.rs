//! Finding and reading a project's config files: `<dir>/flows/*.yaml` and `<dir>/link/config.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fiso_config::validate::{check_project, Project, SourceFile};
use fiso_config::Diagnostics;

/// The default project directory created by `fiso init`.
pub const DEFAULT_DIR: &str = "fiso";

/// Config files found for a validation or export run.
#[derive(Debug, Default)]
pub struct ProjectFiles {
    pub flows: Vec<SourceFile>,
    pub link: Option<SourceFile>,
}

impl ProjectFiles {
    /// Reads what `target` points at:
    /// * a project dir (has `flows/` or `link/`): its flows and `link/config.yaml`;
    /// * any other dir: its `*.yaml` / `*.yml` files as flows;
    /// * a file: one flow, or the link config when it is `link/config.yaml`.
    pub fn read(target: &Path) -> Result<Self> {
        if !target.exists() {
            bail!(
                "{} does not exist; run `fiso init` to create a project, or pass the directory holding flows/ and link/",
                target.display()
            );
        }
        if target.is_file() {
            let file = read_source(target)?;
            let is_link = target.file_name().is_some_and(|n| n == "config.yaml")
                && target
                    .parent()
                    .and_then(Path::file_name)
                    .is_some_and(|d| d == "link");
            return Ok(if is_link {
                ProjectFiles {
                    flows: vec![],
                    link: Some(file),
                }
            } else {
                ProjectFiles {
                    flows: vec![file],
                    link: None,
                }
            });
        }
        let flows_dir = target.join("flows");
        let link_file = target.join("link").join("config.yaml");
        if flows_dir.is_dir() || link_file.is_file() {
            let flows = if flows_dir.is_dir() {
                read_yaml_dir(&flows_dir)?
            } else {
                vec![]
            };
            let link = link_file
                .is_file()
                .then(|| read_source(&link_file))
                .transpose()?;
            return Ok(ProjectFiles { flows, link });
        }
        Ok(ProjectFiles {
            flows: read_yaml_dir(target)?,
            link: None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.link.is_none()
    }

    pub fn check(&self) -> (Project, Diagnostics) {
        check_project(&self.flows, self.link.as_ref())
    }
}

fn read_source(path: &Path) -> Result<SourceFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(SourceFile {
        path: display_path(path),
        text,
    })
}

/// `*.yaml` / `*.yml` files of a directory, sorted, hidden files skipped.
pub fn read_yaml_dir(dir: &Path) -> Result<Vec<SourceFile>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
            !hidden && yaml && p.is_file()
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| read_source(p)).collect()
}

/// Paths as the user typed them, without a leading `./`.
fn display_path(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map(str::to_owned).unwrap_or(s)
}

/// `DIR` argument default: `./fiso` when it exists, else the current directory.
pub fn default_target() -> PathBuf {
    let d = PathBuf::from(DEFAULT_DIR);
    if d.is_dir() {
        d
    } else {
        PathBuf::from(".")
    }
}
