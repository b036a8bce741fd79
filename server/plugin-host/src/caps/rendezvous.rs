//! `rendezvous`: register and discover under a namespace at the configured points.

use std::time::Duration;

use super::HostResult;
use crate::bindings::rendezvous::{Host, Registration};
use crate::bindings::types::PluginError;
use crate::manifest::Capability;
use crate::state::{HostState, no_backend};

const MAX_NAMESPACE: usize = 255;
const MIN_TTL_SECS: u32 = 120;
const MAX_TTL_SECS: u32 = 72 * 3600;

impl HostState {
    fn rendezvous(
        &self,
        namespace: &str,
    ) -> Result<std::sync::Arc<dyn crate::services::RendezvousBackend>, PluginError> {
        self.check(Capability::Rendezvous)?;
        if namespace.is_empty() || namespace.len() > MAX_NAMESPACE {
            return Err(PluginError::InvalidInput(format!(
                "namespaces are 1 to {MAX_NAMESPACE} bytes"
            )));
        }
        self.ctx
            .services
            .rendezvous
            .clone()
            .ok_or_else(|| no_backend(Capability::Rendezvous))
    }
}

impl Host for HostState {
    async fn register(&mut self, namespace: String, ttl_secs: u32) -> HostResult<()> {
        let rv = match self.rendezvous(&namespace) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let ttl = Duration::from_secs(u64::from(ttl_secs.clamp(MIN_TTL_SECS, MAX_TTL_SECS)));
        Ok(rv.register(namespace, ttl).await.map_err(Into::into))
    }

    async fn discover(&mut self, namespace: String) -> HostResult<Vec<Registration>> {
        let rv = match self.rendezvous(&namespace) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(rv
            .discover(namespace)
            .await
            .map(|regs| {
                regs.into_iter()
                    .map(|r| Registration {
                        peer_id: r.peer_id,
                        addrs: r.addrs,
                    })
                    .collect()
            })
            .map_err(Into::into))
    }
}
