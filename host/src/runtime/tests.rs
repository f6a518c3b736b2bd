//! Unit tests of the runtime's contract checks: the call-error ABI and the agreement of an
//! importer and an exporter (components written in the component text format, types only),
//! and the loader's refusals with the real plugins (`CTXHOST_PLUGIN_DIR`, else the
//! workspace's `target/wasm32-wasip2/release`).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentFunc;

use super::calls::{AbiError, check_abi, host_error, is_err};
use super::config::{DEFAULT_CACHE_MAX_MB, valid_name};
use super::context::ContextLimits;
use super::engine::{EngineSettings, Runtime, engine_config};
use super::invoke::InvokeError;
use super::linking::{Mismatch, check_compatible, interfaces};
use super::loader::{Artifact, LoadError};
use super::store_data::Scope;
use crate::resilience::{ResilienceFile, ResilienceSettings};
use crate::state::{Committer, Db};

const PAYMENTS: &str = "ctxhost:rental/payments";

/// The `call-error` of the platform, with `cases` as its cases.
fn call_error(cases: &[&str]) -> String {
    let cases: Vec<String> = cases
        .iter()
        .map(|c| format!("(case \"{c}\" string)"))
        .collect();
    format!("(variant {})", cases.join(" "))
}

const ALL_KINDS: [&str; 4] = ["unavailable", "trapped", "timeout", "rejected"];

/// A component that imports `ctxhost:rental/payments` with one function `authorize` whose
/// parameters and result are `params` and `result`; the instance type exports `call-error`
/// (`$ce`, from `ce`) and `payment-error` (`$pe`, from `pe`) for them to use.
fn importer(engine: &Engine, ce: &str, pe: &str, params: &str, result: &str) -> ComponentFunc {
    let text = format!(
        r#"(component
  (import "{PAYMENTS}" (instance
    (type $call-error {ce})
    (export "call-error" (type $ce (eq $call-error)))
    (type $payment-error {pe})
    (export "payment-error" (type $pe (eq $payment-error)))
    (export "authorize" (func {params} (result {result})))
  ))
)"#
    );
    let bytes = wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let component = Component::new(engine, bytes).expect("a valid component");
    let mut ifaces = interfaces(engine, &component, false);
    assert_eq!(ifaces.len(), 1, "one cross-context import");
    let (name, mut funcs) = ifaces.remove(0);
    assert_eq!(name, PAYMENTS);
    funcs.remove(0).1
}

/// `authorize(order-id: u64) -> result<u64, payment-error>` with a well-formed error.
fn good(engine: &Engine) -> ComponentFunc {
    importer(
        engine,
        &call_error(&ALL_KINDS),
        "(variant (case \"host\" $ce) (case \"declined\" string))",
        "(param \"order-id\" u64)",
        "(result u64 (error $pe))",
    )
}

fn engine() -> Engine {
    Engine::new(&engine_config(4, 1 << 20)).expect("an engine")
}

#[test]
fn the_same_function_on_both_sides_is_compatible() {
    let engine = engine();
    assert_eq!(
        check_compatible(PAYMENTS, "authorize", &good(&engine), &good(&engine)),
        Ok(())
    );
}

