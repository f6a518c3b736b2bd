//! Calls between contexts: the one place a context calls another.
//!
//! A context's import of another context's interface is defined (see `linking`) as a host
//! function that lands in [`forward_call`]. It runs the provider's export in the caller's
//! unit of work, one level deeper, through the resilience module's one call path
//! ([`crate::resilience::Target::run`]: breaker, bulkhead, timeout, retries of idempotent
//! functions), undoing each failed attempt to its savepoint. What the host could not get an
//! answer for reaches the caller as the `host(call-error)` case of the function's result
//! (the call-error ABI below), never as a trap of the caller.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::types::Type;
use wasmtime::component::{ComponentExportIndex, Val};

use super::context::LoadedContext;
use super::engine::Runtime;
use super::invoke::{CallSite, InvokeError, resume_deadline};
use super::store_data::Invocation;
use super::store_data::Scope;
use crate::resilience::{Attempt, Failure};
use crate::state::SharedUnit;
use crate::sync::lock;
use crate::telemetry::trace;
use crate::telemetry::{Outcome, metrics};
use tracing::Instrument as _;

/// Kinds of host failure, as cases of `ctxhost:platform/types.call-error`.
pub(crate) const CALL_ERROR_CASES: [&str; 4] = ["unavailable", "trapped", "timeout", "rejected"];

/// Why a cross-context function's results do not follow the call-error ABI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AbiError {
    #[error("must return `result<T, E>`")]
    NotAResult,
    #[error("the error type of its result must be a variant with a case `host(call-error)`")]
    ErrorNotAVariant,
    #[error("its error variant has no case `host(call-error)`")]
    NoHostCase,
    #[error("the case `host` must carry a `call-error`")]
    HostCaseNotAVariant,
    #[error("`call-error` lacks the case `{0}(string)`")]
    MissingKind(&'static str),
}

/// Check the call-error ABI of a cross-context function's results: exactly one
/// `result<T, E>` whose `E` is a variant with a case `host(call-error)`, `call-error` having
/// a `string` case for each of [`CALL_ERROR_CASES`].
pub(crate) fn check_abi(results: &[Type]) -> Result<(), AbiError> {
    let [Type::Result(r)] = results else {
        return Err(AbiError::NotAResult);
    };
    let Some(Type::Variant(err)) = r.err() else {
        return Err(AbiError::ErrorNotAVariant);
    };
    let Some(host) = err.cases().find(|c| c.name == "host") else {
        return Err(AbiError::NoHostCase);
    };
    let Some(Type::Variant(call_error)) = host.ty else {
        return Err(AbiError::HostCaseNotAVariant);
    };
    for kind in CALL_ERROR_CASES {
        match call_error.cases().find(|c| c.name == kind) {
            Some(c) if matches!(c.ty, Some(Type::String)) => {}
            _ => return Err(AbiError::MissingKind(kind)),
        }
    }
    Ok(())
}

/// The value returned to a caller when the host could not get an answer: `err(host(kind(msg)))`.
pub(crate) fn host_error(kind: &str, message: String) -> Val {
    Val::Result(Err(Some(Box::new(Val::Variant(
        "host".into(),
        Some(Box::new(Val::Variant(
            kind.into(),
            Some(Box::new(Val::String(message))),
        ))),
    )))))
}

/// True when a returned value is the `err` case of a result.
pub(crate) fn is_err(results: &[Val]) -> bool {
    matches!(results.first(), Some(Val::Result(Err(_))))
}

/// The call-error kind and the resilience failure of an invocation error.
fn failure_of(e: &InvokeError) -> (&'static str, Failure) {
    match e {
        InvokeError::Deadline { .. } | InvokeError::Stalled { .. } => ("timeout", Failure::Timeout),
        InvokeError::Trap { .. } => ("trapped", Failure::Trapped),
        InvokeError::Capacity { .. } | InvokeError::Host { .. } => {
            ("unavailable", Failure::Unavailable)
        }
    }
}

