//! Status and event decisions from validity and the rendered ConfigMaps.

use super::*;
use crate::configmap::configmap;
use crate::selection::Selection;
use crate::testing::{flow, render};
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
        apps: Default::default(),
    };
    let fds: Vec<_> = flows
        .iter()
        .map(|f| {
            let mut fd = flow(f, "http://svc:8080/x");
            fd.metadata.generation = Some(gen);
            fd
        })
        .collect();
    configmap(&sel, &render(&sel, &fds, [], []).unwrap())
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
