//! `lan`: the mDNS multicast group, bounded packet sizes and batch sizes.

use super::{HostResult, too_large};
use crate::bindings::lan::{Datagram, Host};
use crate::bindings::types::PluginError;
use crate::manifest::Capability;
use crate::state::{HostState, no_backend};

const MAX_PACKET: usize = 9000;
const MAX_BATCH: u32 = 64;

impl HostState {
    fn lan(&self) -> Result<std::sync::Arc<dyn crate::services::LanBackend>, PluginError> {
        self.check(Capability::Lan)?;
        self.ctx
            .services
            .lan
            .clone()
            .ok_or_else(|| no_backend(Capability::Lan))
    }
}

impl Host for HostState {
    async fn send(&mut self, payload: Vec<u8>) -> HostResult<()> {
        let lan = match self.lan() {
            Ok(lan) => lan,
            Err(e) => return Ok(Err(e)),
        };
        if payload.len() > MAX_PACKET {
            return Ok(Err(too_large("packet", MAX_PACKET)));
        }
        Ok(lan.send(&self.ctx.name, payload).await.map_err(Into::into))
    }

    async fn receive(&mut self, max: u32) -> HostResult<Vec<Datagram>> {
        let lan = match self.lan() {
            Ok(lan) => lan,
            Err(e) => return Ok(Err(e)),
        };
        let max = max.min(MAX_BATCH) as usize;
        Ok(lan
            .receive(&self.ctx.name, max)
            .await
            .map(|packets| {
                packets
                    .into_iter()
                    .map(|d| Datagram {
                        source: d.source,
                        payload: d.payload,
                    })
                    .collect()
            })
            .map_err(Into::into))
    }
}
