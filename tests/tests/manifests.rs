//! The Kubernetes manifests in `deploy/kubernetes/`: each kustomization (the base and the
//! development overlay) is rendered by kustomize, and the rendering is checked offline by
//! `tests/manifests/check.py`: every object against the Kubernetes 1.30 schemas (strict),
//! then what the deployment relies on (groups of contexts and their configuration, probes,
//! data volume, restricted security context, a PodDisruptionBudget and a Service per
//! StatefulSet, no secret in a ConfigMap, an Ingress route for every context's paths).
//! A last test breaks a rendering in several ways and sees the check refuse each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use ctxhost_tests::{ensure_program, find_program};

/// The repository's root (this crate is `tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the repository")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `kustomize build DIR`, or `kubectl kustomize DIR` (kubectl embeds kustomize).
fn render(dir: &str) -> String {
    let dir = repo_root().join(dir);
    let out = match find_program("kustomize") {
        Some(kustomize) => run(Command::new(kustomize).arg("build").arg(&dir)),
        None => run(Command::new(ensure_program("kubectl", &["kubectl"]))
            .arg("kustomize")
            .arg(&dir)),
    };
    assert!(
        out.status.success(),
        "kustomize failed on {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize prints UTF-8")
}

/// Python 3 with the `kubernetes-validate` package (schemas of each Kubernetes version,
/// offline) and PyYAML, installed with pip when missing.
fn python() -> PathBuf {
    static INSTALL: Once = Once::new();
    let python = ensure_program("python3", &["python3", "python3-pip"]);
    INSTALL.call_once(|| {
        let has = |p: &Path| {
            run(Command::new(p).args(["-c", "import kubernetes_validate, yaml"]))
                .status
                .success()
        };
        if has(&python) {
            return;
        }
        eprintln!("installing kubernetes-validate with pip ...");
        let out = run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "kubernetes-validate",
        ]));
        assert!(
            out.status.success() && has(&python),
            "cannot install the Python package kubernetes-validate (pip install kubernetes-validate):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    python
}

/// Runs the check on `rendering` as layout `layout`: (passed, what it printed).
fn check(layout: &str, rendering: &str) -> (bool, String) {
    let file = std::env::temp_dir().join(format!(
        "ctxhost-manifests-{}-{layout}-{:x}.yaml",
        std::process::id(),
        {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            rendering.hash(&mut h);
            h.finish()
        }
    ));
    std::fs::write(&file, rendering).expect("write the rendering to a temporary file");
    let root = repo_root();
    let out = run(Command::new(python())
        .arg(root.join("tests/manifests/check.py"))
        .arg(layout)
        .arg(&file)
        .arg(&root));
    let _ = std::fs::remove_file(&file);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn base_renders_to_valid_checked_manifests() {
    let (ok, out) = check("base", &render("deploy/kubernetes/base"));
    println!("{out}");
    assert!(ok, "deploy/kubernetes/base:\n{out}");
}

#[test]
fn dev_overlay_renders_to_valid_checked_manifests() {
    let (ok, out) = check("dev", &render("deploy/kubernetes/overlays/dev"));
    println!("{out}");
    assert!(ok, "deploy/kubernetes/overlays/dev:\n{out}");
}

#[test]
fn the_check_refuses_broken_manifests() {
    let good = render("deploy/kubernetes/base");
    let breakages = [
        ("path: /readyz", "path: /ready", "readinessProbe"),
        ("path: /cars\n", "path: /car\n", "Ingress: /cars"),
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
            "readOnlyRootFilesystem",
        ),
        (
            "mountPath: /var/lib/ctxhost",
            "mountPath: /data",
            "/var/lib/ctxhost",
        ),
        (
            "log_format = \"json\"",
            "log_format = \"json\"\n    token = \"CHANGE-ME-admin-token\"",
            "holds the value of the secret admin-token",
        ),
        (
            "  serviceName: car\n",
            "  serviceName: car\n  replica: 2\n",
            "'replica' was unexpected",
        ),
        (
            "kind: PodDisruptionBudget",
            "kind: PodDisruptionBudgets",
            "no schema",
        ),
    ];
    for (from, to, expected) in breakages {
        assert!(
            good.contains(from),
            "the rendering has no {from:?} to break"
        );
        let broken = good.replacen(from, to, 1);
        let (ok, out) = check("base", &broken);
        assert!(
            !ok,
            "the check passed with {from:?} replaced by {to:?}:\n{out}"
        );
        assert!(
            out.contains(expected),
            "with {from:?} replaced by {to:?}, the check did not say {expected:?}:\n{out}"
        );
    }
}
