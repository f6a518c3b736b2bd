//! Instantiation: the per-invocation cost of a fresh, isolated instance of each plugin, and the
//! overhead of a typed call into a fresh instance (the shape of a call between contexts),
//! measured inside this process on an engine built like the host's (pooling allocator,
//! copy-on-write memory images, epoch interruption, `concurrency_support(false)`, the same
//! pool size and memory cap), with a linker like the host's: WASI p2, the wasi:http types,
//! and stand-ins for the platform imports (a store that is always empty, no-op events, config
//! and log); `order`'s import of `ctxhost:rental/payments` traps if called.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{
    Component, ComponentExportIndex, Instance, InstancePre, Linker, ResourceTable, Val,
};
use wasmtime::{Engine, Store, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The host's defaults: pool size and per-instance memory cap.
const MAX_INSTANCES: u32 = 1_000;
const MEMORY_LIMIT: usize = 128 * 1024 * 1024;
/// Target of the mission, microseconds per fresh instance.
const TARGET_US: f64 = 20.0;

/// Store data like the host's per-invocation state: a minimal WASI, HTTP, limits.
struct Data {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl Data {
    fn new() -> Self {
        Data {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .trap_on_grow_failure(true)
                .build(),
        }
    }
}

impl WasiView for Data {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Data {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

/// The host's own engine configuration.
fn engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(&ctxhost::engine_config(
        MAX_INSTANCES,
        MEMORY_LIMIT,
    ))?)
}

/// `ok(value)` of a `result`.
fn ok(v: Option<Val>) -> Val {
    Val::Result(Ok(v.map(Box::new)))
}

/// Stand-ins for the platform imports: an empty store, accepted events, no configuration.
fn add_platform_stubs(linker: &mut Linker<Data>) -> anyhow::Result<()> {
    let mut store = linker.instance("ctxhost:platform/store@0.1.0")?;
    store.func_new("get", |_, _, _, r| {
        r[0] = ok(Some(Val::Option(None)));
        Ok(())
    })?;
    for name in ["put", "delete"] {
        store.func_new(name, |_, _, _, r| {
            r[0] = ok(None);
            Ok(())
        })?;
    }
    for name in ["scan-prefix", "scan-range"] {
        store.func_new(name, |_, _, _, r| {
            r[0] = ok(Some(Val::List(Vec::new())));
            Ok(())
        })?;
    }
    store.func_new("next-id", |_, _, _, r| {
        r[0] = ok(Some(Val::U64(1)));
        Ok(())
    })?;
    linker
        .instance("ctxhost:platform/events@0.1.0")?
        .func_new("publish", |_, _, _, r| {
            r[0] = ok(None);
            Ok(())
        })?;
    let mut config = linker.instance("ctxhost:platform/config@0.1.0")?;
    config.func_new("get", |_, _, _, r| {
        r[0] = Val::Option(None);
        Ok(())
    })?;
    config.func_new("get-all", |_, _, _, r| {
        r[0] = Val::List(Vec::new());
        Ok(())
    })?;
    linker
        .instance("ctxhost:platform/log@0.1.0")?
        .func_new("log", |_, _, _, _| Ok(()))?;
    // `order`'s import of payment: never called by instantiation, a trap if it were.
    let mut payments = linker.instance("ctxhost:rental/payments@0.1.0")?;
    for name in ["authorize", "get-payment"] {
        payments.func_new(name, |_, _, _, _| {
            Err(wasmtime::format_err!("not linked in this benchmark"))
        })?;
    }
    Ok(())
}

/// Compile `path` and prepare its instantiation once, as the host does at load.
fn prepare(engine: &Engine, path: &Path) -> anyhow::Result<(Component, InstancePre<Data>, f64)> {
    let t0 = Instant::now();
    let component = Component::from_file(engine, path)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {}", path.display()))?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut linker = Linker::<Data>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<_, WasiHttp>(
        &mut linker,
        &(&options).into(),
        <Data as WasiHttpView>::http,
    )?;
    add_platform_stubs(&mut linker)?;
    let pre = linker.instantiate_pre(&component)?;
    Ok((component, pre, compile_ms))
}

fn new_store(engine: &Engine) -> Store<Data> {
    let mut store = Store::new(engine, Data::new());
    store.limiter(|d| &mut d.limits);
    store.set_epoch_deadline(500);
    store
}

/// Timings in microseconds, sorted.
struct Timings(Vec<f64>);

impl Timings {
    fn new(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        Timings(v)
    }
    fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len().max(1) as f64
    }
    fn q(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() - 1) as f64 * q).round() as usize]
    }
}

/// Run `one` (which returns the microseconds it measured) for a warm-up, then until
/// `budget` is spent or `max` samples are taken.
async fn sample<F, Fut>(budget: Duration, max: usize, mut one: F) -> anyhow::Result<Timings>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    for _ in 0..200 {
        one().await?;
    }
    let start = Instant::now();
    let mut v = Vec::with_capacity(max);
    while v.len() < max && start.elapsed() < budget {
        v.push(one().await?);
    }
    Ok(Timings::new(v))
}

