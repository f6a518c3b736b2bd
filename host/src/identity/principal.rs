//! The principal of an invocation.

/// An authenticated caller: the subject, roles and claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim.
    pub subject: String,
    /// The roles the token grants, from the configured roles claim.
    pub roles: Vec<String>,
    /// Every claim of the token, as one JSON object.
    pub claims: String,
}

impl Principal {
    /// The principal an event delivery runs for: the subject of the request that caused the
    /// event, without roles (they were checked when that request was served).
    pub fn of_event(subject: &str) -> Principal {
        Principal {
            subject: subject.to_string(),
            roles: Vec::new(),
            claims: serde_json::json!({ "sub": subject }).to_string(),
        }
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
