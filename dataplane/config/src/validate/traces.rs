//! Checks of a `tracing:` section (the link config, the all-in-one file). The runtime runs the
//! same checks on the section merged with the `OTEL_*` variables.

use crate::diagnostic::Diagnostic;
use crate::traces::{endpoint_problem, ratio_problem, TracingConfig};
use crate::validate::rules;

/// Validates a `tracing:` section; paths are relative to it (`endpoint`, `samplerArg`).
pub fn validate_tracing(t: &TracingConfig) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Some(endpoint) = &t.endpoint {
        if let Some(problem) = endpoint_problem(endpoint) {
            out.push(
                Diagnostic::error("endpoint", problem)
                    .hint("e.g. http://otel-collector:4318 (http/protobuf) or http://otel-collector:4317 (grpc)"),
            );
        }
    }
    if let Some(ratio) = t.sampler_arg {
        if let Some(problem) = ratio_problem(ratio) {
            out.push(
                Diagnostic::error("samplerArg", problem)
                    .hint("0.25 samples a quarter of new traces"),
            );
        } else if !t.sampler.is_some_and(|s| s.takes_ratio()) {
            out.push(
                Diagnostic::warning(
                    "samplerArg",
                    format!(
                        "`samplerArg` is ignored by the sampler `{}`",
                        t.sampler.unwrap_or_default().as_str()
                    ),
                )
                .hint(
                    "set `sampler: parentbased_traceidratio` (or `traceidratio`) to sample a ratio",
                ),
            );
        }
    }
    if t.service_name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        out.push(
            Diagnostic::error("serviceName", "the service name is empty")
                .hint("remove it for the default `fiso`"),
        );
    }
    for key in t.resource_attributes.keys() {
        if key.trim().is_empty() || key.contains([',', '=']) {
            out.push(Diagnostic::error(
                format!("resourceAttributes.{key}"),
                format!("`{key}` is not a resource attribute name"),
            ));
        }
    }
    out.extend(rules::nonzero_duration("timeout", t.timeout));
    if t.enabled == Some(true) && t.endpoint.is_none() {
        out.push(
            Diagnostic::warning(
                "endpoint",
                "tracing is enabled but has no endpoint: nothing is exported unless \
                 OTEL_EXPORTER_OTLP_ENDPOINT is set",
            )
            .hint("e.g. endpoint: http://otel-collector:4318"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::SamplerName;

    fn paths(t: &TracingConfig) -> Vec<(String, bool)> {
        validate_tracing(t)
            .into_iter()
            .map(|d| (d.path.clone(), d.is_error()))
            .collect()
    }

    #[test]
    fn a_good_section_has_no_findings() {
        let t = TracingConfig {
            endpoint: Some("https://collector.example:4318".into()),
            sampler: Some(SamplerName::ParentBasedTraceIdRatio),
            sampler_arg: Some(0.5),
            service_name: Some("orders".into()),
            ..Default::default()
        };
        assert!(validate_tracing(&t).is_empty());
    }

    #[test]
    fn bad_values_name_their_field() {
        let t = TracingConfig {
            endpoint: Some("collector:4318".into()),
            sampler: Some(SamplerName::TraceIdRatio),
            sampler_arg: Some(1.5),
            service_name: Some(" ".into()),
            timeout: Some(std::time::Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(
            paths(&t),
            [
                ("endpoint".to_owned(), true),
                ("samplerArg".to_owned(), true),
                ("serviceName".to_owned(), true),
                ("timeout".to_owned(), true),
            ]
        );
        let t = TracingConfig {
            endpoint: Some("ftp://c:4318".into()),
            ..Default::default()
        };
        assert!(validate_tracing(&t)[0].message.contains("ftp"));
    }

    #[test]
    fn a_ratio_without_a_ratio_sampler_is_a_warning() {
        let t = TracingConfig {
            endpoint: Some("http://c:4318".into()),
            sampler_arg: Some(0.5),
            ..Default::default()
        };
        assert_eq!(paths(&t), [("samplerArg".to_owned(), false)]);
    }
}
