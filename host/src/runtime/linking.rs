//! Linking one context's imports to another context's exports.
//!
//! A context may import an interface that another context exports (for example
//! `ctxhost:rental/payments`). The host checks at load that both sides agree on every
//! function's type and that each function follows the call-error ABI of [`super::calls`],
//! then defines the import with a dynamic host function that forwards the call to an
//! instance of the current provider ([`super::calls::forward_call`]).

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, Linker};

use super::calls::{AbiError, check_abi, forward_call};
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

/// Why an importer's function and an exporter's function cannot be linked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mismatch {
    #[error("{iface}.{func}: parameters differ between the importer and the exporter")]
    Params { iface: String, func: String },
    #[error("{iface}.{func}: result type differs between the importer and the exporter")]
    Results { iface: String, func: String },
    #[error("{iface}.{func}: {source}")]
    Abi {
        iface: String,
        func: String,
        #[source]
        source: AbiError,
    },
}

/// Check that `import` and `export` (the same function seen from both sides) agree on
/// every parameter and the result, and that the result follows the call-error ABI.
pub(crate) fn check_compatible(
    iface: &str,
    func: &str,
    import: &ComponentFunc,
    export: &ComponentFunc,
) -> Result<(), Mismatch> {
    let names = || (iface.to_string(), func.to_string());
    let ip: Vec<_> = import.params().collect();
    let ep: Vec<_> = export.params().collect();
    if ip.len() != ep.len()
        || ip
            .iter()
            .zip(&ep)
            .any(|((a, ta), (b, tb))| a != b || ta != tb)
    {
        let (iface, func) = names();
        return Err(Mismatch::Params { iface, func });
    }
    let ir: Vec<_> = import.results().collect();
    let er: Vec<_> = export.results().collect();
    if ir != er {
        let (iface, func) = names();
        return Err(Mismatch::Results { iface, func });
    }
    check_abi(&ir).map_err(|source| {
        let (iface, func) = names();
        Mismatch::Abi {
            iface,
            func,
            source,
        }
    })
}

/// Define `iface.func` in `linker` as a forwarder to the provider of `iface`.
pub(crate) fn define_forwarder(
    linker: &mut Linker<Invocation>,
    iface: &str,
    funcs: &[(String, ComponentFunc)],
) -> wasmtime::Result<()> {
    let mut inst = linker.instance(iface)?;
    for (func, _) in funcs {
        let iface_name = iface.to_string();
        let func_name = func.clone();
        inst.func_new_async(func, move |store, _ty, params, results| {
            let iface_name = iface_name.clone();
            let func_name = func_name.clone();
            Box::new(
                async move { forward_call(store, &iface_name, &func_name, params, results).await },
            )
        })?;
    }
    Ok(())
}
