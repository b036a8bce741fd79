//! `dht`: records and providers through the node's Kademlia, with bounded keys and values.

use super::{HostResult, too_large};
use crate::bindings::dht::Host;
use crate::bindings::types::PluginError;
use crate::manifest::Capability;
use crate::state::{HostState, no_backend};

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 8 * 1024;

impl HostState {
    fn dht(
        &self,
        key: &[u8],
    ) -> Result<std::sync::Arc<dyn crate::services::DhtBackend>, PluginError> {
        self.check(Capability::Dht)?;
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(PluginError::InvalidInput(format!(
                "keys are 1 to {MAX_KEY} bytes"
            )));
        }
        self.ctx
            .services
            .dht
            .clone()
            .ok_or_else(|| no_backend(Capability::Dht))
    }
}

impl Host for HostState {
    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> HostResult<()> {
        let dht = match self.dht(&key) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        if value.len() > MAX_VALUE {
            return Ok(Err(too_large("value", MAX_VALUE)));
        }
        Ok(dht.put(key, value).await.map_err(Into::into))
    }

    async fn get(&mut self, key: Vec<u8>) -> HostResult<Vec<Vec<u8>>> {
        let dht = match self.dht(&key) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        Ok(dht.get(key).await.map_err(Into::into))
    }

    async fn provide(&mut self, key: Vec<u8>) -> HostResult<()> {
        let dht = match self.dht(&key) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        Ok(dht.provide(key).await.map_err(Into::into))
    }

    async fn find_providers(&mut self, key: Vec<u8>) -> HostResult<Vec<String>> {
        let dht = match self.dht(&key) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        Ok(dht.find_providers(key).await.map_err(Into::into))
    }
}
