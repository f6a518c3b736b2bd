//! Access rules: who may call a route.

use std::collections::BTreeMap;
use std::fmt;

use super::Principal;

/// Who may call a route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "rule", content = "roles")]
pub enum Access {
    /// Anyone, with or without a token (a token that is sent is still verified).
    Public,
    /// Any caller with a valid token.
    Authenticated,
    /// A caller with a valid token granting at least one of these roles.
    Roles(Vec<String>),
}

/// What the gateway decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The request may reach the component.
    Allow,
    /// No principal, and the route needs one: 401.
    Unauthenticated,
    /// A principal without a required role: 403.
    Forbidden,
}

impl Access {
    /// Whether `principal` (or an anonymous caller) may call a route with this rule.
    pub fn decide(&self, principal: Option<&Principal>) -> Decision {
        match (self, principal) {
            (Access::Public, _) => Decision::Allow,
            (_, None) => Decision::Unauthenticated,
            (Access::Authenticated, Some(_)) => Decision::Allow,
            (Access::Roles(roles), Some(p)) if roles.iter().any(|r| p.has_role(r)) => {
                Decision::Allow
            }
            (Access::Roles(_), Some(_)) => Decision::Forbidden,
        }
    }

    /// Parse an operator's rule: `public`, `authenticated`, or `roles:a,b`.
    pub fn parse(text: &str) -> Result<Access, String> {
        match text.trim() {
            "public" => Ok(Access::Public),
            "authenticated" => Ok(Access::Authenticated),
            other => match other.strip_prefix("roles:") {
                Some(list) => {
                    let roles: Vec<String> = list
                        .split(',')
                        .map(str::trim)
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .collect();
                    if roles.is_empty() {
                        Err("`roles:` names no role".into())
                    } else {
                        Ok(Access::Roles(roles))
                    }
                }
                None => Err(format!(
                    "{other:?} is not `public`, `authenticated` or `roles:<role>,<role>`"
                )),
            },
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Public => f.write_str("public"),
            Access::Authenticated => f.write_str("authenticated"),
            Access::Roles(r) => write!(f, "roles:{}", r.join(",")),
        }
    }
}

/// A route named by method and path pattern, as in a manifest: `("POST", "/cars")`.
pub(super) type RouteKey = (String, String);

/// The operator's rules for some routes of one context, which win over the component's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessOverrides(pub BTreeMap<RouteKey, Access>);

impl AccessOverrides {
    /// Parse `"METHOD /path" = "rule"` entries.
    pub fn parse<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<AccessOverrides, String> {
        let mut out = BTreeMap::new();
        for (route, rule) in entries {
            let Some((method, path)) = route.trim().split_once(' ') else {
                return Err(format!("{route:?} is not `METHOD /path`"));
            };
            let path = path.trim();
            if !path.starts_with('/') {
                return Err(format!("{route:?}: the path must start with '/'"));
            }
            let access = Access::parse(rule).map_err(|e| format!("{route:?}: {e}"))?;
            out.insert((method.to_ascii_uppercase(), path.to_string()), access);
        }
        Ok(AccessOverrides(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(roles: &[&str]) -> Principal {
        Principal {
            subject: "alice".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            claims: "{}".into(),
        }
    }

    #[test]
    fn decisions() {
        let admin = Access::Roles(vec!["admin".into()]);
        assert_eq!(Access::Public.decide(None), Decision::Allow);
        assert_eq!(
            Access::Authenticated.decide(None),
            Decision::Unauthenticated
        );
        assert_eq!(
            Access::Authenticated.decide(Some(&who(&[]))),
            Decision::Allow
        );
        assert_eq!(admin.decide(None), Decision::Unauthenticated);
        assert_eq!(admin.decide(Some(&who(&["user"]))), Decision::Forbidden);
        assert_eq!(
            admin.decide(Some(&who(&["user", "admin"]))),
            Decision::Allow
        );
    }

    #[test]
    fn operator_rules_parse() {
        let o = AccessOverrides::parse([
            ("post /cars", "roles: admin, fleet"),
            ("GET /cars/{id}", "public"),
        ])
        .expect("valid");
        assert_eq!(
            o.0.get(&("POST".into(), "/cars".into())),
            Some(&Access::Roles(vec!["admin".into(), "fleet".into()]))
        );
        assert_eq!(
            o.0.get(&("GET".into(), "/cars/{id}".into())),
            Some(&Access::Public)
        );
        assert!(AccessOverrides::parse([("/cars", "public")]).is_err());
        assert!(AccessOverrides::parse([("GET cars", "public")]).is_err());
        assert!(AccessOverrides::parse([("GET /cars", "everyone")]).is_err());
        assert!(AccessOverrides::parse([("GET /cars", "roles:")]).is_err());
    }
}
