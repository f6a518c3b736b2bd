//! Running invocations (an HTTP request, an event delivery, a call from another context,
//! the load-time `describe` and `ready`): each runs in an instance of its own `Store` (a
//! fresh one, or an idle one of the same version where the context's `instance_reuse`
//! allows), under a CPU deadline, a wall-clock backstop and a memory cap, writing into the
//! unit of work it is given. A trap fails only that invocation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use wasmtime::component::{ComponentExportIndex, Val};
use wasmtime::{Store, Trap};

use super::context::LoadedContext;
use super::engine::{Runtime, Unhealthy};
use super::store_data::{Invocation, Scope};
use super::warm::Warm;
use crate::bindings::access::RouteRule;
use crate::bindings::{Manifest, types::Event};
use crate::bus::Envelope;
use crate::identity::Principal;
use crate::state::{SharedUnit, UnitOfWork, share};
use crate::telemetry::trace;
use crate::telemetry::{Kind, Outcome, metrics};
use tracing::Instrument as _;
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

/// The error behind an invocation that failed, kept whole for the log and the source chain.
pub(crate) type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A wasmtime error as a [`Cause`], its chain kept.
pub(super) fn cause(e: wasmtime::Error) -> Cause {
    Cause::from(Box::<dyn std::error::Error + Send + Sync>::from(e))
}

/// What an invocation was doing when the host failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Creating the instance.
    Instantiate,
    /// Looking up the component's exports.
    Exports,
    /// Handing the HTTP request to the guest.
    Request,
    /// Reading the guest's HTTP answer.
    Response,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Instantiate => "instantiate",
            Stage::Exports => "look up exports",
            Stage::Request => "pass the request",
            Stage::Response => "read the response",
        })
    }
}

/// Why an invocation produced no answer. Every variant names the context and its version
/// (`<name>@<digest prefix>`). Only the guest's own faults ([`InvokeError::is_guest_fault`])
/// count against the version's health: the host being busy never rolls a version back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The guest's call failed: a trap (panic, `unreachable`, out of bounds), a limit it ran
    /// into (memory cap), or an error a host function raised on its behalf.
    #[error("{context} trapped: {message}")]
    Trap {
        context: Arc<str>,
        version: String,
        /// The trap, or the root cause, in one line.
        message: String,
        #[source]
        source: Cause,
    },
    /// The guest's own code ran past its deadline: wall-clock time while guest code runs,
    /// checked every epoch tick; time spent waiting on the host (calls to other contexts)
    /// does not count.
    #[error("{context} exceeded its deadline of {deadline_ms} ms")]
    Deadline {
        context: Arc<str>,
        version: String,
        deadline_ms: u128,
    },
    /// The invocation, waiting on the host (another context, a slow machine), passed the
    /// wall-clock backstop that bounds it as a whole.
    #[error("{context} did not finish within {limit_ms} ms")]
    Stalled {
        context: Arc<str>,
        version: String,
        limit_ms: u128,
    },
    /// No instance could be created: every slot of the instance pool is in use.
    #[error("{context}: no instance available, every slot of the instance pool is in use")]
    Capacity {
        context: Arc<str>,
        version: String,
        #[source]
        source: Cause,
    },
    /// The host could not run or finish the invocation.
    #[error("{context}: cannot {stage}: {source}")]
    Host {
        context: Arc<str>,
        version: String,
        stage: Stage,
        #[source]
        source: Cause,
    },
}

impl InvokeError {
    fn host(
        ctx: &LoadedContext,
        stage: Stage,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        InvokeError::Host {
            context: ctx.name.clone(),
            version: ctx.short_id(),
            stage,
            source: Cause::from(source.into()),
        }
    }

    fn deadline(ctx: &LoadedContext, limit: Duration) -> Self {
        InvokeError::Deadline {
            context: ctx.name.clone(),
            version: ctx.short_id(),
            deadline_ms: limit.as_millis(),
        }
    }

    fn stalled(ctx: &LoadedContext, limit: Duration) -> Self {
        InvokeError::Stalled {
            context: ctx.name.clone(),
            version: ctx.short_id(),
            limit_ms: limit.as_millis(),
        }
    }

