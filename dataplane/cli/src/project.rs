//! Finding and reading a project's config files: `<dir>/flows/*.yaml` and `<dir>/link/config.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fiso_config::validate::{check_project, Project, SourceFile};
use fiso_config::{Diagnostic, Diagnostics};
use fiso_runtime::watch::{is_yaml, read_config_file, snapshot};

/// The default project directory created by `fiso init`.
pub const DEFAULT_DIR: &str = "fiso";

/// Config files found for a validation or export run.
#[derive(Debug, Default)]
pub struct ProjectFiles {
    pub flows: Vec<SourceFile>,
    pub link: Option<SourceFile>,
    /// Flow files that could not be read: errors of their own, as the data plane reports them.
    pub unreadable: Vec<Unreadable>,
}

/// A file that could not be read: its path, and why.
pub type Unreadable = (String, String);

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
                    link: Some(file),
                    ..ProjectFiles::default()
                }
            } else {
                ProjectFiles {
                    flows: vec![file],
                    ..ProjectFiles::default()
                }
            });
        }
        let flows_dir = target.join("flows");
        let link_file = target.join("link").join("config.yaml");
        if flows_dir.is_dir() || link_file.is_file() {
            let (flows, unreadable) = if flows_dir.is_dir() {
                read_flow_dir(&flows_dir)?
            } else {
                Default::default()
            };
            let link = link_file
                .is_file()
                .then(|| read_source(&link_file))
                .transpose()?;
            return Ok(ProjectFiles {
                flows,
                link,
                unreadable,
            });
        }
        let (flows, unreadable) = read_flow_dir(target)?;
        Ok(ProjectFiles {
            flows,
            link: None,
            unreadable,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.link.is_none() && self.unreadable.is_empty()
    }

    pub fn check(&self) -> (Project, Diagnostics) {
        let (project, mut diags) = check_project(&self.flows, self.link.as_ref());
        for (path, problem) in &self.unreadable {
            let mut d = Diagnostic::error("", problem.clone());
            d.file = Some(path.clone());
            diags.push(d);
        }
        (project, diags)
    }
}

/// One file, read as the data plane reads it (size bound, UTF-8).
fn read_source(path: &Path) -> Result<SourceFile> {
    let text =
        read_config_file(path)?.with_context(|| format!("{} is not a file", path.display()))?;
    Ok(SourceFile {
        path: display_path(path),
        text,
    })
}

/// `*.yaml` / `*.yml` files of a directory, sorted, hidden files skipped, read exactly as the
/// data plane reads its flow directory: the files read, and those that could not be (path,
/// why).
pub fn read_flow_dir(dir: &Path) -> Result<(Vec<SourceFile>, Vec<Unreadable>)> {
    let found = snapshot(dir, is_yaml)?;
    let files = found
        .files
        .into_iter()
        .map(|f| SourceFile {
            path: display_path(&f.path),
            text: f.content,
        })
        .collect();
    let unreadable = found
        .unreadable
        .into_iter()
        .map(|u| (display_path(&dir.join(&u.name)), u.error.to_string()))
        .collect();
    Ok((files, unreadable))
}

/// The readable `*.yaml` / `*.yml` files of a directory ([`read_flow_dir`]).
pub fn read_yaml_dir(dir: &Path) -> Result<Vec<SourceFile>> {
    Ok(read_flow_dir(dir)?.0)
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