#[test]
fn parameters_and_results_must_agree() {
    let engine = engine();
    let pe = "(variant (case \"host\" $ce) (case \"declined\" string))";
    let ce = call_error(&ALL_KINDS);
    let other_type = importer(
        &engine,
        &ce,
        pe,
        "(param \"order-id\" u32)",
        "(result u64 (error $pe))",
    );
    let other_name = importer(
        &engine,
        &ce,
        pe,
        "(param \"id\" u64)",
        "(result u64 (error $pe))",
    );
    let other_result = importer(
        &engine,
        &ce,
        pe,
        "(param \"order-id\" u64)",
        "(result string (error $pe))",
    );
    for other in [&other_type, &other_name] {
        assert!(
            matches!(
                check_compatible(PAYMENTS, "authorize", &good(&engine), other),
                Err(Mismatch::Params { .. })
            ),
            "parameters differ"
        );
    }
    let err = check_compatible(PAYMENTS, "authorize", &good(&engine), &other_result)
        .expect_err("results differ");
    assert!(matches!(err, Mismatch::Results { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("ctxhost:rental/payments.authorize:"),
        "the message names the function: {err}"
    );
}

#[test]
fn the_call_error_abi_is_checked_case_by_case() {
    let engine = engine();
    let ce = call_error(&ALL_KINDS);
    let abi = |ce: &str, pe: &str, result: &str| {
        let f = importer(&engine, ce, pe, "(param \"order-id\" u64)", result);
        let results: Vec<_> = f.results().collect();
        check_abi(&results)
    };
    let pe = "(variant (case \"host\" $ce) (case \"declined\" string))";
    assert_eq!(abi(&ce, pe, "(result u64 (error $pe))"), Ok(()));
    assert_eq!(abi(&ce, pe, "u64"), Err(AbiError::NotAResult));
    assert_eq!(
        abi(&ce, pe, "(result u64 (error string))"),
        Err(AbiError::ErrorNotAVariant)
    );
    assert_eq!(
        abi(
            &ce,
            "(variant (case \"declined\" string))",
            "(result u64 (error $pe))"
        ),
        Err(AbiError::NoHostCase)
    );
    assert_eq!(
        abi(
            &ce,
            "(variant (case \"host\" string))",
            "(result u64 (error $pe))"
        ),
        Err(AbiError::HostCaseNotAVariant)
    );
    assert_eq!(
        abi(
            &call_error(&["unavailable", "trapped", "timeout"]),
            pe,
            "(result u64 (error $pe))"
        ),
        Err(AbiError::MissingKind("rejected"))
    );
    // The host relies on the ABI when it answers for a callee: `err(host(kind(message)))`.
    let answer = [host_error("timeout", "too slow".into())];
    assert!(is_err(&answer));
}

#[test]
fn platform_and_wasi_imports_are_never_linked_between_contexts() {
    let engine = engine();
    let text = r#"(component
  (import "wasi:cli/environment@0.2.0" (instance
    (export "get-arguments" (func (result (list string))))
  ))
  (import "ctxhost:platform/log@0.1.0" (instance
    (export "flush" (func))
  ))
)"#;
    let component =
        Component::new(&engine, wat::parse_str(text).expect("valid text")).expect("a component");
    assert!(interfaces(&engine, &component, false).is_empty());
}

#[test]
fn context_names_are_short_lowercase_words() {
    for ok in ["order", "car-2", "view_model"] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in ["", "Order", "a/b", "..", "a b", &"x".repeat(65)] {
        assert!(!valid_name(bad), "{bad}");
    }
}

/// A runtime on a fresh data directory, with the test hosts' compilation cache.
fn runtime(dir: &std::path::Path) -> Runtime {
    runtime_with_pool(dir, 16)
}

fn runtime_with_pool(dir: &std::path::Path, max_instances: u32) -> Runtime {
    runtime_with(dir, max_instances, Duration::from_secs(120))
}

fn runtime_with(dir: &std::path::Path, max_instances: u32, compile_timeout: Duration) -> Runtime {
    let db = Db::open(dir, &[]).expect("a database");
    let committer = Committer::start(db.clone()).expect("a committer");
    let deadline = Duration::from_secs(5);
    let settings = EngineSettings {
        deadline,
        memory_limit: 64 << 20,
        max_instances,
        cache_dir: ctxhost_tests::test_cache_dir(),
        cache_max_bytes: DEFAULT_CACHE_MAX_MB * 1024 * 1024,
        compile_timeout,
        max_call_depth: 8,
        resilience: ResilienceSettings::resolve(&ResilienceFile::default(), deadline)
            .expect("the default policies"),
        guest_limits: crate::capabilities::GuestLimits::default(),
        instance_shape: super::limits::InstanceShape::default(),
    };
    Runtime::new(settings, db, committer).expect("a runtime")
}

/// The built component `file` of the plugin directory, as context `name`.
fn artifact(name: &str, file: &str) -> Artifact {
    let path = ctxhost_tests::plugin_dir().join(format!("{file}.wasm"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Artifact {
        name: name.into(),
        bytes: Arc::new(bytes),
        origin: format!("test {file}"),
        config: Arc::default(),
        secrets: Arc::default(),
        access: Arc::default(),
        limits: ContextLimits {
            deadline: Duration::from_secs(5),
            memory_limit: 64 << 20,
            instance_reuse: 1,
        },
    }
}

fn contract_message(e: LoadError) -> String {
    match e {
        LoadError::Contract { context, message } => format!("{context}: {message}"),
        other => panic!("not a contract refusal: {other}"),
    }
}

#[tokio::test]
async fn the_loader_refuses_an_import_no_context_exports() {
    let dir = ctxhost_tests::TestDir::new();
    let rt = runtime(dir.path());
    let err = rt
        .load_all(vec![artifact("order", "order")])
        .await
        .expect_err("order imports payments");
    let message = contract_message(err);
    assert!(
        message.starts_with("order: imports ctxhost:rental/payments")
            && message.contains("no loaded context exports it"),
        "{message}"
    );
    assert!(rt.registry().all().is_empty(), "nothing was installed");
}

#[tokio::test]
async fn the_loader_refuses_two_exporters_of_one_interface() {
    let dir = ctxhost_tests::TestDir::new();
    let rt = runtime(dir.path());
    let err = rt
        .load_all(vec![
            artifact("payment", "payment"),
            artifact("payment-copy", "payment"),
        ])
        .await
        .expect_err("two exporters");
    let message = contract_message(err);
    assert!(message.contains("which payment exports too"), "{message}");
}

#[tokio::test]
async fn a_new_version_that_breaks_an_importer_is_refused_and_nothing_changes() {
    let dir = ctxhost_tests::TestDir::new();
    let rt = runtime(dir.path());
    rt.load_all(vec![
        artifact("payment", "payment"),
        artifact("order", "order"),
    ])
    .await
    .expect("the pair loads");
    let before = rt
        .registry()
        .get("payment")
        .expect("payment")
        .digest
        .clone();
    let err = rt
        .prepare(artifact("payment", "bad_payments"))
        .await
        .expect_err("bad-payments breaks order's import");
    let message = contract_message(err);
    assert!(
        message.starts_with("payment: ") && message.contains("order"),
        "{message}"
    );
    assert_eq!(
        rt.registry().get("payment").expect("payment").digest,
        before,
        "the running version stays"
    );
    // The same version again is fine.
    rt.prepare(artifact("payment", "payment"))
        .await
        .expect("the running version prepares again");
}

#[tokio::test]
async fn a_core_module_is_refused_as_not_a_component() {
    let dir = ctxhost_tests::TestDir::new();
    let rt = runtime(dir.path());
    let mut core = artifact("car", "car");
    core.bytes = Arc::new(wat::parse_str("(module)").expect("a core module"));
    match rt.load_all(vec![core]).await {
        Err(LoadError::Compile { context, message }) => {
            assert_eq!(context, "car");
            assert!(message.contains("core WebAssembly module"), "{message}");
        }
        other => panic!("expected a compile refusal, got {other:?}"),
    }
}

/// `GET path` against `ctx`, in a unit of work of its own.
async fn get(rt: &Runtime, ctx: &str, path: &str) -> Result<http::StatusCode, InvokeError> {
    let ctx = rt.registry().get(ctx).expect("loaded");
    let unit = crate::state::share(crate::state::UnitOfWork::begin(rt.db()).expect("a unit"));
    let req = http::Request::get(format!("http://localhost{path}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request");
    rt.invoke_http(ctx, unit, Scope::anonymous(Arc::from("test")), req)
        .await
        .map(|r| r.status)
}

// Two workers spin in the loops; two more keep the timers and this test running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_instance_pool_is_capacity_and_does_not_count_against_health() {
    let dir = ctxhost_tests::TestDir::new();
    // Room for two instances: both held by endless loops, anything else finds none.
    let rt = runtime_with_pool(dir.path(), 2);
    let mut chaos = artifact("chaos", "chaos");
    chaos.limits.deadline = Duration::from_millis(1500);
    rt.load_all(vec![artifact("payment", "payment"), chaos])
        .await
        .expect("chaos and payment load");
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move { get(&rt, "chaos", "/chaos/loop").await })
        })
        .collect();
    // Let both loops take their instance.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut refused = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(1) && !loops.iter().all(|l| l.is_finished()) {
        match get(&rt, "chaos", "/chaos/ok").await {
            Err(e @ InvokeError::Capacity { .. }) => {
                assert!(!e.is_guest_fault());
                refused += 1;
            }
            Ok(_) => {}
            Err(other) => panic!("unexpected: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for l in loops {
        let r = l.await.expect("the loop task");
        assert!(
            matches!(r, Err(InvokeError::Deadline { .. })),
            "the loop ran past its deadline: {r:?}"
        );
    }
    assert!(refused > 0, "the pool was never full");
    let health = &rt.registry().get("chaos").expect("chaos").health;
    let (failures, _) = health.window();
    assert_eq!(
        failures, 2,
        "only the two loops count, not the {refused} refusals"
    );
    assert!(!health.is_unhealthy());
}

#[tokio::test]
async fn a_component_over_the_per_component_pool_limits_is_refused() {
    let dir = ctxhost_tests::TestDir::new();
    let rt = runtime(dir.path());
    // Three core modules each defining a memory: over the two memories one instance may
    // define, whatever its memory cap.
    let text = r#"(component
  (core module $m (memory 1))
  (core instance (instantiate $m))
  (core instance (instantiate $m))
  (core instance (instantiate $m))
)"#;
    let mut a = artifact("car", "car");
    a.bytes = Arc::new(wat::parse_str(text).expect("a component"));
    match rt.load_all(vec![a]).await {
        Err(LoadError::Compile { message, .. }) => {
            assert!(message.contains("linear memories"), "{message}")
        }
        other => panic!("expected a refusal at compilation, got {other:?}"),
    }
}

#[tokio::test]
async fn a_compilation_past_its_deadline_is_refused() {
    let dir = ctxhost_tests::TestDir::new();
    let rt = runtime_with(dir.path(), 16, Duration::from_nanos(1));
    let mut a = artifact("car", "car");
    // New bytes, so the compilation cache cannot answer at once.
    a.bytes = Arc::new(ctxhost_tests::with_marker(
        &a.bytes,
        &uuid::Uuid::new_v4().to_string(),
    ));
    match rt.load_all(vec![a]).await {
        Err(LoadError::CompileTimeout { context, .. }) => assert_eq!(context, "car"),
        other => panic!("expected a compilation timeout, got {other:?}"),
    }
}
