//! Finding and reading a project's config files: `<dir>/flows/*.yaml`, `<dir>/link/config.yaml`
//! and the Wasmer/WASIX apps files `<dir>/apps/*.yaml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fiso_config::flow::InterceptorSpec;
use fiso_config::link::Protocol;
use fiso_config::location::Locations;
use fiso_config::validate::{check_apps, check_project, Project, SourceFile};
use fiso_config::{Diagnostic, Diagnostics};
use fiso_runtime::watch::{is_yaml, read_config_file, snapshot};

/// The default project directory created by `fiso init`.
pub const DEFAULT_DIR: &str = "fiso";

/// Config files found for a validation or export run.
#[derive(Debug, Default)]
pub struct ProjectFiles {
    pub flows: Vec<SourceFile>,
    pub link: Option<SourceFile>,
    /// Apps files (`apps/*.yaml`, or one file with top-level `apps:`).
    pub apps: Vec<SourceFile>,
    /// Flow files that could not be read: errors of their own, as the data plane reports them.
    pub unreadable: Vec<Unreadable>,
}

/// A file that could not be read: its path, and why.
pub type Unreadable = (String, String);

impl ProjectFiles {
    /// Reads what `target` points at:
    /// * a project dir (has `flows/`, `link/` or `apps/`): its flows, `link/config.yaml` and
    ///   `apps/*.yaml`;
    /// * any other dir: its `*.yaml` / `*.yml` files as flows;
    /// * a file: one flow, the link config when it is `link/config.yaml`, an apps file when it
    ///   is in `apps/` or has a top-level `apps:`.
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
            if is_apps_file(target, &file.text) {
                return Ok(ProjectFiles {
                    apps: vec![file],
                    ..ProjectFiles::default()
                });
            }
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
        let apps_dir = target.join("apps");
        if is_project_dir(target) {
            let (flows, unreadable) = if flows_dir.is_dir() {
                read_flow_dir(&flows_dir)?
            } else {
                Default::default()
            };
            let link = link_file
                .is_file()
                .then(|| read_source(&link_file))
                .transpose()?;
            let apps = if apps_dir.is_dir() {
                read_yaml_dir(&apps_dir)?
            } else {
                Vec::new()
            };
            return Ok(ProjectFiles {
                flows,
                link,
                apps,
                unreadable,
            });
        }
        let (flows, unreadable) = read_flow_dir(target)?;
        Ok(ProjectFiles {
            flows,
            link: None,
            apps: Vec::new(),
            unreadable,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
            && self.link.is_none()
            && self.apps.is_empty()
            && self.unreadable.is_empty()
    }

    /// Gives a finding about one of these files the line:column of its path.
    pub fn locate(&self, d: &mut Diagnostic) {
        let text = self
            .flows
            .iter()
            .chain(&self.link)
            .chain(&self.apps)
            .find(|f| d.file.as_deref() == Some(f.path.as_str()))
            .map(|f| f.text.as_str());
        if let Some((line, column)) = text.and_then(|t| Locations::index(t).lookup(&d.path)) {
            d.line = Some(line);
            d.column = Some(column);
        }
    }

    pub fn check(&self) -> (Project, Diagnostics) {
        let (mut project, mut diags) = check_project(&self.flows, self.link.as_ref());
        let (apps, apps_diags) = check_apps(&self.apps);
        diags.extend(apps_diags);
        let names: BTreeSet<&str> = apps
            .iter()
            .flat_map(|a| a.config.apps.iter().map(|app| app.name.as_str()))
            .collect();
        diags.extend(app_references(&project, &names, !self.apps.is_empty()));
        project.apps = apps;
        if !fiso_apps::AVAILABLE {
            for f in &self.apps {
                let mut d = Diagnostic::error(
                    "apps",
                    "this build has no wasmer: apps need the Wasmer build of fiso",
                )
                .hint("run the fiso-wasmer image, or build with `cargo build -p fiso --features wasmer`");
                d.file = Some(f.path.clone());
                diags.push(d);
            }
        }
        for (path, problem) in &self.unreadable {
            let mut d = Diagnostic::error("", problem.clone());
            d.file = Some(path.clone());
            diags.push(d);
        }
        diags.sort();
        diags.bound_per_file();
        (project, diags)
    }
}

/// Flows' `wasmer-app` interceptors and link targets' `protocol: app` naming an app: an error
/// when the project's apps files do not define it, a warning when the project has none (the app
/// may come from elsewhere: `--apps-config`, a WasmApp in the pod).
fn app_references(project: &Project, apps: &BTreeSet<&str>, has_apps: bool) -> Vec<Diagnostic> {
    let mut refs: Vec<(String, String, String)> = Vec::new();
    for flow in &project.flows {
        for (i, spec) in flow.config.interceptors.iter().enumerate() {
            if let InterceptorSpec::WasmerApp(a) = spec {
                refs.push((
                    flow.file.clone(),
                    format!("interceptors[{i}].config.app"),
                    a.app.clone(),
                ));
            }
        }
    }
    if let Some(link) = &project.link {
        for (i, t) in link.config.targets.iter().enumerate() {
            if let Some(app) = t.app.as_ref().filter(|_| t.protocol == Protocol::App) {
                refs.push((link.file.clone(), format!("targets[{i}].app"), app.clone()));
            }
        }
    }
    refs.into_iter()
        .filter(|(_, _, app)| !apps.contains(app.as_str()))
        .map(|(file, path, app)| {
            let mut d = if has_apps {
                Diagnostic::error(path, format!("no app named `{app}` in the apps files"))
                    .hint("define it under `apps:` in apps/*.yaml")
            } else {
                Diagnostic::warning(
                    path,
                    format!("app `{app}` is not defined in this project: it must run in the same process"),
                )
                .hint("add apps/*.yaml, or run with `fiso run --apps-config`")
            };
            d.file = Some(file);
            d
        })
        .collect()
}

/// A file in an `apps/` directory, or one whose top level declares `apps:`.
fn is_apps_file(path: &Path, text: &str) -> bool {
    path.parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "apps")
        || text.lines().any(|l| l.starts_with("apps:"))
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

/// A project directory: it has `flows/`, `link/config.yaml` or `apps/`.
pub fn is_project_dir(dir: &Path) -> bool {
    dir.join("flows").is_dir()
        || dir.join("link").join("config.yaml").is_file()
        || dir.join("apps").is_dir()
}

/// The project every command works on when none is named, found as `git` finds its
/// repository: `./fiso` when it exists; else the current directory or the nearest directory
/// above it that is a project (so commands run inside `fiso/` or `fiso/flows/` find it). The
/// path is relative to the current directory (`fiso`, `.`, `..`), so messages name files as
/// the user reaches them. `None` outside any project.
pub fn find() -> Option<PathBuf> {
    find_from(&std::env::current_dir().ok()?)
}

fn find_from(cwd: &Path) -> Option<PathBuf> {
    if cwd.join(DEFAULT_DIR).is_dir() {
        return Some(PathBuf::from(DEFAULT_DIR));
    }
    if is_project_dir(cwd) {
        return Some(PathBuf::from("."));
    }
    // Above the current directory only `flows/` or `link/config.yaml` mark a project: an
    // `apps/` directory somewhere up the tree (`/apps` in many images) is too common a name.
    cwd.ancestors()
        .skip(1)
        .position(|dir| {
            dir.join("flows").is_dir() || dir.join("link").join("config.yaml").is_file()
        })
        .map(|up| (0..=up).map(|_| "..").collect())
}

/// `DIR` argument default: the project [`find`] finds, else the current directory.
pub fn default_target() -> PathBuf {
    find().unwrap_or_else(|| PathBuf::from("."))
}

/// A relative path given on the command line that does not exist here, read from the
/// directory the project's paths are written from (the one holding `fiso/`): inside the
/// project, `fiso transform test --flow fiso/flows/x.yaml`, as the scaffold's comments and
/// `fiso dev` print it, names the same file as from above it.
pub fn resolve_arg(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    let Some(project) = find().filter(|p| p != Path::new(DEFAULT_DIR)) else {
        return path.to_path_buf();
    };
    let name = project
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(ToOwned::to_owned));
    match name.and_then(|n| path.strip_prefix(&n).ok().map(Path::to_path_buf)) {
        Some(inside) if project.join(&inside).exists() => display_join(&project, &inside),
        _ => path.to_path_buf(),
    }
}

/// `dir.join(rest)` without a leading `./`.
fn display_join(dir: &Path, rest: &Path) -> PathBuf {
    if dir == Path::new(".") {
        rest.to_path_buf()
    } else {
        dir.join(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_project_from_inside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let project = root.join("fiso");
        std::fs::create_dir_all(project.join("flows/nested")).unwrap();
        std::fs::create_dir_all(project.join("link")).unwrap();
        std::fs::write(project.join("link/config.yaml"), "targets: []\n").unwrap();
        assert_eq!(find_from(root), Some(PathBuf::from("fiso")));
        assert_eq!(find_from(&project), Some(PathBuf::from(".")));
        assert_eq!(find_from(&project.join("flows")), Some(PathBuf::from("..")));
        assert_eq!(find_from(&project.join("link")), Some(PathBuf::from("..")));
        assert_eq!(
            find_from(&project.join("flows/nested")),
            Some(PathBuf::from("../.."))
        );
        let elsewhere = root.join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("apps")).unwrap();
        assert_eq!(
            find_from(&elsewhere),
            Some(PathBuf::from(".")),
            "apps/ marks the current dir"
        );
        assert_eq!(
            find_from(&elsewhere.join("apps")),
            None,
            "but not a directory above"
        );
    }
}
