//! Property tests of the route table: what contexts declare and what clients ask for are
//! both outside input.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;

use super::routes::{Resolved, RouteError, RouteTable};
use crate::runtime::RouteSpec;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
const RESERVED: [&str; 4] = ["/admin", "/healthz", "/readyz", "/metrics"];

/// One segment of a generated pattern.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Literal(String),
    Param,
    CatchAll,
}

/// A generated route: its method and the segments of its pattern.
#[derive(Debug, Clone)]
struct Route {
    method: &'static str,
    segs: Vec<Seg>,
}

impl Route {
    /// The pattern as declared. Parameters are named by position, so two patterns never
    /// differ only in a parameter's name.
    fn pattern(&self) -> String {
        let mut p = String::new();
        for (i, s) in self.segs.iter().enumerate() {
            p.push('/');
            match s {
                Seg::Literal(l) => p.push_str(l),
                Seg::Param => p.push_str(&format!("{{p{i}}}")),
                Seg::CatchAll => p.push_str("{*rest}"),
            }
        }
        p
    }

    /// Whether `path` matches, by the documented rules: a literal is the segment itself, a
    /// parameter one non-empty segment, a catch-all (last) one or more characters.
    fn matches(&self, path: &str) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        for (i, s) in self.segs.iter().enumerate() {
            let last = i + 1 == self.segs.len();
            if *s == Seg::CatchAll {
                return !rest.is_empty();
            }
            let (seg, after) = match rest.split_once('/') {
                Some((seg, after)) if !last => (seg, Some(after)),
                Some(_) => return false,
                None if last => (rest, None),
                None => return false,
            };
            let ok = match s {
                Seg::Literal(l) => seg == l,
                Seg::Param => !seg.is_empty(),
                Seg::CatchAll => unreachable!(),
            };
            if !ok {
                return false;
            }
            match after {
                Some(a) => rest = a,
                None => return true,
            }
        }
        false
    }
}

/// Literals from a small set, so that patterns overlap often.
fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("cars".to_string()),
        Just("orders".to_string()),
        Just("new".to_string()),
        Just("1".to_string()),
        "[a-z]{1,3}",
    ]
}

