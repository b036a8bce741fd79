//! `log`: plugin log lines in the node's log, tagged with the plugin's name, rate-limited.

use super::HostResult;
use crate::bindings::log::{Host, Level};
use crate::manifest::Capability;
use crate::state::HostState;

const MAX_LINE: usize = 4096;

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> HostResult<()> {
        if let Err(e) = self.check(Capability::Log) {
            return Ok(Err(e));
        }
        if !self.ctx.take_log_token() {
            self.ctx.stats.dropped_log();
            return Ok(Ok(()));
        }
        let mut end = message.len().min(MAX_LINE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let line = &message[..end];
        let plugin = self.ctx.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "volli::plugin", plugin, "{line}"),
            Level::Debug => tracing::debug!(target: "volli::plugin", plugin, "{line}"),
            Level::Info => tracing::info!(target: "volli::plugin", plugin, "{line}"),
            Level::Warn => tracing::warn!(target: "volli::plugin", plugin, "{line}"),
            Level::Error => tracing::error!(target: "volli::plugin", plugin, "{line}"),
        }
        Ok(Ok(()))
    }
}
