//! The resource limiter of one instance: its memory cap covers every linear memory it
//! defines together (a component may define several), and its tables have a bounded size.
//! Going over either traps the guest, which counts as its own fault.

use wasmtime::ResourceLimiter;

/// Core module instances one component instance may create.
pub(super) const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Linear memories one component instance may define (its memory cap covers them all).
pub(super) const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
/// Tables one component instance may define.
pub(super) const MAX_TABLES_PER_COMPONENT: u32 = 8;
/// Elements of one table.
pub(super) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Limits of one store (one component instance).
#[derive(Debug)]
pub(crate) struct InstanceLimits {
    /// Cap on the bytes of all linear memories together.
    memory_cap: usize,
    /// Bytes of all linear memories now.
    memory_used: usize,
}

impl InstanceLimits {
    pub(crate) fn new(memory_cap: usize) -> Self {
        InstanceLimits {
            memory_cap,
            memory_used: 0,
        }
    }
}

impl ResourceLimiter for InstanceLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let after = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if after > self.memory_cap {
            wasmtime::bail!(
                "the instance's linear memory would grow to {after} bytes, over its cap of {} bytes",
                self.memory_cap
            );
        }
        self.memory_used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            wasmtime::bail!(
                "a table would grow to {desired} elements, over the cap of {MAX_TABLE_ELEMENTS}"
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_COMPONENT as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_covers_every_memory_of_the_instance_together() {
        let mut l = InstanceLimits::new(100);
        assert!(l.memory_growing(0, 60, None).expect("first memory fits"));
        l.memory_growing(0, 50, None)
            .expect_err("a second memory would go over the cap together");
        assert!(l.memory_growing(0, 40, None).expect("this one fits"));
        l.memory_growing(60, 61, None)
            .expect_err("growing the first is over");
        assert!(l.memory_growing(60, 60, None).expect("no change"));
    }
}
