//! The cost of pruning: the same release host keeping everything (retention `forever`)
//! against retention `0s` with a pruning pass every second, so that while the writes are
//! measured the pruner removes about a second's worth of events and inbox entries at each
//! pass. Reads and durable writes side by side (see [`crate::variants`]); the table's p99
//! column is the write latency while pruning runs.

use std::path::Path;

use crate::variants::{Variant, run};

/// Run the suite: pruning off (baseline), pruning every second.
pub(crate) async fn run_suite(
    bin: &Path,
    plugin_dir: &Path,
    connections: usize,
    seconds: u64,
    rounds: usize,
) -> anyhow::Result<()> {
    let env = |event: &str, inbox: &str| {
        vec![
            ("CTXHOST_EVENT_RETENTION".to_string(), event.to_string()),
            ("CTXHOST_INBOX_RETENTION".to_string(), inbox.to_string()),
            ("CTXHOST_PRUNE_INTERVAL".to_string(), "1s".to_string()),
        ]
    };
    let variants = vec![
        Variant {
            name: "retention forever (nothing pruned)",
            config: String::new(),
            env: env("forever", "forever"),
            max_cost: None,
            bearer: None,
        },
        Variant {
            name: "retention 0s, a pruning pass every second",
            config: String::new(),
            env: env("0s", "0s"),
            max_cost: Some(0.05),
            bearer: None,
        },
    ];
    run(
        "Cost of pruning: retention 0s pruned every second against nothing pruned",
        bin,
        plugin_dir,
        variants,
        connections,
        seconds,
        rounds,
    )
    .await
}
