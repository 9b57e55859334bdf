//! Validation of the custom resources, with the very checks `fiso validate` runs on local files
//! (`fiso_config::validate` with [`Origin::Resource`]). Field paths are those of the resource
//! (`spec.sink.config.url`), so `kubectl explain` and the status message agree.

use fiso_config::apps::AppConfig;
use fiso_config::crd::{FlowDefinition, LinkTarget, WasmApp};
use fiso_config::diagnostic::{join_path, Diagnostic, MAX_PER_FILE};
use fiso_config::flow::FlowConfig;
use fiso_config::link::TargetConfig;
use fiso_config::manifests::import_app;
use fiso_config::validate::{validate_app, validate_flow, validate_target, Origin};
use kube::ResourceExt;

use crate::selection::module_file;

/// The flow a FlowDefinition stands for, named as the data plane will name it: `spec.name`
/// when set, else `metadata.name` (exactly what `fiso_config::manifests::import` does).
pub fn flow_config(fd: &FlowDefinition) -> FlowConfig {
    FlowConfig {
        name: fd.spec.name.clone().or_else(|| Some(fd.name_any())),
        ..fd.spec.clone()
    }
}

/// The link target a LinkTarget stands for (see [`flow_config`]).
pub fn target_config(lt: &LinkTarget) -> TargetConfig {
    TargetConfig {
        name: lt.spec.name.clone().or_else(|| Some(lt.name_any())),
        ..lt.spec.clone()
    }
}

/// The app a WasmApp stands for in the sidecar (see [`flow_config`]): a `moduleConfigMap`
/// becomes the path where the webhook mounts it.
pub fn app_config(app: &WasmApp) -> AppConfig {
    let mut config = import_app(app);
    if let Some(cm) = config.module_config_map.take() {
        if config.module.is_empty() {
            config.module = module_file(&config.name, &cm.key);
        }
    }
    config
}

/// Every finding (errors and warnings) for a WasmApp.
pub fn check_app(app: &WasmApp) -> Vec<Diagnostic> {
    let named_by_metadata = app.spec.name.is_empty();
    let mut out: Vec<Diagnostic> = validate_app(&app_config(app))
        .into_iter()
        .map(|d| to_resource_path(d, named_by_metadata))
        .collect();
    if app.spec.module_config_map.is_some() && !app.spec.module.is_empty() {
        out.push(
            Diagnostic::error(
                "spec.module",
                "give `module` (a file the pod provides) or `moduleConfigMap`, not both",
            )
            .hint(
                "a module shipped in a ConfigMap: moduleConfigMap: {name: my-app, key: app.wasm}",
            ),
        );
    }
    if app.spec.module.is_empty() && app.spec.module_config_map.is_none() {
        out.retain(|d| d.path != "spec.module");
        out.push(
            Diagnostic::error("spec", "the WasmApp has no module")
                .hint("moduleConfigMap: {name: my-app, key: app.wasm} (binaryData), or module: <path in the pod>"),
        );
    }
    out
}

/// Every finding (errors and warnings) for a FlowDefinition.
pub fn check_flow(fd: &FlowDefinition) -> Vec<Diagnostic> {
    let named_by_metadata = fd.spec.name.is_none();
    validate_flow(&flow_config(fd), Origin::Resource)
        .into_iter()
        .map(|d| to_resource_path(d, named_by_metadata))
        .collect()
}

/// Every finding (errors and warnings) for a LinkTarget. A LinkTarget has no link-level
/// Kafka clusters: it carries its cluster inline.
pub fn check_target(lt: &LinkTarget) -> Vec<Diagnostic> {
    let named_by_metadata = lt.spec.name.is_none();
    validate_target(&target_config(lt), Origin::Resource, None)
        .into_iter()
        .map(|d| to_resource_path(d, named_by_metadata))
        .collect()
}

/// `sink.config.url` → `spec.sink.config.url`. A name that came from `metadata.name` is
/// reported there, since that is what the user has to change.
fn to_resource_path(mut d: Diagnostic, named_by_metadata: bool) -> Diagnostic {
    d.path = if named_by_metadata && d.path == "name" {
        "metadata.name".to_owned()
    } else {
        join_path("spec", &d.path)
    };
    d
}

