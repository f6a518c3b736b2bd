//! The one table of the workspace's packages and what the commands do with each. Every list
//! the commands use (what to build for Wasm, what `cargo test --workspace` leaves out, whose
//! unit tests run natively apart, what clippy checks and for which target) and the help texts
//! that name packages are derived from [`PACKAGES`], so they cannot drift apart. A unit test
//! checks the table against the workspace's members.

/// The compilation target of the Wasm components and the SDK.
pub(crate) const WASM_TARGET: &str = "wasm32-wasip2";
/// The host package (its binary is `ctxhost`).
pub(crate) const HOST: &str = "ctxhost";
/// The benchmark package (its binary is `ctxhost-bench`).
pub(crate) const BENCH: &str = "ctxhost-bench";

/// Who loads a Wasm component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// A plugin of the shipped car-rental application (listed in ctxhost.toml).
    App,
    /// A fixture of the end-to-end tests.
    TestFixture,
    /// A fixture of the benchmarks.
    BenchFixture,
}

impl Use {
    /// Every use, in the order the help lists them.
    pub(crate) const ALL: [Use; 3] = [Use::App, Use::TestFixture, Use::BenchFixture];

    /// What the help says of the components of this use.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Use::App => "plugins of the car-rental app",
            Use::TestFixture => "fixtures of the end-to-end tests",
            Use::BenchFixture => "fixtures of the benchmarks",
        }
    }
}

/// What a package is, which decides how the commands build, test and lint it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A native crate: tested by `cargo test --workspace` (with the built host and plugins),
    /// linted natively with all its targets. The workspace's default members.
    Native,
    /// A library of the Wasm components: linted for the Wasm target, never built alone.
    WasmLibrary,
    /// A Wasm component: built in release for the Wasm target, linted for it.
    Component(Use),
}

/// One workspace member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Package {
    /// The package name (`-p <name>`).
    pub name: &'static str,
    pub kind: Kind,
    /// Whether its unit tests run natively in a run of their own. Only for packages that
    /// are not [`Kind::Native`] (those are tested by `cargo test --workspace`): the domain
    /// logic of the plugins and the SDK is plain Rust that also compiles natively.
    pub native_unit_tests: bool,
}

impl Package {
    const fn native(name: &'static str) -> Self {
        Package {
            name,
            kind: Kind::Native,
            native_unit_tests: false,
        }
    }

    const fn wasm_library(name: &'static str, native_unit_tests: bool) -> Self {
        Package {
            name,
            kind: Kind::WasmLibrary,
            native_unit_tests,
        }
    }

    const fn component(name: &'static str, used_by: Use, native_unit_tests: bool) -> Self {
        Package {
            name,
            kind: Kind::Component(used_by),
            native_unit_tests,
        }
    }

    /// Whether it is built as a Wasm component.
    pub(crate) fn is_component(&self) -> bool {
        matches!(self.kind, Kind::Component(_))
    }

    /// Whether it only ever targets Wasm (so `cargo test --workspace` leaves it out and
    /// clippy checks it for the Wasm target).
    pub(crate) fn is_wasm_only(&self) -> bool {
        self.kind != Kind::Native
    }
}

/// Every package of the workspace. The components are built in this order (the order of
/// ctxhost.toml for the app's plugins).
pub(crate) const PACKAGES: &[Package] = &[
    Package::native(HOST),
    Package::native("xtask"),
    Package::native("ctxhost-tests"),
    Package::native(BENCH),
    Package::wasm_library("ctxhost-sdk", true),
    Package::component("order", Use::App, true),
    Package::component("payment", Use::App, true),
    Package::component("car", Use::App, true),
    Package::component("view", Use::App, true),
    Package::component("chaos", Use::TestFixture, false),
    Package::component("bad-payments", Use::TestFixture, false),
    Package::component("bench-hello", Use::BenchFixture, false),
    Package::component("bench-hello-proxy", Use::BenchFixture, false),
];

fn names(keep: impl Fn(&Package) -> bool) -> Vec<&'static str> {
    PACKAGES
        .iter()
        .filter(|p| keep(p))
        .map(|p| p.name)
        .collect()
}

/// The Wasm components, in build order.
pub(crate) fn components() -> Vec<&'static str> {
    names(Package::is_component)
}

/// The Wasm components loaded by `used_by`, in build order.
pub(crate) fn components_for(used_by: Use) -> Vec<&'static str> {
    names(|p| p.kind == Kind::Component(used_by))
}

/// What `cargo test --workspace` excludes: everything that only targets Wasm.
pub(crate) fn test_exclusions() -> Vec<&'static str> {
    names(Package::is_wasm_only)
}

/// Packages whose unit tests run natively, apart from `cargo test --workspace`.
pub(crate) fn native_unit_tests() -> Vec<&'static str> {
    names(|p| p.native_unit_tests)
}

/// Native packages, linted with all their targets.
pub(crate) fn native_lint() -> Vec<&'static str> {
    names(|p| p.kind == Kind::Native)
}

/// Packages linted for the Wasm target.
pub(crate) fn wasm_lint() -> Vec<&'static str> {
    names(Package::is_wasm_only)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique() {
        let unique: BTreeSet<_> = PACKAGES.iter().map(|p| p.name).collect();
        assert_eq!(unique.len(), PACKAGES.len(), "a package is listed twice");
    }

    #[test]
    fn host_and_bench_are_native_packages() {
        for name in [HOST, BENCH] {
            assert!(
                native_lint().contains(&name),
                "{name} must be a native package of the table"
            );
        }
    }

    #[test]
    fn only_wasm_only_packages_run_their_unit_tests_apart() {
        for p in PACKAGES.iter().filter(|p| p.native_unit_tests) {
            assert!(
                p.is_wasm_only(),
                "{} is native: `cargo test --workspace` already runs its tests",
                p.name
            );
        }
    }

    /// Every workspace member is in the table and every package of the table is a member;
    /// the native packages are exactly the workspace's default members.
    #[test]
    fn table_matches_the_workspace() -> anyhow::Result<()> {
        let ws = crate::workspace::Workspace::read()?;
        let members: BTreeSet<&str> = ws.members.iter().map(String::as_str).collect();
        let table: BTreeSet<&str> = PACKAGES.iter().map(|p| p.name).collect();
        let missing: Vec<_> = members.difference(&table).collect();
        let extra: Vec<_> = table.difference(&members).collect();
        assert!(
            missing.is_empty(),
            "workspace members missing from PACKAGES (xtask/src/packages.rs): {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "PACKAGES lists packages that are not workspace members: {extra:?}"
        );
        let defaults: BTreeSet<&str> = ws.default_members.iter().map(String::as_str).collect();
        let native: BTreeSet<&str> = native_lint().into_iter().collect();
        assert_eq!(
            defaults, native,
            "the workspace's default-members should be the native packages of PACKAGES"
        );
        Ok(())
    }

    #[test]
    fn every_component_has_a_use_listed_in_the_help() {
        let listed: usize = Use::ALL.iter().map(|u| components_for(*u).len()).sum();
        assert_eq!(listed, components().len());
    }
}
