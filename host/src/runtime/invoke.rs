//! Running invocations: each one gets a fresh instance in its own `Store`, under a CPU
//! deadline and a memory cap, writing into the unit of work it is given. A trap fails only
//! that invocation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use wasmtime::component::{ComponentExportIndex, Val};
use wasmtime::{Store, StoreContextMut, Trap};

use super::context::LoadedContext;
use super::engine::{Runtime, Unhealthy};
use super::linking::{host_error, is_err};
use super::store_data::{Invocation, SharedUnit};
use super::warm::Warm;
use crate::bindings::{Manifest, types::Event};
use crate::bus::Envelope;
use crate::resilience::Failure;
use wasmtime_wasi_http::WasiHttpView;

/// Largest response body a component may produce.
const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// A complete HTTP answer of a component.
#[derive(Debug)]
pub struct HttpReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why an invocation produced no answer. Messages name the context.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    #[error("{context} trapped: {message}")]
    Trap { context: String, message: String },
    #[error("{context} exceeded its deadline of {deadline_ms} ms")]
    Deadline { context: String, deadline_ms: u128 },
    #[error("{context}: {message}")]
    Host { context: String, message: String },
}

impl InvokeError {
    fn host(ctx: &LoadedContext, message: impl Into<String>) -> Self {
        InvokeError::Host {
            context: ctx.name.to_string(),
            message: message.into(),
        }
    }
}

