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
        // Each write is a durable commit on the node's one writer connection.
        if !self.ctx.take_kv_write_token() {
            return Ok(Err(PluginError::LimitExceeded(
                "too many kv writes; at most 20 a second".into(),
            )));
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
        if !self.ctx.take_kv_write_token() {
            return Ok(Err(PluginError::LimitExceeded(
                "too many kv writes; at most 20 a second".into(),
            )));
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::limits::Limits;
    use crate::manifest::Kind;
    use crate::services::{BoxFuture, KvBackend, ServiceError, Services};
    use crate::state::PluginContext;

    /// Counts writes; stores nothing.
    #[derive(Default)]
    struct Counting(Mutex<u32>);

    impl KvBackend for Counting {
        fn get<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ServiceError>> {
            Box::pin(async { Ok(None) })
        }
        fn set<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Vec<u8>,
            _: u64,
        ) -> BoxFuture<'a, Result<(), ServiceError>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async { Ok(()) })
        }
        fn delete<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), ServiceError>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async { Ok(()) })
        }
        fn keys<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: usize,
        ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[tokio::test]
    async fn kv_writes_are_bounded_per_second() {
        let backend = Arc::new(Counting::default());
        let ctx = Arc::new(PluginContext::new(
            "writer".into(),
            [Capability::Kv].into_iter().collect(),
            Services {
                kv: Some(backend.clone()),
                ..Services::default()
            },
            Arc::default(),
            Vec::new(),
            1 << 20,
        ));
        let mut state = HostState::new(ctx, &Limits::for_kind(Kind::Discovery), None).unwrap();
        let mut refused = 0;
        for i in 0..300 {
            let done = if i % 2 == 0 {
                Host::set(&mut state, format!("k{i}"), vec![1])
                    .await
                    .unwrap()
            } else {
                Host::delete(&mut state, format!("k{i}")).await.unwrap()
            };
            if matches!(done, Err(PluginError::LimitExceeded(_))) {
                refused += 1;
            }
        }
        let written = *backend.0.lock().unwrap();
        assert!(
            (100..=110).contains(&written),
            "{written} writes went through"
        );
        assert_eq!(written + refused, 300);
    }
}
