//! `memory`: keeps file chunks in the plugin's own memory. Fast, bounded by `max_bytes` (and
//! by the plugin's memory limit), and gone when the instance restarts: for caches and tests.

use std::collections::HashMap;

use serde::Deserialize;
use volli_plugin_sdk::file_backend::FileBackend;
use volli_plugin_sdk::{Error, Manifest};

#[derive(Deserialize)]
struct Config {
    max_bytes: u64,
}

struct Memory {
    chunks: HashMap<String, Vec<u8>>,
    used: u64,
    max_bytes: u64,
}

impl FileBackend for Memory {
    fn manifest() -> Manifest {
        Manifest::new(
            "memory",
            env!("CARGO_PKG_VERSION"),
            "File chunks kept in memory",
        )
        .default_config(r#"{"max_bytes": 33554432}"#)
    }

    fn init(config: &str) -> Result<Self, Error> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(Memory {
            chunks: HashMap::new(),
            used: 0,
            max_bytes: config.max_bytes,
        })
    }

    fn put(&mut self, id: &str, data: Vec<u8>) -> Result<(), Error> {
        let old = self.chunks.get(id).map_or(0, |c| c.len() as u64);
        let new_used = self.used - old + data.len() as u64;
        if new_used > self.max_bytes {
            return Err(Error::LimitExceeded(format!(
                "the memory backend holds at most {} bytes",
                self.max_bytes
            )));
        }
        self.used = new_used;
        self.chunks.insert(id.to_owned(), data);
        Ok(())
    }

    fn get(&mut self, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, Error> {
        let chunk = self.chunks.get(id).ok_or(Error::NotFound)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let end = start.saturating_add(len as usize).min(chunk.len());
        Ok(chunk[start..end].to_vec())
    }

    fn delete(&mut self, id: &str) -> Result<(), Error> {
        if let Some(chunk) = self.chunks.remove(id) {
            self.used -= chunk.len() as u64;
        }
        Ok(())
    }

    /// Memory holds nothing across a restart, so there is nothing to make durable; a chunk
    /// that is not held is reported.
    fn sync(&mut self, ids: &[String]) -> Result<(), Error> {
        match ids.iter().find(|id| !self.chunks.contains_key(id.as_str())) {
            Some(_) => Err(Error::NotFound),
            None => Ok(()),
        }
    }

    fn stat(&mut self, id: &str) -> Result<Option<u64>, Error> {
        Ok(self.chunks.get(id).map(|c| c.len() as u64))
    }
}

volli_plugin_sdk::export_file_backend!(Memory);