    /// The context that failed.
    pub fn context(&self) -> &str {
        match self {
            InvokeError::Trap { context, .. }
            | InvokeError::Deadline { context, .. }
            | InvokeError::Stalled { context, .. }
            | InvokeError::Capacity { context, .. }
            | InvokeError::Host { context, .. } => context,
        }
    }

    /// Whether the guest caused the failure (a trap, its code past its deadline, no valid
    /// answer), as opposed to the host being unable to run it (pool exhausted, a wait on
    /// the host past the backstop, a host error). Only guest faults count against health.
    pub fn is_guest_fault(&self) -> bool {
        match self {
            InvokeError::Trap { .. } | InvokeError::Deadline { .. } => true,
            InvokeError::Host { stage, .. } => *stage == Stage::Response,
            InvokeError::Stalled { .. } | InvokeError::Capacity { .. } => false,
        }
    }
}

impl Runtime {
    fn new_store(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        scope: Scope,
        depth: u32,
    ) -> Store<Invocation> {
        let limits = ctx.limits;
        let data = Invocation::new(self.clone(), ctx, unit, scope, depth);
        let mut store = Store::new(&self.0.engine, data);
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store, limits.deadline);
        store
    }

    /// Give the guest code of `store`'s next invocation `deadline` to run.
    fn arm(&self, store: &mut Store<Invocation>, deadline: Duration) {
        store.data_mut().guest_deadline = tokio::time::Instant::now() + deadline;
        store.set_epoch_deadline(self.deadline_ticks(deadline));
    }

    /// Sort an instantiation failure: the pool is full (capacity), the guest's start code
    /// trapped (its fault), or the host failed.
    fn instantiation_failed(&self, ctx: &LoadedContext, e: wasmtime::Error) -> InvokeError {
        if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
            .is_some()
        {
            return InvokeError::Capacity {
                context: ctx.name.clone(),
                version: ctx.short_id(),
                source: cause(e),
            };
        }
        if e.downcast_ref::<Trap>().is_some() {
            return self.classify(ctx, e);
        }
        InvokeError::host(ctx, Stage::Instantiate, e)
    }

    /// Sort the error of a guest call: an epoch interrupt is the deadline, anything else
    /// failed the guest's call.
    fn classify(&self, ctx: &LoadedContext, e: wasmtime::Error) -> InvokeError {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return InvokeError::deadline(ctx, ctx.limits.deadline);
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
            context: ctx.name.clone(),
            version: ctx.short_id(),
            message,
            source: cause(e),
        }
    }

    /// Wall-clock backstop of a whole invocation: epochs do not interrupt a guest blocked in
    /// a host call.
    fn wall_limit(ctx: &LoadedContext) -> Duration {
        ctx.limits.deadline * 2 + Duration::from_secs(1)
    }

    /// Run one invocation of `ctx` in its span: counted in flight while it runs, its
    /// outcome recorded in the version's health.
    /// `answered_error` tells whether an answer is an error the guest gave (an HTTP 5xx, a
    /// handler's `err`), for the invocation metrics.
    async fn tracked<T>(
        &self,
        ctx: &LoadedContext,
        kind: Kind,
        work: impl Future<Output = Result<T, InvokeError>>,
        answered_error: impl FnOnce(&T) -> bool,
    ) -> Result<T, InvokeError> {
        let _in_flight = ctx.enter();
        let started = std::time::Instant::now();
        let span = trace::invocation(&ctx.name, || ctx.short_id(), kind_name(kind));
        let result = work.instrument(span.clone()).await;
        match &result {
            Ok(_) => self.record(ctx, false),
            Err(e) if e.is_guest_fault() => self.record(ctx, true),
            // The host could not run it: says nothing about the version.
            Err(_) => {}
        }
        if let Err(e) = &result {
            trace::record_error(&span, &e.to_string());
        }
        let outcome = match &result {
            Ok(t) if answered_error(t) => Outcome::error,
            Ok(_) => Outcome::ok,
            Err(e) => outcome_of(e),
        };
        metrics().invocation(&ctx.name, &ctx.version, kind, outcome, started.elapsed());
        result
    }

    /// Record an invocation's outcome; report the version when it just became unhealthy.
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

    /// Serve one HTTP request with an instance of `ctx`.
    pub async fn invoke_http(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        scope: Scope,
        request: http::Request<Full<Bytes>>,
    ) -> Result<HttpReply, InvokeError> {
        let work = self.invoke_http_inner(ctx.clone(), unit, scope, request);
        self.tracked(&ctx, Kind::http, work, |r| r.status.is_server_error())
            .await
    }

    async fn invoke_http_inner(
        &self,
        ctx: Arc<LoadedContext>,
        unit: SharedUnit,
        scope: Scope,
        request: http::Request<Full<Bytes>>,
    ) -> Result<HttpReply, InvokeError> {
        let mut warm = self.instance(&ctx, unit, scope, 0).await?;
        let proxy = ctx
            .proxy
            .load(&mut warm.store, &warm.instance)
            .map_err(|e| InvokeError::host(&ctx, Stage::Exports, e))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = warm
            .store
            .data_mut()
            .http()
            .new_incoming_request(
                wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
                request,
            )
            .map_err(|e| InvokeError::host(&ctx, Stage::Request, e))?;
        let out = warm
            .store
            .data_mut()
            .http()
            .new_response_outparam(tx)
            .map_err(|e| InvokeError::host(&ctx, Stage::Request, e))?;
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
            Err(_) => return Err(InvokeError::stalled(&ctx, Self::wall_limit(&ctx))),
        }
        // The guest returned cleanly and what it wrote is in the host's channel: the
        // instance can serve the next invocation while the rest of the body is drained.
        // Holding it until then kept one instance per waiting connection.
        self.recycle(&ctx, warm);
        let reply = match reply {
            Some(r) => r,
            None => tokio::time::timeout_at(deadline, collect)
                .await
                .map_err(|_| InvokeError::stalled(&ctx, Self::wall_limit(&ctx)))?,
        };
        reply.map_err(|m| InvokeError::host(&ctx, Stage::Response, m))
    }

    /// An instance of `ctx` bound to one invocation: an idle one when the context reuses
    /// instances and one is free, else a fresh one.
    async fn instance(
        &self,
        ctx: &Arc<LoadedContext>,
        unit: SharedUnit,
        scope: Scope,
        depth: u32,
    ) -> Result<Warm, InvokeError> {
        if ctx.limits.instance_reuse > 1
            && let Some(mut warm) = ctx.warm.take()
        {
            warm.store.data_mut().bind(unit, scope, depth);
            self.arm(&mut warm.store, ctx.limits.deadline);
            return Ok(warm);
        }
        let mut store = self.new_store(ctx.clone(), unit, scope, depth);
        let started = std::time::Instant::now();
        let instance = ctx
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| self.instantiation_failed(ctx, e))?;
        metrics().instantiated(&ctx.name, started.elapsed());
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
        self.tracked(&ctx, Kind::event, work, Result::is_err).await
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
            let scope = Scope {
                trace_id: trace,
                principal: (!event.authid.is_empty())
                    .then(|| Arc::new(Principal::of_event(&event.authid))),
            };
            let mut warm = self.instance(&ctx, unit, scope, 0).await?;
            let platform = ctx
                .platform
                .load(&mut warm.store, &warm.instance)
                .map_err(|e| InvokeError::host(&ctx, Stage::Exports, e))?;
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
            .map_err(|e| self.instantiation_failed(ctx, e))?;
        ctx.platform
            .load(&mut *store, &instance)
            .map_err(|e| InvokeError::host(ctx, Stage::Exports, e))
    }

    /// Run `ctx`'s readiness check.
    pub(crate) async fn invoke_ready(
        &self,
        ctx: Arc<LoadedContext>,
        unit: UnitOfWork,
    ) -> Result<Result<(), String>, InvokeError> {
        let unit = share(unit);
        let mut store = self.new_store(ctx.clone(), unit, Scope::anonymous(Arc::from("ready")), 0);
        let started = std::time::Instant::now();
        let fut = async {
            let platform = self.platform_instance(&ctx, &mut store).await?;
            platform
                .ctxhost_platform_context()
                .call_ready(&mut store)
                .await
                .map_err(|e| self.classify(&ctx, e))
        };
        let result = within(&ctx, Self::wall_limit(&ctx), fut).await;
        let outcome = match &result {
            Ok(Ok(())) => Outcome::ok,
            Ok(Err(_)) => Outcome::error,
            Err(e) => outcome_of(e),
        };
        metrics().invocation(
            &ctx.name,
            &ctx.version,
            Kind::ready,
            outcome,
            started.elapsed(),
        );
        result
    }

    /// Ask `ctx` for its manifest, and its access rules when it exports them.
    pub(crate) async fn invoke_describe(
        &self,
        ctx: Arc<LoadedContext>,
        unit: UnitOfWork,
    ) -> Result<(Manifest, Option<Vec<RouteRule>>), InvokeError> {
        let unit = share(unit);
        let mut store = self.new_store(
            ctx.clone(),
            unit,
            Scope::anonymous(Arc::from("describe")),
            0,
        );
        // Under the same backstop as every invocation: a `describe` blocked in a host call
        // must not hold a deployment (and the swap lock) or the start forever.
        let fut = async {
            let instance = ctx
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| self.instantiation_failed(&ctx, e))?;
            let platform = ctx
                .platform
                .load(&mut store, &instance)
                .map_err(|e| InvokeError::host(&ctx, Stage::Exports, e))?;
            let manifest = platform
                .ctxhost_platform_context()
                .call_describe(&mut store)
                .await
                .map_err(|e| self.classify(&ctx, e))?;
            let Some(indices) = &ctx.access_rules else {
                return Ok((manifest, None));
            };
            let access = indices
                .load(&mut store, &instance)
                .map_err(|e| InvokeError::host(&ctx, Stage::Exports, e))?;
            let rules = access
                .ctxhost_platform_access()
                .call_rules(&mut store)
                .await
                .map_err(|e| self.classify(&ctx, e))?;
            Ok((manifest, Some(rules)))
        };
        within(&ctx, Self::wall_limit(&ctx), fut).await
    }

    /// Run `index` of `ctx` with dynamic values, inside the caller's unit of work.
    pub(super) async fn call_export(
        &self,
        ctx: Arc<LoadedContext>,
        site: CallSite,
        index: ComponentExportIndex,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), InvokeError> {
        let work = self.call_export_inner(ctx.clone(), site, index, params, results);
        self.tracked(&ctx, Kind::call, work, |_| false).await
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
                .instance(&ctx, site.unit, site.scope, site.depth)
                .await?;
            self.arm(&mut warm.store, site.deadline.min(ctx.limits.deadline));
            let func = warm
                .instance
                .get_func(&mut warm.store, index)
                .ok_or_else(|| InvokeError::host(&ctx, Stage::Exports, "export vanished"))?;
            func.call_async(&mut warm.store, params, results)
                .await
                .map_err(|e| self.classify(&ctx, e))?;
            self.recycle(&ctx, warm);
            Ok(())
        };
        within(&ctx, wall, fut).await
    }
}

