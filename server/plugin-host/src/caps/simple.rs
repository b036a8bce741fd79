//! `clock` and `random`: no backend, only a grant.

use std::time::{SystemTime, UNIX_EPOCH};

use super::HostResult;
use crate::bindings::types::PluginError;
use crate::bindings::{clock, random};
use crate::manifest::Capability;
use crate::state::HostState;

const MAX_RANDOM: u32 = 4096;

impl clock::Host for HostState {
    async fn now_ms(&mut self) -> HostResult<u64> {
        if let Err(e) = self.check(Capability::Clock) {
            return Ok(Err(e));
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Ok(Ok(ms))
    }
}

impl random::Host for HostState {
    async fn bytes(&mut self, len: u32) -> HostResult<Vec<u8>> {
        if let Err(e) = self.check(Capability::Random) {
            return Ok(Err(e));
        }
        if len > MAX_RANDOM {
            return Ok(Err(PluginError::InvalidInput(format!(
                "at most {MAX_RANDOM} random bytes per call"
            ))));
        }
        let mut out = vec![0u8; len as usize];
        if getrandom::fill(&mut out).is_err() {
            return Ok(Err(PluginError::Unavailable(
                "no randomness available".into(),
            )));
        }
        Ok(Ok(out))
    }
}
