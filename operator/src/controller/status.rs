//! The `.status` a FlowDefinition / LinkTarget gets, computed from what validation and the
//! rendered ConfigMaps say (pure, so every transition is unit-tested).
//!
//! * `phase`: `Ready` when the spec validates, else `Error`;
//! * condition `Valid`: the validation outcome (`Valid` / `Invalid`, every error in the message);
//! * condition `Rendered`: whether the current generation is in every ConfigMap whose selection
//!   names the resource (`Rendered`), not yet (`Pending`), no pod selects it (`NotSelected`), or
//!   it is left out because it is invalid (`Invalid`);
//! * `observedGeneration`: the generation all of the above describe.
//!
//! `lastTransitionTime` only moves when a condition's status flips, as the API conventions ask.

use fiso_config::crd::{Phase, ResourceStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use crate::configmap::{configmap_selection, configmap_sources, SourceKind};

pub const VALID: &str = "Valid";
pub const RENDERED: &str = "Rendered";

/// Event notes are limited to 1 kB by the API.
const MAX_NOTE: usize = 1000;

/// The validation outcome, as lines `spec.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validity {
    Valid { warnings: Vec<String> },
    Invalid { errors: Vec<String> },
}

impl Validity {
    pub fn from_lines(errors: Vec<String>, warnings: Vec<String>) -> Self {
        if errors.is_empty() {
            Validity::Valid { warnings }
        } else {
            Validity::Invalid { errors }
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Validity::Valid { .. })
    }
}

/// Where the resource's current generation stands in the rendered ConfigMaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendering {
    /// Left out of (these) ConfigMaps because the spec is invalid.
    Invalid { configmaps: Vec<String> },
    /// No rendered ConfigMap's selection names the resource.
    NotSelected,
    /// The current generation is in all of these.
    Rendered { configmaps: Vec<String> },
    /// These select the resource but do not hold its current generation yet.
    Pending { configmaps: Vec<String> },
}

/// Reads the state off the rendered ConfigMaps of the resource's namespace.
pub fn rendering(
    kind: SourceKind,
    name: &str,
    generation: i64,
    valid: bool,
    configmaps: &[ConfigMap],
) -> Rendering {
    let mut selecting = Vec::new();
    let mut pending = Vec::new();
    for cm in configmaps {
        let Some(selection) = configmap_selection(cm) else {
            continue;
        };
        if !kind.selected_by(&selection, name) {
            continue;
        }
        let cm_name = cm.name_any();
        let current = configmap_sources(cm)
            .iter()
            .any(|s| s.kind == kind && s.name == name && s.generation == generation);
        if !current {
            pending.push(cm_name.clone());
        }
        selecting.push(cm_name);
    }
    selecting.sort();
    pending.sort();
    if !valid {
        Rendering::Invalid {
            configmaps: selecting,
        }
    } else if selecting.is_empty() {
        Rendering::NotSelected
    } else if pending.is_empty() {
        Rendering::Rendered {
            configmaps: selecting,
        }
    } else {
        Rendering::Pending {
            configmaps: pending,
        }
    }
}