impl Runtime {
    fn new_store(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        trace_id: Arc<str>,
        depth: u32,
    ) -> Store<Invocation> {
        let limits = ctx.limits;
        let data = Invocation::new(self.clone(), ctx, unit, trace_id, depth);
        let mut store = Store::new(&self.0.engine, data);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks(limits.deadline));
        store
    }

    fn classify(&self, ctx: &LoadedContext, e: wasmtime::Error) -> InvokeError {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return InvokeError::Deadline {
                context: ctx.name.to_string(),
                deadline_ms: ctx.limits.deadline.as_millis(),
            };
        }
        let message = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => e
                .root_cause()
                .to_string()
                .lines()
                .next()
                .unwrap_or("unknown failure")
                .to_string(),
        };
        tracing::debug!(context = %ctx.name, error = ?e, "invocation failed");
        InvokeError::Trap {
            context: ctx.name.to_string(),
            message,
        }
    }

    /// Wall-clock backstop: epochs do not interrupt a guest blocked in a host call.
    fn wall_limit(ctx: &LoadedContext) -> Duration {
        ctx.limits.deadline * 2 + Duration::from_secs(1)
    }

    /// Record an invocation's outcome; report the version when it just became unhealthy.
    /// Run one invocation of `ctx`: counted in flight while it runs, its outcome recorded
    /// in the version's health.
    async fn tracked<T>(
        &self,
        ctx: &LoadedContext,
        work: impl Future<Output = Result<T, InvokeError>>,
    ) -> Result<T, InvokeError> {
        let _in_flight = ctx.enter();
        let result = work.await;
        self.record(ctx, result.is_err());
        result
    }

    fn record(&self, ctx: &LoadedContext, failed: bool) {
        if ctx.health.record(failed) {
            let (fails, total) = ctx.health.window();
            tracing::error!(
                context = %ctx.name,
                version = %ctx.short_id(),
                fails,
                total,
                "context is unhealthy: its invocations keep failing"
            );
            let _ = self.0.unhealthy_tx.send(Unhealthy {
                context: ctx.name.to_string(),
                digest: ctx.digest.clone(),
            });
        }
    }

    /// Serve one HTTP request with a fresh instance of `ctx`.
    pub async fn invoke_http(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        trace_id: Arc<str>,
        request: http::Request<Full<Bytes>>,
    ) -> Result<HttpReply, InvokeError> {
        let work = self.invoke_http_inner(ctx.clone(), unit, trace_id, request);
        self.tracked(&ctx, work).await
    }

    async fn invoke_http_inner(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        trace_id: Arc<str>,
        request: http::Request<Full<Bytes>>,
    ) -> Result<HttpReply, InvokeError> {
        let mut warm = self.instance(&ctx, unit, trace_id, 0).await?;
        let proxy = ctx
            .proxy
            .load(&mut warm.store, &warm.instance)
            .map_err(|e| InvokeError::host(&ctx, format!("{e:#}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = warm
            .store
            .data_mut()
            .http()
            .new_incoming_request(
                wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
                request,
            )
            .map_err(|e| InvokeError::host(&ctx, format!("{e:#}")))?;
        let out = warm
            .store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| InvokeError::host(&ctx, format!("{e:#}")))?;
        // The guest writes its body while the host drains it, both in this task. A failed
        // call ends the wait at once (the response outparam may still sit in its store).
        let collect = async {
            match rx.await {
                Ok(Ok(resp)) => {
                    let (parts, body) = resp.into_parts();
                    match Limited::new(body, MAX_RESPONSE_BODY).collect().await {
                        Ok(c) => Ok(HttpReply {
                            status: parts.status,
                            headers: parts.headers,
                            body: c.to_bytes(),
                        }),
                        Err(e) => Err(format!("unreadable response body: {e}")),
                    }
                }
                Ok(Err(code)) => Err(format!("answered with an error: {code:?}")),
                Err(_) => Err("returned without setting a response".to_string()),
            }
        };
        tokio::pin!(collect);
        let mut reply = None;
        let call = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut warm.store, req, out);
        let run = async {
            tokio::pin!(call);
            loop {
                tokio::select! {
                    biased;
                    called = &mut call => return called,
                    r = &mut collect, if reply.is_none() => reply = Some(r),
                }
            }
        };
        // On timeout the call is dropped mid-run; so is its store, with `warm`.
        let deadline = tokio::time::Instant::now() + Self::wall_limit(&ctx);
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.classify(&ctx, e)),
            Err(_) => return Err(overran(&ctx)),
        }
        // The guest returned cleanly and what it wrote is in the host's channel: the
        // instance can serve the next invocation while the rest of the body is drained.
        // Holding it until then kept one instance per waiting connection.
        self.recycle(&ctx, warm);
        let reply = match reply {
            Some(r) => r,
            None => tokio::time::timeout_at(deadline, collect)
                .await
                .map_err(|_| overran(&ctx))?,
        };
        reply.map_err(|m| InvokeError::host(&ctx, m))
    }

    /// An instance of `ctx` bound to one invocation: an idle one when the context reuses
    /// instances and one is free, else a fresh one.
    async fn instance(
        &self,
        ctx: &Arc<LoadedContext>,
        unit: SharedUnit,
        trace_id: Arc<str>,
        depth: u32,
    ) -> Result<Warm, InvokeError> {
        if ctx.limits.instance_reuse > 1
            && let Some(mut warm) = ctx.warm.take()
        {
            warm.store.data_mut().bind(unit, trace_id, depth);
            warm.store
                .set_epoch_deadline(self.deadline_ticks(ctx.limits.deadline));
            return Ok(warm);
        }
        let mut store = self.new_store(ctx.clone(), unit, trace_id, depth);
        let instance = ctx
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| InvokeError::host(ctx, format!("cannot instantiate: {e:#}")))?;
        ctx.warm.created_one();
        Ok(Warm {
            store,
            instance,
            uses: 0,
        })
    }

    /// After an invocation that succeeded: release its unit of work, and keep the instance
    /// for another one when the context allows and the guest left no host resource behind.
    /// A failed invocation's instance is simply dropped (a trap poisons its store).
    fn recycle(&self, ctx: &LoadedContext, mut warm: Warm) {
        warm.uses += 1;
        let clean = warm.store.data_mut().release();
        if !clean {
            tracing::debug!(context = %ctx.name, "instance left host resources open: not reused");
        } else if warm.uses < ctx.limits.instance_reuse {
            ctx.warm.put(warm);
        }
    }

    /// Deliver one event to `ctx`'s `subscriber.handle`.
    pub async fn invoke_handler(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        event: &Envelope,
    ) -> Result<Result<(), String>, InvokeError> {
        let work = self.invoke_handler_inner(ctx.clone(), unit, event);
        self.tracked(&ctx, work).await
    }

    async fn invoke_handler_inner(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        event: &Envelope,
    ) -> Result<Result<(), String>, InvokeError> {
        let trace: Arc<str> = Arc::from(event.traceid.as_str());
        let arg = Event {
            id: event.id.clone(),
            source: event.source.clone(),
            type_: event.event_type.clone(),
            time: event.time.clone(),
            correlation_id: event.correlationid.clone(),
            trace_id: event.traceid.clone(),
            data_content_type: event.datacontenttype.clone(),
            data: event.data.clone(),
        };
        let fut = async {
            let mut warm = self.instance(&ctx, unit, trace, 0).await?;
            let platform = ctx
                .platform
                .load(&mut warm.store, &warm.instance)
                .map_err(|e| InvokeError::host(&ctx, format!("{e:#}")))?;
            let outcome = platform
                .ctxhost_platform_subscriber()
                .call_handle(&mut warm.store, &arg)
                .await
                .map_err(|e| self.classify(&ctx, e))?;
            self.recycle(&ctx, warm);
            Ok(outcome)
        };
        within(&ctx, Self::wall_limit(&ctx), fut).await
    }

    /// A fresh instance of `ctx` in `store`, with its platform exports looked up.
    async fn platform_instance(
        &self,
        ctx: &LoadedContext,
        store: &mut Store<Invocation>,
    ) -> Result<crate::bindings::Platform, InvokeError> {
        let instance = ctx
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(|e| InvokeError::host(ctx, format!("cannot instantiate: {e:#}")))?;
        ctx.platform
            .load(&mut *store, &instance)
            .map_err(|e| InvokeError::host(ctx, format!("{e:#}")))
    }

    /// Run `ctx`'s readiness check.
    pub(crate) async fn invoke_ready(
        &self,
        ctx: Arc<LoadedContext>,
        unit: crate::state::UnitOfWork,
    ) -> Result<Result<(), String>, InvokeError> {
        let unit = Arc::new(std::sync::Mutex::new(unit));
        let mut store = self.new_store(ctx.clone(), unit, Arc::from("ready"), 0);
        let fut = async {
            let platform = self.platform_instance(&ctx, &mut store).await?;
            platform
                .ctxhost_platform_context()
                .call_ready(&mut store)
                .await
                .map_err(|e| self.classify(&ctx, e))
        };
        within(&ctx, Self::wall_limit(&ctx), fut).await
    }

    /// Ask `ctx` for its manifest.
    pub(crate) async fn invoke_describe(
        &self,
        ctx: Arc<LoadedContext>,
        unit: crate::state::UnitOfWork,
    ) -> Result<Manifest, InvokeError> {
        let unit = Arc::new(std::sync::Mutex::new(unit));
        let mut store = self.new_store(ctx.clone(), unit, Arc::from("describe"), 0);
        let platform = self.platform_instance(&ctx, &mut store).await?;
        platform
            .ctxhost_platform_context()
            .call_describe(&mut store)
            .await
            .map_err(|e| self.classify(&ctx, e))
    }

    /// Run `index` of `ctx` with dynamic values, inside the caller's unit of work.
    async fn call_export(
        &self,
        ctx: Arc<LoadedContext>,
        site: CallSite,
        index: ComponentExportIndex,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), InvokeError> {
        let work = self.call_export_inner(ctx.clone(), site, index, params, results);
        self.tracked(&ctx, work).await
    }

    async fn call_export_inner(
        &self,
        ctx: Arc<LoadedContext>,
        site: CallSite,
        index: ComponentExportIndex,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), InvokeError> {
        let wall = site.wall;
        let fut = async {
            let mut warm = self
                .instance(&ctx, site.unit, site.trace_id, site.depth)
                .await?;
            warm.store
                .set_epoch_deadline(self.deadline_ticks(site.deadline.min(ctx.limits.deadline)));
            let func = warm
                .instance
                .get_func(&mut warm.store, index)
                .ok_or_else(|| InvokeError::host(&ctx, "export vanished"))?;
            func.call_async(&mut warm.store, params, results)
                .await
                .map_err(|e| self.classify(&ctx, e))?;
            self.recycle(&ctx, warm);
            Ok(())
        };
        within(&ctx, wall, fut).await
    }
}