/// `payment.get-payment(1)` on `instance`, with dynamic values as the host forwards calls.
async fn get_payment(
    store: &mut Store<Data>,
    instance: Instance,
    func: ComponentExportIndex,
) -> anyhow::Result<()> {
    let f = instance
        .get_func(&mut *store, func)
        .context("no get-payment function")?;
    let mut results = [Val::Bool(false)];
    f.call_async(&mut *store, &[Val::U64(1)], &mut results)
        .await?;
    anyhow::ensure!(
        matches!(&results[0], Val::Result(Ok(_))),
        "get-payment answered {:?}",
        results[0]
    );
    Ok(())
}

fn us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// Run the instantiation benchmark and print its tables.
pub(crate) async fn run(plugin_dir: &Path, seconds: u64) -> anyhow::Result<()> {
    let engine = engine()?;
    let budget = Duration::from_secs_f64((seconds as f64 / 3.0).max(0.5));
    let max = 20_000;
    let mut plugins: Vec<(String, std::path::PathBuf)> = ["order", "payment", "car", "view"]
        .iter()
        .map(|n| (n.to_string(), plugin_dir.join(format!("{n}.wasm"))))
        .collect();
    let hello = plugin_dir.join("bench_hello.wasm");
    if hello.exists() {
        plugins.push(("bench-hello".into(), hello));
    }

    let mut rows = Vec::new();
    let mut payment = None;
    for (name, path) in &plugins {
        eprintln!("instantiate: compiling {}", path.display());
        let (component, pre, compile_ms) = prepare(&engine, path)?;
        let size = std::fs::metadata(path)?.len();
        let (engine, pre) = (&engine, &pre);
        let fresh = sample(budget, max, move || async move {
            let t0 = Instant::now();
            let mut store = new_store(engine);
            let _instance = pre.instantiate_async(&mut store).await?;
            let t = us(t0);
            drop(store);
            Ok(t)
        })
        .await?;
        let with_drop = sample(budget, max, move || async move {
            let t0 = Instant::now();
            let mut store = new_store(engine);
            let _instance = pre.instantiate_async(&mut store).await?;
            drop(store);
            Ok(us(t0))
        })
        .await?;
        if name == "payment" {
            payment = Some((component, pre.clone()));
        }
        rows.push((name.clone(), size, compile_ms, fresh, with_drop));
    }

    println!(
        "\n## Instantiation: fresh Store + `InstancePre::instantiate_async` per invocation (engine as the host's; {}-sample cap, {:.1} s budget per measure)\n",
        max,
        budget.as_secs_f64()
    );
    println!(
        "| plugin | size KiB | compile ms | mean us | median us | p99 us | median with drop us | median / target ({TARGET_US:.0} us) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, size, compile_ms, fresh, with_drop) in &rows {
        println!(
            "| {name} | {} | {compile_ms:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            size / 1024,
            fresh.mean(),
            fresh.q(0.5),
            fresh.q(0.99),
            with_drop.q(0.5),
            fresh.q(0.5) / TARGET_US
        );
    }

    // A typed call into a fresh instance: what the host does for each call between contexts
    // (`order` -> `payment.get-payment`), minus the host's routing and policy checks.
    let Some((component, pre)) = payment else {
        return Ok(());
    };
    let iface = component
        .get_export_index(None, "ctxhost:rental/payments@0.1.0")
        .context("payment exports no ctxhost:rental/payments")?;
    let func: ComponentExportIndex = component
        .get_export_index(Some(&iface), "get-payment")
        .context("payment exports no get-payment")?;
    let (engine, pre) = (&engine, &pre);
    let fresh_call = sample(budget, max, move || async move {
        let t0 = Instant::now();
        let mut store = new_store(engine);
        let instance = pre.instantiate_async(&mut store).await?;
        get_payment(&mut store, instance, func).await?;
        drop(store);
        Ok(us(t0))
    })
    .await?;
    let mut warm_store = new_store(engine);
    let warm_instance = pre.instantiate_async(&mut warm_store).await?;
    for _ in 0..200 {
        get_payment(&mut warm_store, warm_instance, func).await?;
    }
    let (start, mut warm) = (Instant::now(), Vec::with_capacity(max));
    while warm.len() < max && start.elapsed() < budget {
        let t0 = Instant::now();
        get_payment(&mut warm_store, warm_instance, func).await?;
        warm.push(us(t0));
    }
    let warm_call = Timings::new(warm);
    let fresh_payment = rows
        .iter()
        .find(|r| r.0 == "payment")
        .map(|r| r.4.q(0.5))
        .unwrap_or(f64::NAN);
    println!(
        "\n## Typed call between contexts: `payment.get-payment(1)` with dynamic values (`Val`), the way the host forwards a call\n"
    );
    println!("| measure | mean us | median us | p99 us |");
    println!("| --- | --- | --- | --- |");
    for (name, t) in [
        ("fresh instance + call + drop", &fresh_call),
        (
            "call on a warm instance (call overhead + guest work)",
            &warm_call,
        ),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            t.mean(),
            t.q(0.5),
            t.q(0.99)
        );
    }
    println!(
        "\nper typed call beyond a fresh instance (median, fresh instance + call + drop minus instantiate + drop): {:.1} us",
        fresh_call.q(0.5) - fresh_payment
    );
    Ok(())
}
