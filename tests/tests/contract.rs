//! The WIT contract is enforced at load: a component that cannot be linked, or is not a
//! component at all, is refused with a message naming the context and the mismatch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ctxhost_tests::{host_binary, plugin_dir, test_cache_dir};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ctxhost-contract-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Start `ctxhost serve` on `plugins` and expect it to exit with an error; return stderr.
fn refused(dir: &Path, plugins: &[(&str, PathBuf)]) -> String {
    let mut config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ncache_dir = {:?}\n",
        dir.join("data"),
        test_cache_dir()
    );
    for (name, path) in plugins {
        config.push_str(&format!("[plugins.{name}]\npath = {path:?}\n"));
    }
    let config_path = dir.join("ctxhost.toml");
    std::fs::write(&config_path, config).expect("write config");
    let mut child = Command::new(host_binary())
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env_remove("CTXHOST_LISTEN")
        .env_remove("CTXHOST_DATA_DIR")
        .env_remove("CTXHOST_CONTEXTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctxhost");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(!status.success(), "the host started: {stdout}");
            assert!(
                !stdout.contains("listening"),
                "the host served although a context was refused: {stdout}"
            );
            return String::from_utf8_lossy(&out.stderr).to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the host neither served nor exited within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn contract_import_that_no_context_exports_is_refused_naming_it() {
    let dir = scratch("import");
    let err = refused(&dir, &[("order", plugin_dir().join("order.wasm"))]);
    assert!(
        err.contains("order: contract mismatch: imports ctxhost:rental/payments@0.1.0"),
        "{err}"
    );
}

#[test]
fn contract_bytes_that_are_not_a_component_are_refused_naming_the_context() {
    let dir = scratch("garbage");
    let garbage = dir.join("car.wasm");
    std::fs::write(&garbage, b"this is not wasm").expect("write");
    let err = refused(&dir, &[("car", garbage)]);
    assert!(err.contains("car: not a valid component"), "{err}");

    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let err = refused(&dir, &[("car", core)]);
    assert!(err.contains("core WebAssembly module"), "{err}");
}

#[test]
fn contract_missing_file_is_refused_naming_the_path() {
    let dir = scratch("missing");
    let err = refused(&dir, &[("view", dir.join("nowhere.wasm"))]);
    assert!(
        err.contains("view: cannot read") && err.contains("nowhere.wasm"),
        "{err}"
    );
}