/// The status to apply. `previous` supplies the transition times of unchanged conditions.
pub fn build(
    kind: SourceKind,
    previous: Option<&ResourceStatus>,
    generation: Option<i64>,
    validity: &Validity,
    rendering: &Rendering,
    now: Timestamp,
) -> ResourceStatus {
    let (valid_status, valid_reason, valid_message) = match validity {
        Validity::Valid { warnings } if warnings.is_empty() => {
            (true, "Valid", "spec is valid".to_owned())
        }
        Validity::Valid { warnings } => (
            true,
            "Valid",
            format!("spec is valid, with warnings: {}", warnings.join("; ")),
        ),
        Validity::Invalid { errors } => (false, "Invalid", errors.join("; ")),
    };
    let (rendered_status, rendered_reason, rendered_message) = match rendering {
        Rendering::Invalid { configmaps } if configmaps.is_empty() => (
            false,
            "Invalid",
            "not rendered: the spec is invalid".to_owned(),
        ),
        Rendering::Invalid { configmaps } => (
            false,
            "Invalid",
            format!(
                "left out of {} while the spec is invalid",
                configmap_list(configmaps)
            ),
        ),
        Rendering::NotSelected => (
            false,
            "NotSelected",
            format!(
                "no pod selects this {} (pod annotation `{}`)",
                kind.kind(),
                match kind {
                    SourceKind::Flow => crate::selection::FLOWS_ANNOTATION,
                    SourceKind::Link => crate::selection::LINKS_ANNOTATION,
                    SourceKind::App => crate::selection::APPS_ANNOTATION,
                }
            ),
        ),
        Rendering::Rendered { configmaps } => (
            true,
            "Rendered",
            format!(
                "generation {} is in {}",
                generation.unwrap_or_default(),
                configmap_list(configmaps)
            ),
        ),
        Rendering::Pending { configmaps } => (
            false,
            "Pending",
            format!(
                "waiting for {} to be re-rendered",
                configmap_list(configmaps)
            ),
        ),
    };
    let old = |type_: &str| previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == type_));
    let conditions = vec![
        condition(
            old(VALID),
            VALID,
            valid_status,
            valid_reason,
            &valid_message,
            generation,
            now,
        ),
        condition(
            old(RENDERED),
            RENDERED,
            rendered_status,
            rendered_reason,
            &rendered_message,
            generation,
            now,
        ),
    ];
    let (phase, message) = if validity.is_valid() {
        (Phase::Ready, format!("{valid_message}; {rendered_message}"))
    } else {
        (Phase::Error, valid_message)
    };
    ResourceStatus {
        phase: Some(phase),
        message: Some(message),
        conditions,
        observed_generation: generation,
    }
}

fn configmap_list(names: &[String]) -> String {
    match names {
        [one] => format!("ConfigMap {one}"),
        many => format!("ConfigMaps {}", many.join(", ")),
    }
}

fn condition(
    previous: Option<&Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        last_transition_time,
        message: message.to_owned(),
        observed_generation: generation,
        reason: reason.to_owned(),
        status: status.to_owned(),
        type_: type_.to_owned(),
    }
}

/// A Kubernetes Event to publish about the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: String,
    pub action: &'static str,
    pub note: String,
}

/// Events for what changed between two statuses: validity (either way), reaching every
/// ConfigMap, and no longer being selected by any pod after having been rendered. Transient states (`Pending`) and
/// re-reconciles that change nothing publish nothing.
pub fn notices(previous: Option<&ResourceStatus>, next: &ResourceStatus) -> Vec<Notice> {
    let find = |s: Option<&ResourceStatus>, t: &str| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == t).cloned())
    };
    let changed = |t: &str| {
        let (old, new) = (find(previous, t), find(Some(next), t));
        match (old, new) {
            (_, None) => None,
            (Some(o), Some(n))
                if o.status == n.status && o.reason == n.reason && o.message == n.message =>
            {
                None
            }
            (_, Some(n)) => Some(n),
        }
    };
    let mut out = Vec::new();
    if let Some(c) = changed(VALID) {
        let type_ = if c.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        };
        out.push(notice(type_, &c.reason, "Validate", &c.message));
    }
    if let Some(c) = changed(RENDERED) {
        // `NotSelected` is news only when the resource was running somewhere before.
        let was_rendered = find(previous, RENDERED).is_some_and(|p| p.reason == "Rendered");
        if c.reason == "Rendered" || (c.reason == "NotSelected" && was_rendered) {
            out.push(notice(EventType::Normal, &c.reason, "Render", &c.message));
        }
    }
    out
}

fn notice(type_: EventType, reason: &str, action: &'static str, note: &str) -> Notice {
    let mut note = note.to_owned();
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    Notice {
        type_,
        reason: reason.to_owned(),
        action,
        note,
    }
}

#[cfg(test)]
mod tests;
