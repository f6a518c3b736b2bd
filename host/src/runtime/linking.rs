//! Linking one context's imports to another context's exports.
//!
//! A context may import an interface that another context exports (for example
//! `ctxhost:rental/payments`). The host checks at load that both sides agree on every
//! function's type and that each function returns `result<T, E>` with a `host(call-error)`
//! case in `E`, then defines the import with a dynamic host function that forwards the call
//! to a fresh instance of the current provider (see `calls`).

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, Linker, Val};

use super::store_data::Invocation;

/// Interfaces the host itself provides or calls: never linked between contexts.
pub(crate) fn is_platform(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("ctxhost:platform/")
}

/// The cross-context interfaces a component imports or exports, with their functions.
pub(crate) fn interfaces(
    engine: &Engine,
    component: &Component,
    exports: bool,
) -> Vec<(String, Vec<(String, ComponentFunc)>)> {
    let ty = component.component_type();
    let items: Vec<(String, ComponentItem)> = if exports {
        ty.exports(engine)
            .map(|(n, i)| (n.to_string(), i.ty))
            .collect()
    } else {
        ty.imports(engine)
            .map(|(n, i)| (n.to_string(), i.ty))
            .collect()
    };
    items
        .into_iter()
        .filter(|(name, _)| !is_platform(name))
        .filter_map(|(name, item)| match item {
            ComponentItem::ComponentInstance(inst) => {
                let funcs = inst
                    .exports(engine)
                    .filter_map(|(f, item)| match item.ty {
                        ComponentItem::ComponentFunc(ft) => Some((f.to_string(), ft)),
                        _ => None,
                    })
                    .collect();
                Some((name, funcs))
            }
            _ => None,
        })
        .collect()
}

/// Why two contexts cannot be linked.
pub(crate) fn check_compatible(
    iface: &str,
    func: &str,
    import: &ComponentFunc,
    export: &ComponentFunc,
) -> Result<(), String> {
    let ip: Vec<_> = import.params().collect();
    let ep: Vec<_> = export.params().collect();
    if ip.len() != ep.len()
        || ip
            .iter()
            .zip(&ep)
            .any(|((a, ta), (b, tb))| a != b || ta != tb)
    {
        return Err(format!(
            "{iface}.{func}: parameters differ between the importer and the exporter"
        ));
    }
    let ir: Vec<_> = import.results().collect();
    let er: Vec<_> = export.results().collect();
    if ir != er {
        return Err(format!(
            "{iface}.{func}: result type differs between the importer and the exporter"
        ));
    }
    host_error_case(&ir)
        .map(|_| ())
        .map_err(|e| format!("{iface}.{func}: {e}"))
}

/// Kinds of host failure, as cases of `ctxhost:platform/types.call-error`.
pub(crate) const CALL_ERROR_CASES: [&str; 4] = ["unavailable", "trapped", "timeout", "rejected"];

/// Check the calling convention of a cross-context function's results.
fn host_error_case(results: &[Type]) -> Result<(), String> {
    let [Type::Result(r)] = results else {
        return Err("must return `result<T, E>`".into());
    };
    let Some(Type::Variant(err)) = r.err() else {
        return Err(
            "the error type of its result must be a variant with a case `host(call-error)`".into(),
        );
    };
    let Some(host) = err.cases().find(|c| c.name == "host") else {
        return Err("its error variant has no case `host(call-error)`".into());
    };
    let Some(Type::Variant(call_error)) = host.ty else {
        return Err("the case `host` must carry a `call-error`".into());
    };
    for kind in CALL_ERROR_CASES {
        match call_error.cases().find(|c| c.name == kind) {
            Some(c) if matches!(c.ty, Some(Type::String)) => {}
            _ => return Err(format!("`call-error` lacks the case `{kind}(string)`")),
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

/// Define `iface.func` in `linker` as a forwarder to the provider of `iface`.
pub(crate) fn define_forwarder(
    linker: &mut Linker<Invocation>,
    iface: &str,
    funcs: &[(String, ComponentFunc)],
) -> anyhow::Result<()> {
    let mut inst = linker.instance(iface)?;
    for (func, _) in funcs {
        let iface_name = iface.to_string();
        let func_name = func.clone();
        inst.func_new_async(func, move |store, _ty, params, results| {
            let iface_name = iface_name.clone();
            let func_name = func_name.clone();
            Box::new(async move {
                super::invoke::forward_call(store, &iface_name, &func_name, params, results).await
            })
        })?;
    }
    Ok(())
}
