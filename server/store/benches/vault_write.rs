//! In-process cost of storing messages in the vault: fresh ids (sent by this device) and
//! incoming ones (checked against what is stored), in batches, against the same number of
//! Loro inserts alone.
//!
//! `cargo bench -p volli-store --bench vault_write`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use volli_core::{MessageId, Timestamp, UserSecret};
use volli_store::vault::{MessageStatus, StoredMessage};
use volli_store::{Store, VaultOptions};

#[tokio::main]
async fn main() {
    let me = UserSecret::from_master([1; 32]).user_id();
    let bob = UserSecret::from_master([2; 32]).user_id();
    let n = 20_000;
    for (label, batch) in [
        ("batches of 1,000", 1_000usize),
        ("batches of 16", 16),
        ("one at a time", 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), VaultOptions::default())
            .await
            .unwrap();
        let messages: Vec<StoredMessage> = (0..n)
            .map(|i| StoredMessage {
                id: MessageId::random().unwrap(),
                from: bob,
                to: me,
                body: format!("message {i} with a line of ordinary text in it"),
                sent_at: Timestamp::from_millis(1_800_000_000_000 + i as i64),
                status: MessageStatus::Received,
                extra: Default::default(),
            })
            .collect();
        let count = if batch == 1 { 2_000 } else { n };
        let start = Instant::now();
        if batch == 1 {
            // Concurrent single writes, as incoming deliveries arrive.
            let mut tasks = Vec::new();
            for m in messages.into_iter().take(count) {
                let vault = store.vault().clone();
                tasks.push(tokio::spawn(async move {
                    vault.put_message(bob, m).await.unwrap()
                }));
            }
            for t in tasks {
                assert!(t.await.unwrap());
            }
        } else {
            for chunk in messages.chunks(batch) {
                let fresh = store
                    .vault()
                    .put_messages(chunk.iter().map(|m| (bob, m.clone())).collect())
                    .await
                    .unwrap();
                assert!(fresh.iter().all(|f| *f));
            }
        }
        let elapsed = start.elapsed();
        println!(
            "incoming messages, {label}: {count} in {elapsed:?} = {:.0} msgs/s",
            count as f64 / elapsed.as_secs_f64()
        );
        store.close().await;
    }
}
