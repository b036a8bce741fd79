//! `kv`: plugin-private storage, bounded per key, per value and in total.

use super::{HostResult, too_large};
use crate::bindings::kv::Host;
use crate::bindings::types::PluginError;
use crate::manifest::Capability;
use crate::state::{HostState, no_backend};

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_KEYS: usize = 1000;

impl HostState {
    fn kv(&self) -> Result<std::sync::Arc<dyn crate::services::KvBackend>, PluginError> {
        self.check(Capability::Kv)?;
        self.ctx
            .services
            .kv
            .clone()
            .ok_or_else(|| no_backend(Capability::Kv))
    }
}

fn check_key(key: &str) -> Result<(), PluginError> {
    if key.is_empty() {
        return Err(PluginError::InvalidInput("empty key".into()));
    }
    if key.len() > MAX_KEY {
        return Err(too_large("key", MAX_KEY));
    }
    Ok(())
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> HostResult<Option<Vec<u8>>> {
        let kv = match self.kv().and_then(|kv| check_key(&key).map(|()| kv)) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        Ok(kv.get(&self.ctx.name, &key).await.map_err(Into::into))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> HostResult<()> {
        let kv = match self.kv().and_then(|kv| check_key(&key).map(|()| kv)) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        if value.len() > MAX_VALUE {
            return Ok(Err(too_large("value", MAX_VALUE)));
        }
        Ok(kv
            .set(&self.ctx.name, &key, value, self.ctx.kv_quota)
            .await
            .map_err(Into::into))
    }

    async fn delete(&mut self, key: String) -> HostResult<()> {
        let kv = match self.kv().and_then(|kv| check_key(&key).map(|()| kv)) {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        Ok(kv.delete(&self.ctx.name, &key).await.map_err(Into::into))
    }

    async fn keys(&mut self, prefix: String) -> HostResult<Vec<String>> {
        let kv = match self.kv() {
            Ok(kv) => kv,
            Err(e) => return Ok(Err(e)),
        };
        if prefix.len() > MAX_KEY {
            return Ok(Err(too_large("prefix", MAX_KEY)));
        }
        Ok(kv
            .keys(&self.ctx.name, &prefix, MAX_KEYS)
            .await
            .map_err(Into::into))
    }
}