/// The metrics' outcome of a failed invocation.
fn outcome_of(e: &InvokeError) -> Outcome {
    match e {
        InvokeError::Trap { .. } => Outcome::trap,
        InvokeError::Deadline { .. } | InvokeError::Stalled { .. } => Outcome::deadline,
        InvokeError::Capacity { .. } => Outcome::refused,
        InvokeError::Host { .. } => Outcome::error,
    }
}

/// `fut` under a wall-clock limit: epochs do not interrupt a guest blocked in a host call.
async fn within<T>(
    ctx: &LoadedContext,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, InvokeError>>,
) -> Result<T, InvokeError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| Err(InvokeError::stalled(ctx, limit)))
}

/// After the guest of `store` waited `since` for the host (a call to another context), give
/// its code back the deadline it had left then: only time in guest code counts.
pub(super) fn resume_deadline(
    store: &mut wasmtime::StoreContextMut<'_, Invocation>,
    since: tokio::time::Instant,
) {
    let left = store.data().guest_deadline.saturating_duration_since(since);
    store.data_mut().guest_deadline = tokio::time::Instant::now() + left;
    let ticks = store.data().runtime.deadline_ticks(left);
    store.set_epoch_deadline(ticks);
}

/// Where a call between contexts runs: the caller's unit of work, trace and principal, one
/// level deeper.
pub(super) struct CallSite {
    pub(super) unit: SharedUnit,
    pub(super) scope: Scope,
    pub(super) depth: u32,
    /// CPU deadline of the callee (never above its own).
    pub(super) deadline: Duration,
    /// Wall-clock limit of one attempt.
    pub(super) wall: Duration,
}

/// The name of an invocation kind in traces.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::http => "http",
        Kind::event => "event",
        Kind::call => "call",
        Kind::ready => "ready",
    }
}
