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

use crate::render::{configmap_selection, configmap_sources, SourceKind};

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
mod tests {
    use super::*;
    use crate::render::{configmap, render};
    use crate::selection::Selection;
    use crate::testing::flow;
    use pretty_assertions::assert_eq;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn valid() -> Validity {
        Validity::Valid { warnings: vec![] }
    }

    fn rendered_cm(flows: &[&str], gen: i64) -> ConfigMap {
        let sel = Selection {
            namespace: "apps".into(),
            flows: flows.iter().map(|s| (*s).to_owned()).collect(),
            links: Default::default(),
        };
        let fds: Vec<_> = flows
            .iter()
            .map(|f| {
                let mut fd = flow(f, "http://svc:8080/x");
                fd.metadata.generation = Some(gen);
                fd
            })
            .collect();
        configmap(&sel, &render(&sel, &fds, []).unwrap())
    }

    #[test]
    fn rendering_is_read_off_the_configmaps() {
        let cms = vec![rendered_cm(&["a", "b"], 2), rendered_cm(&["a"], 1)];
        let names: Vec<String> = cms.iter().map(|c| c.name_any()).collect();
        assert_eq!(
            rendering(SourceKind::Flow, "b", 2, true, &cms),
            Rendering::Rendered {
                configmaps: vec![names[0].clone()]
            }
        );
        assert_eq!(
            rendering(SourceKind::Flow, "a", 2, true, &cms),
            Rendering::Pending {
                configmaps: vec![names[1].clone()]
            }
        );
        assert_eq!(
            rendering(SourceKind::Flow, "c", 1, true, &cms),
            Rendering::NotSelected
        );
        assert_eq!(
            rendering(SourceKind::Link, "a", 1, true, &cms),
            Rendering::NotSelected,
            "a flow name does not select a link target"
        );
        assert!(matches!(
            rendering(SourceKind::Flow, "a", 2, false, &cms),
            Rendering::Invalid { configmaps } if configmaps.len() == 2
        ));
    }

    #[test]
    fn ready_status_with_conditions() {
        let r = Rendering::Rendered {
            configmaps: vec!["fiso-abc".into()],
        };
        let s = build(SourceKind::Flow, None, Some(3), &valid(), &r, t(0));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            s.message.as_deref(),
            Some("spec is valid; generation 3 is in ConfigMap fiso-abc")
        );
        assert_eq!(
            s.conditions,
            vec![
                Condition {
                    last_transition_time: Time(t(0)),
                    message: "spec is valid".into(),
                    observed_generation: Some(3),
                    reason: "Valid".into(),
                    status: "True".into(),
                    type_: "Valid".into(),
                },
                Condition {
                    last_transition_time: Time(t(0)),
                    message: "generation 3 is in ConfigMap fiso-abc".into(),
                    observed_generation: Some(3),
                    reason: "Rendered".into(),
                    status: "True".into(),
                    type_: "Rendered".into(),
                },
            ]
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["phase"], "Ready");
        assert_eq!(json["observedGeneration"], 3);
        assert_eq!(
            json["conditions"][0]["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn error_status_lists_every_error() {
        let v = Validity::Invalid {
            errors: vec![
                "spec.sink.config.url: bad".into(),
                "spec.name: worse".into(),
            ],
        };
        let s = build(
            SourceKind::Link,
            None,
            Some(1),
            &v,
            &Rendering::Invalid { configmaps: vec![] },
            t(0),
        );
        assert_eq!(s.phase, Some(Phase::Error));
        assert_eq!(
            s.message.as_deref(),
            Some("spec.sink.config.url: bad; spec.name: worse")
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "Invalid");
        assert_eq!(s.conditions[1].reason, "Invalid");
        assert_eq!(s.conditions[1].message, "not rendered: the spec is invalid");
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let rendered = Rendering::Rendered {
            configmaps: vec!["fiso-abc".into()],
        };
        let first = build(SourceKind::Flow, None, Some(1), &valid(), &rendered, t(0));
        // New generation, same outcome: times kept, generation and message updated.
        let second = build(
            SourceKind::Flow,
            Some(&first),
            Some(2),
            &valid(),
            &rendered,
            t(10),
        );
        assert_eq!(second.conditions[0].last_transition_time, Time(t(0)));
        assert_eq!(second.conditions[1].last_transition_time, Time(t(0)));
        assert_eq!(second.conditions[1].observed_generation, Some(2));
        // Rendered flips to Pending: only that condition moves.
        let pending = Rendering::Pending {
            configmaps: vec!["fiso-abc".into()],
        };
        let third = build(
            SourceKind::Flow,
            Some(&second),
            Some(3),
            &valid(),
            &pending,
            t(20),
        );
        assert_eq!(third.conditions[0].last_transition_time, Time(t(0)));
        assert_eq!(third.conditions[1].last_transition_time, Time(t(20)));
        assert_eq!(third.conditions[1].reason, "Pending");
        // A reconcile that changes nothing yields an identical status (no write, no event).
        let again = build(
            SourceKind::Flow,
            Some(&third),
            Some(3),
            &valid(),
            &pending,
            t(30),
        );
        assert_eq!(again, third);
        assert!(notices(Some(&third), &again).is_empty());
    }

    #[test]
    fn events_for_transitions() {
        let rendered = Rendering::Rendered {
            configmaps: vec!["fiso-abc".into()],
        };
        let invalid = Validity::Invalid {
            errors: vec!["spec.sink.config.url: bad".into()],
        };
        let ok = build(SourceKind::Flow, None, Some(1), &valid(), &rendered, t(0));
        let reasons = |n: Vec<Notice>| {
            n.into_iter()
                .map(|n| (n.type_, n.reason))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            reasons(notices(None, &ok)),
            vec![
                (EventType::Normal, "Valid".to_owned()),
                (EventType::Normal, "Rendered".to_owned())
            ]
        );
        let bad = build(
            SourceKind::Flow,
            Some(&ok),
            Some(2),
            &invalid,
            &Rendering::Invalid {
                configmaps: vec!["fiso-abc".into()],
            },
            t(5),
        );
        assert_eq!(
            reasons(notices(Some(&ok), &bad)),
            vec![(EventType::Warning, "Invalid".to_owned())]
        );
        let fresh = build(
            SourceKind::Flow,
            None,
            Some(1),
            &valid(),
            &Rendering::NotSelected,
            t(0),
        );
        assert_eq!(
            reasons(notices(None, &fresh)),
            vec![(EventType::Normal, "Valid".to_owned())],
            "a new resource no pod selects yet is not news"
        );
        let lonely = build(
            SourceKind::Flow,
            Some(&ok),
            Some(1),
            &valid(),
            &Rendering::NotSelected,
            t(5),
        );
        assert_eq!(
            reasons(notices(Some(&ok), &lonely)),
            vec![(EventType::Normal, "NotSelected".to_owned())]
        );
    }

    #[test]
    fn long_notes_are_truncated_on_a_char_boundary() {
        let n = notice(EventType::Warning, "Invalid", "Validate", &"é".repeat(800));
        assert!(n.note.len() <= MAX_NOTE);
        assert!(n.note.ends_with("..."));
    }
}
