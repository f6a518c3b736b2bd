//! The resource limiter of one instance: its memory cap covers every linear memory it
//! defines together (a component may define several), and its tables have a bounded size.
//! Going over either traps the guest, which counts as its own fault.

use wasmtime::ResourceLimiter;

/// The shape one component instance may have (`[limits]` keys `instance_core_instances`,
/// `instance_memories`, `instance_tables`, `table_elements`, `guest_stderr_bytes`): the pool
/// reserves this much per instance, so no single component can take what others need, and a
/// component over it is refused when compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceShape {
    /// Core module instances one component instance may create.
    pub core_instances: u32,
    /// Linear memories it may define (its memory cap covers them all together).
    pub memories: u32,
    /// Tables it may define.
    pub tables: u32,
    /// Elements of one table.
    pub table_elements: usize,
    /// Bytes of standard error kept from one instance (the rest is dropped and counted).
    pub stderr_bytes: usize,
}

impl Default for InstanceShape {
    fn default() -> Self {
        InstanceShape {
            core_instances: 32,
            memories: 2,
            tables: 8,
            table_elements: 100_000,
            stderr_bytes: 64 * 1024,
        }
    }
}

/// Limits of one store (one component instance).
#[derive(Debug)]
pub(crate) struct InstanceLimits {
    /// Cap on the bytes of all linear memories together.
    memory_cap: usize,
    /// Bytes of all linear memories now.
    memory_used: usize,
    shape: InstanceShape,
}

impl InstanceLimits {
    pub(crate) fn new(memory_cap: usize, shape: InstanceShape) -> Self {
        InstanceLimits {
            memory_cap,
            memory_used: 0,
            shape,
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
        if desired > self.shape.table_elements {
            wasmtime::bail!(
                "a table would grow to {desired} elements, over the cap of {}",
                self.shape.table_elements
            );
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.shape.core_instances as usize
    }

    fn memories(&self) -> usize {
        self.shape.memories as usize
    }

    fn tables(&self) -> usize {
        self.shape.tables as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_covers_every_memory_of_the_instance_together() {
        let mut l = InstanceLimits::new(100, InstanceShape::default());
        assert!(l.memory_growing(0, 60, None).expect("first memory fits"));
        l.memory_growing(0, 50, None)
            .expect_err("a second memory would go over the cap together");
        assert!(l.memory_growing(0, 40, None).expect("this one fits"));
        l.memory_growing(60, 61, None)
            .expect_err("growing the first is over");
        assert!(l.memory_growing(60, 60, None).expect("no change"));
    }
}