fn route() -> impl Strategy<Value = Route> {
    let seg = prop_oneof![3 => literal().prop_map(Seg::Literal), 2 => Just(Seg::Param)];
    (
        prop::sample::select(&METHODS[..]),
        literal(),
        prop::collection::vec(seg, 0..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(method, first, more, catch_all)| {
            let mut segs = vec![Seg::Literal(first)];
            segs.extend(more);
            if catch_all {
                segs.push(Seg::CatchAll);
            }
            Route { method, segs }
        })
}

/// Distinct routes (by method and pattern).
fn routes() -> impl Strategy<Value = Vec<Route>> {
    prop::collection::vec(route(), 1..12).prop_map(|rs| {
        let mut seen = BTreeSet::new();
        rs.into_iter()
            .filter(|r| seen.insert((r.method, r.pattern())))
            .collect()
    })
}

/// A value for one segment, hostile ones included.
fn segment_value() -> impl Strategy<Value = String> {
    prop_oneof![
        literal(),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("%2F".to_string()),
        Just("%2e%2e".to_string()),
        Just("{p1}".to_string()),
        Just("*".to_string()),
        "[a-zA-Z0-9%._~é-]{1,6}",
    ]
}

/// A concrete path for `r`, with generated parameter values.
fn concrete(r: &Route) -> impl Strategy<Value = String> + use<> {
    let parts: Vec<BoxedStrategy<String>> = r
        .segs
        .iter()
        .map(|s| match s {
            Seg::Literal(l) => Just(l.clone()).boxed(),
            Seg::Param => segment_value().boxed(),
            Seg::CatchAll => prop::collection::vec(segment_value(), 1..3)
                .prop_map(|v| v.join("/"))
                .boxed(),
        })
        .collect();
    parts.prop_map(|p| format!("/{}", p.join("/")))
}

/// Routes, and paths to ask: concrete paths of some of them, and paths of segments only.
fn table_and_paths() -> impl Strategy<Value = (Vec<Route>, Vec<String>)> {
    routes().prop_flat_map(|rs| {
        let from_routes: Vec<BoxedStrategy<String>> =
            rs.iter().map(|r| concrete(r).boxed()).collect();
        let noise = prop::collection::vec(
            prop::collection::vec(segment_value(), 0..5).prop_map(|v| format!("/{}", v.join("/"))),
            0..4,
        );
        (Just(rs), from_routes, noise).prop_map(|(rs, mut paths, noise)| {
            paths.extend(noise);
            (rs, paths)
        })
    })
}

/// Each route in its own context `c<i>`, so a resolution names the route it took.
fn build(rs: &[Route]) -> (Vec<Arc<str>>, Vec<Vec<RouteSpec>>) {
    let names = (0..rs.len()).map(|i| Arc::from(format!("c{i}"))).collect();
    let specs = rs
        .iter()
        .map(|r| {
            vec![RouteSpec {
                method: r.method.into(),
                path: r.pattern(),
            }]
        })
        .collect();
    (names, specs)
}

fn table(names: &[Arc<str>], specs: &[Vec<RouteSpec>]) -> Result<RouteTable, RouteError> {
    RouteTable::build(names.iter().zip(specs.iter().map(Vec::as_slice)))
}

proptest! {
    /// Building a table from any declared methods and paths never panics; a refusal is an
    /// error naming the context, and a table that builds resolves any path without panic.
    #[test]
    fn any_declared_route_is_built_or_refused_without_panic(
        declared in prop::collection::vec(("\\PC{0,8}", "/?[a-z{}*/.%:]{0,12}"), 0..6),
        asked in prop::collection::vec(("\\PC{0,8}", "\\PC{0,24}"), 0..6),
    ) {
        let name: Arc<str> = Arc::from("ctx");
        let specs: Vec<RouteSpec> = declared
            .into_iter()
            .map(|(method, path)| RouteSpec { method, path })
            .collect();
        match RouteTable::build([(&name, specs.as_slice())]) {
            Ok(t) => {
                for (method, path) in &asked {
                    let _ = t.resolve(method, path);
                }
            }
            Err(e) => prop_assert!(e.to_string().starts_with("ctx: route "), "{e}"),
        }
    }

    /// A route at or under a path the host keeps is refused, naming the context and route.
    #[test]
    fn reserved_paths_are_refused_by_name(
        reserved in prop::sample::select(&RESERVED[..]),
        tail in prop::option::of("/[a-z{}/]{0,10}"),
        method in prop::sample::select(&METHODS[..]),
    ) {
        let path = format!("{reserved}{}", tail.unwrap_or_default());
        let name: Arc<str> = Arc::from("ctx");
        let specs = [RouteSpec { method: method.into(), path: path.clone() }];
        let err = RouteTable::build([(&name, &specs[..])]).err();
        let is_reserved = matches!(err, Some(RouteError::Reserved { .. }));
        prop_assert!(is_reserved, "{path}: {err:?}");
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        prop_assert!(text.contains("ctx") && text.contains(&path), "{text}");
    }

    /// A table built from valid patterns sends a path to a context only when that
    /// context's route matches it (literals equal, parameters one non-empty segment), and
    /// whenever some route of the method matches; otherwise it says which methods the path
    /// has, or that it has none.
    #[test]
    fn paths_resolve_to_a_matching_route_and_only_to_one(
        (rs, paths) in table_and_paths(),
        asked_method in prop::sample::select(&METHODS[..]),
    ) {
        let (names, specs) = build(&rs);
        let t = match table(&names, &specs) {
            Ok(t) => t,
            // Patterns matchit cannot tell apart are refused as such, never anything else.
            Err(RouteError::Pattern { .. }) => return Ok(()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        for path in &paths {
            for method in [asked_method, rs[0].method] {
                let matching: Vec<usize> = (0..rs.len())
                    .filter(|&i| rs[i].method == method && rs[i].matches(path))
                    .collect();
                match t.resolve(method, path) {
                    Resolved::Context(c, pattern) => {
                        let i: usize = c[1..].parse().expect("c<i>");
                        let want = rs[i].pattern();
                        prop_assert_eq!(&*pattern, want.as_str());
                        prop_assert!(
                            matching.contains(&i),
                            "{method} {path} went to {} ({})", rs[i].pattern(), rs[i].method
                        );
                    }
                    Resolved::MethodNotAllowed(allowed) => {
                        prop_assert!(matching.is_empty(), "{method} {path}: {:?} match", matching.iter().map(|&i| rs[i].pattern()).collect::<Vec<_>>());
                        prop_assert!(!allowed.is_empty() && !allowed.iter().any(|m| m == method));
                        let serving: BTreeSet<&str> = rs
                            .iter()
                            .filter(|r| r.matches(path))
                            .map(|r| r.method)
                            .collect();
                        let listed: BTreeSet<&str> = allowed.iter().map(String::as_str).collect();
                        prop_assert_eq!(listed, serving, "{} {}", method, path);
                    }
                    Resolved::NotFound => {
                        prop_assert!(matching.is_empty(), "{method} {path} not found, though {:?} match", matching.iter().map(|&i| rs[i].pattern()).collect::<Vec<_>>());
                        prop_assert!(
                            !rs.iter().any(|r| r.matches(path)),
                            "{path} not found, though another method serves it"
                        );
                    }
                }
            }
        }
    }
}

/// Found by the property above: a 405 listed only the methods of the most specific
/// pattern, not `PUT`, whose parameter matches the path too.
#[test]
fn method_not_allowed_lists_every_method_serving_the_path() {
    let names: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b")];
    let specs = vec![
        vec![RouteSpec {
            method: "PUT".into(),
            path: "/orders/new/{p2}".into(),
        }],
        vec![RouteSpec {
            method: "PATCH".into(),
            path: "/orders/new/cars".into(),
        }],
    ];
    let t = table(&names, &specs).expect("builds");
    assert_eq!(
        t.resolve("POST", "/orders/new/cars"),
        Resolved::MethodNotAllowed(vec!["PATCH".into(), "PUT".into()])
    );
}
