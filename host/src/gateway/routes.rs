//! The route table: which context serves a method and path, built from the manifests.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use crate::runtime::RouteSpec;

/// Path prefixes the host keeps for itself.
const RESERVED: [&str; 5] = ["/admin", "/healthz", "/readyz", "/metrics", "/console"];

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The context serving it, and the pattern that matched (`/cars/{id}`): the label of
    /// the request's metrics and trace span, never the raw path.
    Context(Arc<str>, Arc<str>),
    /// The path exists for other methods only.
    MethodNotAllowed(Vec<String>),
    NotFound,
}

/// Why a set of declared routes cannot form the table. Every message names the context.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{context}: route {method} {path} is reserved by the host")]
    Reserved {
        context: Arc<str>,
        method: String,
        path: String,
    },
    #[error("{context}: route {method} {path} is already served by {other}")]
    Taken {
        context: Arc<str>,
        method: String,
        path: String,
        other: Arc<str>,
    },
    #[error("{context}: route {method} {path}: {source}")]
    Pattern {
        context: Arc<str>,
        method: String,
        path: String,
        #[source]
        source: matchit::InsertError,
    },
}

/// What a matched pattern leads to: its owner and the pattern itself.
type Target = (Arc<str>, Arc<str>);

/// Method and path pattern to context.
#[derive(Default)]
pub struct RouteTable {
    /// Per method, the routes' targets.
    by_method: HashMap<String, matchit::Router<Target>>,
    /// Every pattern, whatever its method: patterns of different methods must not
    /// conflict either, so a path reads the same for every method.
    paths: matchit::Router<()>,
    owners: HashMap<(String, String), Arc<str>>,
}

impl RouteTable {
    /// Build the table; two contexts declaring the same route, or a route the host keeps,
    /// is an error naming them.
    pub fn build<'a>(
        contexts: impl IntoIterator<Item = (&'a Arc<str>, &'a [RouteSpec])>,
    ) -> Result<Self, RouteError> {
        let mut t = RouteTable::default();
        let mut paths = HashSet::new();
        for (name, routes) in contexts {
            for r in routes {
                let pattern = |source| RouteError::Pattern {
                    context: name.clone(),
                    method: r.method.clone(),
                    path: r.path.clone(),
                    source,
                };
                if RESERVED
                    .iter()
                    .any(|p| r.path == *p || r.path.starts_with(&format!("{p}/")))
                {
                    return Err(RouteError::Reserved {
                        context: name.clone(),
                        method: r.method.clone(),
                        path: r.path.clone(),
                    });
                }
                let key = (r.method.clone(), r.path.clone());
                if let Some(other) = t.owners.get(&key) {
                    return Err(RouteError::Taken {
                        context: name.clone(),
                        method: r.method.clone(),
                        path: r.path.clone(),
                        other: other.clone(),
                    });
                }
                t.owners.insert(key, name.clone());
                t.by_method
                    .entry(r.method.clone())
                    .or_default()
                    .insert(r.path.clone(), (name.clone(), Arc::from(r.path.as_str())))
                    .map_err(pattern)?;
                if paths.insert(r.path.clone()) {
                    t.paths.insert(r.path.clone(), ()).map_err(pattern)?;
                }
            }
        }
        Ok(t)
    }

    /// The context serving `method path`; else every method that serves the path (each
    /// may match it with another pattern), or none.
    pub fn resolve(&self, method: &str, path: &str) -> Resolved {
        if let Some(r) = self.by_method.get(method)
            && let Ok(m) = r.at(path)
        {
            return Resolved::Context(m.value.0.clone(), m.value.1.clone());
        }
        let allowed: BTreeSet<&String> = self
            .by_method
            .iter()
            .filter(|(_, r)| r.at(path).is_ok())
            .map(|(m, _)| m)
            .collect();
        if allowed.is_empty() {
            Resolved::NotFound
        } else {
            Resolved::MethodNotAllowed(allowed.into_iter().cloned().collect())
        }
    }
}

/// The route table in force, shared by the gateway (which reads it for every request) and
/// hot swap (which replaces it whole when a version with other routes takes over).
#[derive(Default)]
pub struct SharedRoutes(RwLock<Arc<RouteTable>>);

impl SharedRoutes {
    pub fn new(table: RouteTable) -> Self {
        SharedRoutes(RwLock::new(Arc::new(table)))
    }

    /// The table in force now; a request keeps the one it started with.
    pub fn get(&self) -> Arc<RouteTable> {
        crate::sync::read(&self.0).clone()
    }

    /// Put `table` in force for the requests that start from now on.
    pub fn set(&self, table: RouteTable) {
        *crate::sync::write(&self.0) = Arc::new(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> RouteSpec {
        RouteSpec {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn routes_resolve_to_their_context_or_say_why_not() {
        let car: Arc<str> = Arc::from("car");
        let order: Arc<str> = Arc::from("order");
        let car_routes = vec![
            route("GET", "/cars"),
            route("POST", "/cars"),
            route("GET", "/cars/{id}"),
        ];
        let order_routes = vec![route("POST", "/orders/{id}/cancel")];
        let t = RouteTable::build([
            (&car, car_routes.as_slice()),
            (&order, order_routes.as_slice()),
        ])
        .expect("builds");
        assert_eq!(
            t.resolve("GET", "/cars/7"),
            Resolved::Context(car.clone(), Arc::from("/cars/{id}"))
        );
        assert_eq!(
            t.resolve("POST", "/orders/7/cancel"),
            Resolved::Context(order, Arc::from("/orders/{id}/cancel"))
        );
        assert_eq!(
            t.resolve("DELETE", "/cars"),
            Resolved::MethodNotAllowed(vec!["GET".into(), "POST".into()])
        );
        assert_eq!(t.resolve("GET", "/nope"), Resolved::NotFound);
        assert_eq!(t.resolve("GET", "/cars/7/extra"), Resolved::NotFound);
    }

    #[test]
    fn duplicate_and_reserved_routes_are_refused_with_names() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let ra = vec![route("GET", "/x")];
        let rb = vec![route("GET", "/x")];
        let err = RouteTable::build([(&a, ra.as_slice()), (&b, rb.as_slice())])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("b:") && err.contains("already served by a"),
            "{err}"
        );
        let reserved = vec![route("GET", "/admin/plugins")];
        let err = RouteTable::build([(&a, reserved.as_slice())])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("reserved"), "{err}");
    }
}