/// The host side of an import linked to another context: run the provider's export in the
/// caller's unit of work; turn every failure the host sees into the typed `host` error and
/// undo whatever the callee wrote or published when it fails.
pub(crate) async fn forward_call(
    mut store: StoreContextMut<'_, Invocation>,
    iface: &str,
    func: &str,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let data = store.data();
    let runtime = data.runtime.clone();
    let unit = data.unit()?.clone();
    let scope = Scope {
        trace_id: data.trace_id().clone(),
        principal: data.principal().cloned(),
    };
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
    let call = Call {
        runtime: &runtime,
        provider: &provider,
        index,
        caller: &caller,
        iface,
        func,
        unit: &unit,
        scope: &scope,
        depth,
    };
    let started = tokio::time::Instant::now();
    let span = trace::call(&caller, iface, func, &provider.name);
    let outcome = call.run(params, results).instrument(span.clone()).await;
    trace::record_call(&span, outcome != Outcome::ok);
    // The caller's deadline counts its own code, not the time the callee took.
    resume_deadline(&mut store, started);
    let took = started.elapsed();
    metrics().call(&caller, &provider.name, func, outcome, took);
    tracing::debug!(caller = %caller, callee = %provider.name, call = %format!("{iface}.{func}"), outcome = ?outcome, micros = took.as_micros() as u64, "call");
    Ok(())
}

/// The attempts of one call, for [`crate::resilience::Target::run`].
struct Attempts<'a> {
    call: &'a Call<'a>,
    deadline: Duration,
    wall: Duration,
    params: &'a [Val],
    results: &'a mut [Val],
}

impl Attempt for Attempts<'_> {
    fn run(&mut self, n: u32) -> impl Future<Output = Option<Failure>> + Send {
        self.call
            .attempt(n, self.deadline, self.wall, self.params, self.results)
    }
}

/// One resolved call: who calls which export of which provider, in which unit of work.
struct Call<'a> {
    runtime: &'a Runtime,
    provider: &'a Arc<LoadedContext>,
    index: ComponentExportIndex,
    caller: &'a str,
    iface: &'a str,
    func: &'a str,
    unit: &'a SharedUnit,
    scope: &'a Scope,
    depth: u32,
}

impl Call<'_> {
    /// Run the call under the target's policies; leaves the answer (or the host error) in
    /// `results` and tells how it ended for the caller (`ok` unless it got an `err`).
    async fn run(&self, params: &[Val], results: &mut [Val]) -> Outcome {
        let target = self.runtime.resilience().target(&self.provider.name);
        let mut attempts = Attempts {
            call: self,
            deadline: target.policy().deadline,
            wall: target.policy().timeout,
            params,
            results,
        };
        let outcome = target.run(self.func, &mut attempts).await;
        match outcome {
            Ok(None) if is_err(results) => Outcome::error,
            Ok(None) => Outcome::ok,
            Ok(Some(Failure::Trapped)) => Outcome::trap,
            Ok(Some(Failure::Timeout)) => Outcome::deadline,
            Ok(Some(Failure::Unavailable)) => Outcome::error,
            Err(refused) => {
                tracing::debug!(caller = %self.caller, callee = %self.provider.name, call = %format!("{}.{}", self.iface, self.func), trace_id = %self.scope.trace_id, reason = %refused, "call refused");
                results[0] = host_error("rejected", refused.to_string());
                Outcome::refused
            }
        }
    }

    /// Attempt `n`: run the export from a savepoint of the caller's unit; roll back to it
    /// when the attempt failed or the callee answered `err`. Returns how the host saw it
    /// fail, if it did (a callee's own `err` is an answer, not a failure).
    async fn attempt(
        &self,
        n: u32,
        deadline: Duration,
        wall: Duration,
        params: &[Val],
        results: &mut [Val],
    ) -> Option<Failure> {
        let savepoint = lock(self.unit).savepoint();
        let site = CallSite {
            unit: self.unit.clone(),
            scope: self.scope.clone(),
            depth: self.depth,
            deadline,
            wall,
        };
        let outcome = self
            .runtime
            .call_export(self.provider.clone(), site, self.index, params, results)
            .await;
        let (failed, failure) = match outcome {
            Ok(()) => (is_err(results), None),
            Err(e) => {
                let (kind, failure) = failure_of(&e);
                tracing::warn!(caller = %self.caller, callee = %self.provider.name, call = %format!("{}.{}", self.iface, self.func), attempt = n, trace_id = %self.scope.trace_id, error = %e, "call failed");
                results[0] = host_error(kind, e.to_string());
                (true, Some(failure))
            }
        };
        if failed {
            lock(self.unit).rollback_to(savepoint);
        }
        failure
    }
}
