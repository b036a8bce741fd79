//! Per-plugin limits, applied to every call.

use std::time::Duration;

use serde::Serialize;

use crate::manifest::Kind;

/// Ceiling for any plugin's linear memory, fixed by the engine's instance pool.
pub const MAX_MEMORY_BYTES: usize = 256 << 20;
/// The wasm stack every plugin gets (engine-wide).
pub(crate) const STACK_BYTES: usize = 512 << 10;

/// What one plugin may use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Wall-clock budget of one call, in milliseconds. Exceeding it traps the instance.
    pub deadline_ms: u64,
    /// Cap on the plugin's linear memory, in bytes. Growing past it traps.
    pub memory_bytes: usize,
    /// Cap on the number of wasm tables.
    pub tables: usize,
    /// Cap on the elements of one table.
    pub table_elements: usize,
    /// Cap on core instances inside the component.
    pub instances: usize,
    /// The wasm stack, in bytes (the same for every plugin).
    pub stack_bytes: usize,
}

impl Limits {
    /// Defaults for a kind: discovery calls may wait on the network; policy decisions are
    /// quick; file backends move chunks.
    pub fn for_kind(kind: Kind) -> Self {
        let (deadline_ms, memory_bytes) = match kind {
            Kind::Discovery => (10_000, 32 << 20),
            Kind::RelayPolicy => (250, 16 << 20),
            Kind::FileBackend => (5_000, 128 << 20),
        };
        Limits {
            deadline_ms,
            memory_bytes,
            tables: 16,
            table_elements: 20_000,
            instances: 32,
            stack_bytes: STACK_BYTES,
        }
    }

    /// The call budget as a duration.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Clamps operator-supplied values to what the engine can honour.
    pub fn clamped(mut self) -> Self {
        self.deadline_ms = self.deadline_ms.clamp(1, 600_000);
        self.memory_bytes = self.memory_bytes.clamp(1 << 20, MAX_MEMORY_BYTES);
        self.stack_bytes = STACK_BYTES;
        self
    }
}