/// Error findings as one line each: `spec.path: message (hint: ...)`; at most
/// [`MAX_PER_FILE`] of them (the bound `fiso validate` keeps per file), and then a line
/// saying more were left out.
pub fn error_lines(diags: &[Diagnostic]) -> Vec<String> {
    bounded(diags.iter().filter(|d| d.is_error()))
}

/// Warning findings, formatted and bounded like [`error_lines`].
pub fn warning_lines(diags: &[Diagnostic]) -> Vec<String> {
    bounded(diags.iter().filter(|d| !d.is_error()))
}

fn bounded<'a>(diags: impl Iterator<Item = &'a Diagnostic>) -> Vec<String> {
    let mut lines: Vec<String> = diags.take(MAX_PER_FILE + 1).map(line).collect();
    if lines.len() > MAX_PER_FILE {
        lines.truncate(MAX_PER_FILE);
        lines.push(format!(
            "more findings are not listed (at most {MAX_PER_FILE} per resource): fix these and apply again"
        ));
    }
    lines
}

fn line(d: &Diagnostic) -> String {
    let mut s = if d.path.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.path, d.message)
    };
    if let Some(h) = &d.hint {
        s.push_str(&format!(" (hint: {h})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::flow;

    #[test]
    fn valid_flow_has_no_errors() {
        let fd = flow("orders", "http://svc:8080/x");
        assert!(error_lines(&check_flow(&fd)).is_empty());
    }

    #[test]
    fn paths_are_resource_paths() {
        let fd = flow("orders", "not a url");
        let errors = error_lines(&check_flow(&fd));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("spec.sink.config.url: "),
            "{errors:?}"
        );

        // metadata.name may hold dots; a flow name may not.
        let fd = flow("orders.v2", "http://svc:8080/x");
        let errors = error_lines(&check_flow(&fd));
        assert!(errors[0].starts_with("metadata.name: "), "{errors:?}");
    }

    fn with_fields(fd: &mut FlowDefinition, fields: impl IntoIterator<Item = (String, String)>) {
        fd.spec.transform = Some(fiso_config::flow::TransformConfig {
            fields: fields.into_iter().collect(),
        });
    }

    #[test]
    fn the_status_lists_every_finding() {
        use crate::controller::status::{build, Rendering, Validity};
        let mut fd = flow("orders", "ftp://svc/x");
        with_fields(
            &mut fd,
            [
                ("total".to_owned(), "data.price *".to_owned()),
                ("who".to_owned(), "$.customer".to_owned()),
            ],
        );
        fd.spec.cloudevents = Some(fiso_config::flow::CloudEventsConfig {
            type_: Some("''".to_owned()),
            ..Default::default()
        });
        let findings = check_flow(&fd);
        let validity = Validity::from_lines(error_lines(&findings), warning_lines(&findings));
        let status = build(
            crate::configmap::SourceKind::Flow,
            None,
            Some(1),
            &validity,
            &Rendering::Invalid { configmaps: vec![] },
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        );
        let message = status.message.unwrap_or_default();
        for path in [
            "spec.sink.config.url: ",
            "spec.transform.fields.total: ",
            "spec.transform.fields.who: ",
            "spec.cloudevents.type: ",
        ] {
            assert!(message.contains(path), "{path} in {message}");
        }
        let errors = error_lines(&findings);
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors.iter().all(|e| message.contains(e.as_str())),
            "{message}"
        );
    }

    #[test]
    fn the_status_lists_a_bounded_number_of_findings() {
        let mut fd = flow("orders", "http://svc:8080/x");
        let at_bound = (0..MAX_PER_FILE).map(|i| (format!("f{i}"), "data.x *".to_owned()));
        with_fields(&mut fd, at_bound);
        let errors = error_lines(&check_flow(&fd));
        assert_eq!(errors.len(), MAX_PER_FILE);
        assert!(
            errors.iter().all(|e| e.contains("invalid CEL")),
            "{errors:?}"
        );

        let beyond = (0..MAX_PER_FILE + 50).map(|i| (format!("f{i}"), "data.x *".to_owned()));
        with_fields(&mut fd, beyond);
        let errors = error_lines(&check_flow(&fd));
        assert_eq!(errors.len(), MAX_PER_FILE + 1);
        assert!(errors[MAX_PER_FILE]
            .starts_with("more findings are not listed (at most 100 per resource)"));
    }
}
