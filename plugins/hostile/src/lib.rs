//! `hostile`: a discovery plugin that misbehaves on purpose, for the host's tests and
//! benchmarks. Its configuration's `mode` picks the behaviour of `discover`:
//! `ok` (returns nothing, quickly), `loop` (never returns), `bomb` (allocates without end),
//! `recurse` (unbounded recursion), `forbidden` (uses `kv`, which tests do not grant),
//! `panic`, `work` (`iterations` rounds of JSON encoding and parsing, for benchmarks), `peek`
//! (reads WASI's wall clock and its random seed, to show what it is given without the
//! `clock` and `random` grants). Mode `loop-in-init` never finishes starting. `lookup`
//! echoes a 1 KiB record.

use std::hint::black_box;

use serde::Deserialize;
use volli_plugin_sdk::discovery::{Discovery, Finding};
use volli_plugin_sdk::{Capability, Error, Manifest, kv};

#[derive(Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    iterations: u64,
}

struct Hostile {
    mode: String,
    iterations: u64,
}

#[allow(unconditional_recursion)] // unbounded on purpose: the host must stop it
fn recurse(depth: u64) -> u64 {
    // The work after the call keeps it from becoming a loop.
    black_box(recurse(black_box(depth + 1))) ^ depth
}

impl Discovery for Hostile {
    fn manifest() -> Manifest {
        Manifest::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            "Misbehaves on purpose, for tests",
        )
        .with(&[
            Capability::Log,
            Capability::Kv,
            Capability::Clock,
            Capability::Random,
        ])
        .default_config(r#"{"mode": "ok"}"#)
    }

    fn init(config: &str) -> Result<Self, Error> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| Error::InvalidInput(e.to_string()))?;
        if config.mode == "loop-in-init" {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        Ok(Hostile {
            mode: config.mode,
            iterations: config.iterations,
        })
    }

    fn discover(&mut self) -> Result<Vec<Finding>, Error> {
        match self.mode.as_str() {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "recurse" => Ok(vec![Finding::SignedRecord(
                recurse(0).to_le_bytes().to_vec(),
            )]),
            "forbidden" => {
                kv::set("stolen", b"secret")?;
                Ok(Vec::new())
            }
            "panic" => panic!("the hostile plugin panics on purpose"),
            "peek" => {
                use std::hash::{BuildHasher as _, Hasher as _};
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(42);
                let mut record = now.to_le_bytes().to_vec();
                record.extend_from_slice(&hasher.finish().to_le_bytes());
                Ok(vec![Finding::SignedRecord(record)])
            }
            "work" => {
                // Typical plugin work: encode and parse small JSON documents.
                let mut total = 0usize;
                for i in 0..self.iterations {
                    let text = format!(
                        r#"{{"peer": "12D3KooW{i}", "addrs": ["/ip4/10.0.0.{}/tcp/8471"], "ttl": {i}}}"#,
                        i % 250
                    );
                    let value: serde_json::Value = serde_json::from_str(black_box(&text))
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    total += value["addrs"].as_array().map_or(0, Vec::len);
                }
                Ok(vec![Finding::SignedRecord(total.to_le_bytes().to_vec())])
            }
            _ => Ok(Vec::new()),
        }
    }

    fn lookup(&mut self, user_id: &str) -> Result<Vec<Finding>, Error> {
        let mut record = vec![0u8; 1024];
        let n = user_id.len().min(record.len());
        record[..n].copy_from_slice(&user_id.as_bytes()[..n]);
        Ok(vec![Finding::SignedRecord(record)])
    }
}

volli_plugin_sdk::export_discovery!(Hostile);
