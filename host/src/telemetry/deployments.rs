//! The recent deployments and rollbacks, newest first, for operators and the console (the
//! counters of the same events are metric families).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::sync::lock;

/// Deployments and rollbacks kept.
pub(crate) const KEPT: usize = 50;

/// One deployment or rollback.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Deployment {
    /// When it ended, RFC 3339.
    pub at: String,
    pub context: String,
    /// The version that serves after it (or that was refused).
    pub version: String,
    /// `deploy` or `rollback`.
    pub action: &'static str,
    /// `manual` (admin API), `watch` (the watched directory) or `automatic` (self-healing).
    pub trigger: &'static str,
    /// `ok` or `refused`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The last [`KEPT`] deployments and rollbacks.
#[derive(Debug, Default)]
pub(crate) struct History(Mutex<VecDeque<Deployment>>);

impl History {
    pub(crate) fn push(&self, d: Deployment) {
        let mut h = lock(&self.0);
        h.push_front(d);
        h.truncate(KEPT);
    }

    /// Newest first.
    pub(crate) fn recent(&self) -> Vec<Deployment> {
        lock(&self.0).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_first_and_at_most_kept() {
        let h = History::default();
        for i in 0..KEPT + 5 {
            h.push(Deployment {
                at: String::new(),
                context: format!("c{i}"),
                version: String::new(),
                action: "deploy",
                trigger: "manual",
                outcome: "ok",
                detail: None,
            });
        }
        let r = h.recent();
        assert_eq!(r.len(), KEPT);
        assert_eq!(r[0].context, format!("c{}", KEPT + 4));
    }
}
