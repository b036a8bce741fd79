//! In-memory stand-ins for the node's capability backends, so the host and real plugin
//! components can be tested without a node. The node's real backends have their own tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use volli_plugin_host::{
    BoxFuture, Capabilities, Capability, Datagram, DhtBackend, HostConfig, KvBackend, LanBackend,
    PluginHost, PluginSettings, ServiceError, Services,
};

#[derive(Default)]
pub struct MemoryKv(pub Mutex<BTreeMap<(String, String), Vec<u8>>>);

impl KvBackend for MemoryKv {
    fn get<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, ServiceError>> {
        let v = self
            .0
            .lock()
            .unwrap()
            .get(&(plugin.into(), key.into()))
            .cloned();
        Box::pin(async move { Ok(v) })
    }
    fn set<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
        value: Vec<u8>,
        quota: u64,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        let mut map = self.0.lock().unwrap();
        let used: u64 = map
            .iter()
            .filter(|((p, k), _)| p == plugin && k != key)
            .map(|((_, k), v)| (k.len() + v.len()) as u64)
            .sum();
        let result = if used + (key.len() + value.len()) as u64 > quota {
            Err(ServiceError::LimitExceeded("kv quota".into()))
        } else {
            map.insert((plugin.into(), key.into()), value);
            Ok(())
        };
        Box::pin(async move { result })
    }
    fn delete<'a>(
        &'a self,
        plugin: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        self.0.lock().unwrap().remove(&(plugin.into(), key.into()));
        Box::pin(async { Ok(()) })
    }
    fn keys<'a>(
        &'a self,
        plugin: &'a str,
        prefix: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        let keys = self
            .0
            .lock()
            .unwrap()
            .keys()
            .filter(|(p, k)| p == plugin && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .take(limit)
            .collect();
        Box::pin(async move { Ok(keys) })
    }
}

#[derive(Default)]
pub struct MemoryDht(Mutex<HashMap<Vec<u8>, Vec<Vec<u8>>>>);

impl DhtBackend for MemoryDht {
    fn put<'a>(&'a self, key: Vec<u8>, value: Vec<u8>) -> BoxFuture<'a, Result<(), ServiceError>> {
        self.0.lock().unwrap().insert(key, vec![value]);
        Box::pin(async { Ok(()) })
    }
    fn get<'a>(&'a self, key: Vec<u8>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, ServiceError>> {
        let v = self
            .0
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(v) })
    }
    fn provide<'a>(&'a self, _key: Vec<u8>) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async { Ok(()) })
    }
    fn find_providers<'a>(
        &'a self,
        _key: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A shared multicast group: every packet sent reaches every other member's queue.
#[derive(Default)]
pub struct LanBus {
    queues: Mutex<HashMap<usize, Vec<Datagram>>>,
}

pub struct LanMember {
    pub bus: Arc<LanBus>,
    pub id: usize,
}

impl LanBackend for LanMember {
    fn send<'a>(
        &'a self,
        _plugin: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        let mut queues = self.bus.queues.lock().unwrap();
        let ids: Vec<usize> = queues.keys().copied().collect();
        for id in ids.into_iter().filter(|&id| id != self.id) {
            queues.entry(id).or_default().push(Datagram {
                source: format!("10.0.0.{}:5353", self.id),
                payload: payload.clone(),
            });
        }
        Box::pin(async { Ok(()) })
    }
    fn receive<'a>(
        &'a self,
        _plugin: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<Datagram>, ServiceError>> {
        let mut queues = self.bus.queues.lock().unwrap();
        let q = queues.entry(self.id).or_default();
        let n = q.len().min(max);
        let out: Vec<Datagram> = q.drain(..n).collect();
        Box::pin(async move { Ok(out) })
    }
}

impl LanBus {
    pub fn join(self: &Arc<Self>, id: usize) -> Arc<LanMember> {
        self.queues.lock().unwrap().entry(id).or_default();
        Arc::new(LanMember {
            bus: self.clone(),
            id,
        })
    }
}

pub fn host(dir: &std::path::Path, services: Services) -> PluginHost {
    PluginHost::new(
        HostConfig {
            cache_dir: Some(shared_cache()),
            fs_root: dir.join("fs"),
        },
        services,
    )
    .unwrap()
}

/// One compile cache for all tests of this crate, so each component compiles once.
pub fn shared_cache() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

pub fn grants(caps: &[Capability]) -> Capabilities {
    caps.iter().copied().collect()
}

pub fn settings(caps: &[Capability]) -> PluginSettings {
    PluginSettings {
        grants: grants(caps),
        ..PluginSettings::default()
    }
}

pub fn hostile_wasm() -> Vec<u8> {
    std::fs::read(volli_plugin_host::builtin::testing_dir().join("hostile.wasm")).unwrap()
}

pub fn builtin(name: &str) -> Vec<u8> {
    volli_plugin_host::builtin::all()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, w)| w.to_vec())
        .expect("a built-in plugin")
}

pub const TICK: Duration = volli_plugin_host::EPOCH_TICK;