/// The error of an invocation stopped by its wall-clock backstop.
fn overran(ctx: &LoadedContext) -> InvokeError {
    InvokeError::Deadline {
        context: ctx.name.to_string(),
        deadline_ms: ctx.limits.deadline.as_millis(),
    }
}

/// `fut` under a wall-clock limit: epochs do not interrupt a guest blocked in a host call.
async fn within<T>(
    ctx: &LoadedContext,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, InvokeError>>,
) -> Result<T, InvokeError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(InvokeError::Deadline {
            context: ctx.name.to_string(),
            deadline_ms: limit.as_millis(),
        })
    })
}

/// Where a call between contexts runs: the caller's unit of work and trace, one level deeper.
struct CallSite {
    unit: SharedUnit,
    trace_id: Arc<str>,
    depth: u32,
    /// CPU deadline of the callee (never above its own) and wall-clock limit of the call.
    deadline: Duration,
    wall: Duration,
}

/// The host side of an import linked to another context: run the provider's export in the
/// caller's unit of work; turn every failure the host sees into the typed `host` error and
/// undo whatever the callee wrote or published when it fails.
pub(crate) async fn forward_call(
    store: StoreContextMut<'_, Invocation>,
    iface: &str,
    func: &str,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let data = store.data();
    let runtime = data.runtime.clone();
    let unit = data.unit()?.clone();
    let trace = data.trace_id.clone();
    let depth = data.depth + 1;
    let caller = data.context.name.clone();
    if results.len() != 1 {
        wasmtime::bail!("{iface}.{func}: cross-context functions return exactly one result");
    }
    if depth > runtime.settings().max_call_depth {
        results[0] = host_error("rejected", format!("call depth over {}", depth - 1));
        return Ok(());
    }
    let Some(provider) = runtime.registry().provider(iface) else {
        results[0] = host_error("unavailable", format!("no context provides {iface}"));
        return Ok(());
    };
    let Some(index) = provider
        .functions
        .get(iface)
        .and_then(|m| m.get(func))
        .copied()
    else {
        results[0] = host_error(
            "unavailable",
            format!("{} does not export {iface}.{func}", provider.name),
        );
        return Ok(());
    };
    // Timeout, breaker, bulkhead and retries of the target (see `crate::resilience`); each
    // attempt is rolled back to its own savepoint when it fails.
    let target = runtime.resilience().target(&provider.name);
    let (deadline, wall) = (target.policy().deadline, target.policy().timeout);
    let started = std::time::Instant::now();
    let mut failed = true;
    let mut call = match target.begin(func).await {
        Ok(call) => call,
        Err(refused) => {
            tracing::debug!(caller = %caller, callee = %provider.name, call = %format!("{iface}.{func}"), trace_id = %trace, reason = %refused, "call refused");
            results[0] = host_error("rejected", refused.to_string());
            return Ok(());
        }
    };
    while let Some(attempt) = call.attempt() {
        let savepoint = lock(&unit).savepoint();
        let outcome = runtime
            .call_export(
                provider.clone(),
                CallSite {
                    unit: unit.clone(),
                    trace_id: trace.clone(),
                    depth,
                    deadline,
                    wall,
                },
                index,
                params,
                results,
            )
            .await;
        let failure = match outcome {
            Ok(()) => {
                failed = is_err(results);
                None
            }
            Err(e) => {
                let (kind, failure) = match &e {
                    InvokeError::Deadline { .. } => ("timeout", Failure::Timeout),
                    InvokeError::Trap { .. } => ("trapped", Failure::Trapped),
                    InvokeError::Host { .. } => ("unavailable", Failure::Unavailable),
                };
                tracing::warn!(caller = %caller, callee = %provider.name, call = %format!("{iface}.{func}"), attempt, trace_id = %trace, error = %e, "call failed");
                results[0] = host_error(kind, e.to_string());
                failed = true;
                Some(failure)
            }
        };
        if failed {
            lock(&unit).rollback_to(savepoint);
        }
        match call.finish(failure) {
            Some(wait) => tokio::time::sleep(wait).await,
            None => break,
        }
    }
    drop(call);
    tracing::debug!(caller = %caller, callee = %provider.name, call = %format!("{iface}.{func}"), failed, micros = started.elapsed().as_micros() as u64, "call");
    Ok(())
}

/// Lock a unit of work; a poisoned lock still holds a consistent unit (the panicking holder
/// was host code between two whole operations).
pub fn lock(unit: &SharedUnit) -> std::sync::MutexGuard<'_, crate::state::UnitOfWork> {
    unit.lock().unwrap_or_else(|p| p.into_inner())
}
