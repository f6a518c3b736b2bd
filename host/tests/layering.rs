//! The host's layering, enforced: every `crate::<module>` a file of `host/src` names must be
//! one its module may depend on (docs/ARCHITECTURE.md draws the layers). A new upward
//! import, or a cycle between modules, fails here with the file and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `host/src` and the modules it may import. Lower layers come
/// later; a module never lists one above it, so the graph has no cycle.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "admin",
            "api",
            "bus",
            "config",
            "gateway",
            "identity",
            "resilience",
            "runtime",
            "state",
            "storage",
            "swap",
            "sync",
            "telemetry",
            "time",
        ],
    ),
    (
        "admin",
        &[
            "api",
            "bus",
            "gateway",
            "identity",
            "resilience",
            "runtime",
            "state",
            "storage",
            "swap",
            "sync",
            "telemetry",
            "time",
        ],
    ),
    (
        "swap",
        &[
            "api",
            "bus",
            "gateway",
            "identity",
            "runtime",
            "state",
            "sync",
            "telemetry",
            "time",
        ],
    ),
    (
        "gateway",
        &[
            "api",
            "identity",
            "resilience",
            "runtime",
            "state",
            "sync",
            "telemetry",
            "time",
        ],
    ),
    (
        "config",
        &[
            "bus",
            "identity",
            "resilience",
            "runtime",
            "storage",
            "telemetry",
        ],
    ),
    (
        "runtime",
        &[
            "bindings",
            "bus",
            "capabilities",
            "identity",
            "resilience",
            "state",
            "sync",
            "telemetry",
            "time",
        ],
    ),
    (
        "capabilities",
        &[
            "bindings",
            "bus",
            "identity",
            "state",
            "sync",
            "telemetry",
            "time",
        ],
    ),
    ("storage", &["bus", "state", "sync", "telemetry", "time"]),
    ("bus", &["state", "sync", "telemetry", "time"]),
    ("resilience", &["jitter", "sync", "telemetry", "time"]),
    ("state", &["jitter", "sync", "telemetry", "time"]),
    ("api", &[]),
    ("bindings", &[]),
    ("identity", &["sync", "telemetry", "time"]),
    ("jitter", &[]),
    ("sync", &[]),
    ("telemetry", &["sync", "time"]),
    ("time", &[]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src` belongs to (`None`: `lib.rs`, `main.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("a file under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The modules named as `crate::<module>` in `text`, with their line numbers; comment lines
/// are skipped.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let name: String = line[i + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut seen_modules = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        seen_modules.insert(module.clone());
        let Some(ok) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` is not in the layering table of this test",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (line, used) in imports(&text) {
            if used != module && !ok.contains(used.as_str()) {
                violations.push(format!(
                    "{}:{line}: `{module}` imports `crate::{used}`, which is not below it",
                    file.display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
    let listed: BTreeSet<String> = allowed.keys().map(|m| (*m).to_owned()).collect();
    assert_eq!(
        seen_modules, listed,
        "the table lists exactly the modules of host/src"
    );
}

#[test]
fn the_layering_table_has_no_cycle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search from every module; a module met again on the current path is a cycle.
    fn visit<'a>(
        m: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(!path.contains(&m), "cycle: {} -> {m}", path.join(" -> "));
        path.push(m);
        for dep in allowed.get(m).copied().unwrap_or_default() {
            visit(dep, allowed, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in allowed.keys() {
        visit(m, &allowed, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_scanner_sees_imports_and_skips_comments() {
    let text = "use crate::runtime::Runtime;\n// crate::server is fine in a comment\nlet x = crate::gateway::router(g);\n";
    assert_eq!(
        imports(text),
        vec![(1, "runtime".to_owned()), (3, "gateway".to_owned())]
    );
}
