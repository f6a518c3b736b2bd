//! Property tests of what the runtime reads from outside: the manifest a component returns,
//! context names and the `[limits]` table.

use proptest::prelude::*;

use super::config::{LimitsFile, valid_name};
use super::loader::{LoadError, check_subscriptions, manifest_routes};
use crate::bindings::exports::ctxhost::platform::context::Route;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A method as a guest may write it: a known one in any case, or anything.
fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        (prop::sample::select(&METHODS[..]), any::<u64>()).prop_map(|(m, case)| {
            m.chars()
                .enumerate()
                .map(|(i, c)| {
                    if case >> i & 1 == 1 {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect()
        }),
        "\\PC{0,8}",
    ]
}

proptest! {
    /// Any declared routes are accepted or refused without panic; accepted ones have a
    /// known upper-case method and a path from `/`, in the declared order; a refusal names
    /// the context and the route as declared.
    #[test]
    fn manifest_routes_are_normalised_or_refused_by_name(
        declared in prop::collection::vec((method(), "/?\\PC{0,12}"), 0..6),
    ) {
        let routes: Vec<Route> = declared
            .iter()
            .map(|(method, path)| Route { method: method.clone(), path: path.clone() })
            .collect();
        match manifest_routes("ctx", routes) {
            Ok(specs) => {
                prop_assert_eq!(specs.len(), declared.len());
                for (spec, (method, path)) in specs.iter().zip(&declared) {
                    prop_assert!(METHODS.contains(&spec.method.as_str()));
                    prop_assert!(spec.method.eq_ignore_ascii_case(method));
                    prop_assert_eq!(&spec.path, path);
                    prop_assert!(path.starts_with('/'));
                }
            }
            Err(e) => {
                let LoadError::Manifest { context, method, path, .. } = &e else {
                    return Err(TestCaseError::fail(format!("not a manifest error: {e}")));
                };
                prop_assert_eq!(context.as_str(), "ctx");
                let bad = declared.iter().find(|(m, p)| {
                    !METHODS.contains(&m.to_ascii_uppercase().as_str()) || !p.starts_with('/')
                });
                prop_assert_eq!(bad, Some(&(method.clone(), path.clone())));
                prop_assert!(e.to_string().contains(path.as_str()));
            }
        }
    }

    /// A subscription is accepted only when it is an event type a context can publish,
    /// which always fits in a broker's routing key (255 bytes); a refusal names it.
    #[test]
    fn manifest_subscriptions_are_event_types_or_refused_by_name(
        types in prop::collection::vec(
            prop_oneof!["[A-Za-z0-9._-]{1,130}", "\\PC{0,300}", "[a-z]{250,300}"],
            0..4,
        ),
    ) {
        match check_subscriptions("ctx", &types) {
            Ok(()) => {
                for t in &types {
                    prop_assert!(!t.is_empty() && t.len() <= 128, "{t:?}");
                    prop_assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)));
                }
            }
            Err(e) => {
                let LoadError::Subscription { context, event_type } = &e else {
                    return Err(TestCaseError::fail(format!("not a subscription error: {e}")));
                };
                prop_assert_eq!(context.as_str(), "ctx");
                prop_assert!(types.contains(event_type));
            }
        }
    }

    /// A context name is accepted exactly when it is 1 to 64 lower-case ASCII letters,
    /// digits, `-` or `_`: never a path separator, `..`, or anything outside ASCII.
    #[test]
    fn context_names_are_plain(name in prop_oneof!["[a-z0-9_-]{0,70}", "\\PC{0,70}", "[a-z./%]{0,6}"]) {
        let expected = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        prop_assert_eq!(valid_name(&name), expected);
        if valid_name(&name) {
            prop_assert!(!name.contains('/') && !name.contains(".."));
        }
    }

    /// Any `[limits]` table resolves or is refused naming `limits.<key>`; what resolves
    /// has every limit at least 1 and a correlation id limit of at most 4096 bytes.
    #[test]
    fn limits_resolve_in_range_or_are_refused_by_key(
        values in prop::collection::btree_map(
            prop::sample::select(vec![
                "scan_entries", "scan_bytes", "write_entries", "write_bytes", "events",
                "event_bytes", "sequences", "sequence_name_bytes", "correlation_id_bytes",
            ]),
            prop_oneof![0..5i64, 4090..4100i64, Just(i64::MAX), any::<i64>()],
            0..5,
        ),
    ) {
        let text: String = values.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let Ok(file) = toml::from_str::<LimitsFile>(&text) else {
            // Negative numbers are not a `usize`: the file does not parse, with the key.
            prop_assert!(values.values().any(|v| *v < 0));
            return Ok(());
        };
        match file.resolve() {
            Ok(l) => {
                let all = [
                    l.unit.scan_entries, l.unit.scan_bytes, l.unit.write_entries,
                    l.unit.write_bytes, l.unit.events, l.unit.event_bytes, l.sequences,
                    l.sequence_name_bytes, l.correlation_id_bytes,
                ];
                prop_assert!(all.iter().all(|v| *v >= 1));
                prop_assert!(l.correlation_id_bytes <= 4096);
            }
            Err(e) => {
                let e = e.to_string();
                prop_assert!(
                    values.keys().any(|k| e.contains(&format!("limits.{k}"))),
                    "{e}"
                );
            }
        }
    }
}

/// A subscription too long for a broker's routing key made the binding panic: it is refused
/// when the manifest is read.
#[test]
fn a_subscription_longer_than_a_routing_key_is_refused() {
    let long = "x".repeat(256);
    let e = check_subscriptions("ctx", &["OrderPlaced".into(), long.clone()])
        .expect_err("refused")
        .to_string();
    assert!(e.contains("ctx") && e.contains(&long), "{e}");
    assert!(check_subscriptions("ctx", &["OrderPlaced".into()]).is_ok());
}
