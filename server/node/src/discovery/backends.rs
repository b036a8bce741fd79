//! The `dht` and `rendezvous` capabilities, on the node's libp2p network.
//!
//! A plugin may only publish this user's own, current address record under its own key:
//! the DHT carries nothing a plugin invented. Lookups return only records that verify.

use std::time::Duration;

use volli_core::{AddressRecord, Timestamp, UserId};
use volli_net::NetClient;
use volli_plugin_host::{BoxFuture, DhtBackend, Registration, RendezvousBackend, ServiceError};

fn unavailable(e: volli_net::NetError) -> ServiceError {
    ServiceError::Unavailable(e.to_string())
}

pub(crate) struct Dht {
    pub(crate) net: NetClient,
    pub(crate) user: UserId,
}

impl DhtBackend for Dht {
    fn put<'a>(&'a self, key: Vec<u8>, value: Vec<u8>) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let own = AddressRecord::from_bytes(&value, Timestamp::now()).is_ok_and(|r| {
                r.user_id() == self.user && volli_core::record::dht_key(&self.user) == key
            });
            if !own {
                return Err(ServiceError::InvalidInput(
                    "only this user's own signed address record may be published, under its key"
                        .into(),
                ));
            }
            self.net.dht_put(key, value).await.map_err(unavailable)
        })
    }

    fn get<'a>(&'a self, key: Vec<u8>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, ServiceError>> {
        Box::pin(async move { self.net.dht_get(key).await.map_err(unavailable) })
    }

    fn provide<'a>(&'a self, key: Vec<u8>) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move { self.net.dht_provide(key).await.map_err(unavailable) })
    }

    fn find_providers<'a>(
        &'a self,
        key: Vec<u8>,
    ) -> BoxFuture<'a, Result<Vec<String>, ServiceError>> {
        Box::pin(async move {
            self.net
                .dht_providers(key)
                .await
                .map(|peers| peers.into_iter().map(|p| p.to_base58()).collect())
                .map_err(unavailable)
        })
    }
}

pub(crate) struct Rendezvous {
    pub(crate) net: NetClient,
}

impl RendezvousBackend for Rendezvous {
    fn register<'a>(
        &'a self,
        namespace: String,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.net
                .rendezvous_register(namespace, ttl)
                .await
                .map_err(unavailable)
        })
    }

    fn discover<'a>(
        &'a self,
        namespace: String,
    ) -> BoxFuture<'a, Result<Vec<Registration>, ServiceError>> {
        Box::pin(async move {
            self.net
                .rendezvous_discover(namespace)
                .await
                .map(|found| {
                    found
                        .into_iter()
                        .map(|(peer, addrs)| Registration {
                            peer_id: peer.to_base58(),
                            addrs: addrs.iter().map(ToString::to_string).collect(),
                        })
                        .collect()
                })
                .map_err(unavailable)
        })
    }
}
