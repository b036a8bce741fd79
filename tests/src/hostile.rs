//! A peer that speaks Volli's libp2p protocols directly, without a node behind it: the
//! stranger, the removed contact and the flooding contact of the hostile-peer tests. It runs
//! real libp2p (TCP, Noise, Yamux) with its own keys and answers the node's hellos with its
//! own certificate, as a node would, but sends whatever the test asks.

use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::Keypair;
use volli_core::wire::{self, Hello, RedeemRequest, RedeemResponse};
use volli_core::{
    ContactCard, DeviceCertificate, Invite, Permissions, Timestamp, UserId, UserSecret,
};
use volli_net::{Multiaddr, NetClient, NetConfig, NetEvent, PeerId, Protocol};

/// A hand-driven peer.
pub struct HostilePeer {
    /// Its network.
    pub net: NetClient,
    /// Its user (a stranger's own, or a contact's).
    pub user: Arc<UserSecret>,
    /// Its device certificate.
    pub certificate: DeviceCertificate,
}

impl HostilePeer {
    /// A peer with a new device key, acting for `user`, listening on loopback.
    pub async fn start(user: Arc<UserSecret>) -> Self {
        let keypair = Keypair::generate_ed25519();
        let peer = keypair.public().to_peer_id();
        let certificate =
            DeviceCertificate::issue(&user, peer, "hostile", Permissions::ALL, Timestamp::now());
        Self::with_keys(user, keypair, certificate).await
    }

    /// The device of a stopped node, from its data directory (its device key, certificate
    /// and user key: an admin device's): what a thief of that directory speaks as.
    pub async fn impersonate(data_dir: &std::path::Path) -> Self {
        let identity = data_dir.join("identity");
        let keypair =
            Keypair::from_protobuf_encoding(&std::fs::read(identity.join("device.key")).unwrap())
                .unwrap();
        let certificate =
            DeviceCertificate::from_bytes(&std::fs::read(identity.join("device.cert")).unwrap())
                .unwrap();
        let user = std::fs::read(identity.join("user.key")).unwrap();
        let master: [u8; 32] = user[user.len() - 32..].try_into().unwrap();
        let user = Arc::new(UserSecret::from_master(master));
        assert_eq!(
            user.user_id(),
            certificate.user_id(),
            "the data directory's user key"
        );
        Self::with_keys(user, keypair, certificate).await
    }

    /// A peer with the device key `keypair` and its `certificate`, acting for `user`.
    pub async fn with_keys(
        user: Arc<UserSecret>,
        keypair: Keypair,
        certificate: DeviceCertificate,
    ) -> Self {
        let mut config = NetConfig::new(keypair, vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]);
        config.dht = false;
        config.relay_server = false;
        let (net, mut events) = volli_net::start(config).await.unwrap();
        let hello = wire::encode(&Hello {
            version: 1,
            certificate: certificate.clone(),
        });
        // Answer hellos like a node; ignore everything else.
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let NetEvent::Request {
                    protocol: Protocol::Hello,
                    responder,
                    ..
                } = event
                {
                    let hello = hello.clone();
                    tokio::spawn(async move { responder.respond(hello).await });
                }
            }
        });
        Self {
            net,
            user,
            certificate,
        }
    }

    /// A peer for a brand-new user of its own.
    pub async fn stranger() -> Self {
        Self::start(Arc::new(UserSecret::generate().unwrap())).await
    }

    /// Its user id.
    pub fn user_id(&self) -> UserId {
        self.user.user_id()
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// Its signed contact card.
    pub fn card(&self) -> ContactCard {
        ContactCard::issue(
            &self.user,
            "hostile",
            std::slice::from_ref(&self.certificate),
            &[],
            Timestamp::now(),
        )
    }

    /// Sends `payload` on `protocol` to `peer` at `addr`, without a hello first.
    pub async fn raw(
        &self,
        peer: PeerId,
        addr: &Multiaddr,
        protocol: Protocol,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let call = self
            .net
            .request(peer, protocol, payload, vec![addr.clone()]);
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Says hello to `peer` (so it knows which user this device claims to be).
    pub async fn hello(&self, peer: PeerId, addr: &Multiaddr) -> Result<(), String> {
        let hello = wire::encode(&Hello {
            version: 1,
            certificate: self.certificate.clone(),
        });
        self.raw(peer, addr, Protocol::Hello, hello)
            .await
            .map(|_| ())
    }

    /// Redeems an invite link with this peer's card, as a new contact would.
    pub async fn redeem(&self, link: &str) -> RedeemResponse {
        let invite = Invite::parse(link).unwrap();
        let request = RedeemRequest {
            version: 1,
            secret: invite.secret(),
            card: self.card().to_bytes(),
        };
        let peer = invite.device().peer_id();
        let bytes = self
            .net
            .request(
                peer,
                Protocol::Invite,
                wire::encode(&request),
                invite.addrs(),
            )
            .await
            .unwrap();
        wire::decode(&bytes, Protocol::Invite.max_response()).unwrap()
    }
}

/// A node's peer id and first listen address, from `/v1/node`.
pub async fn address_of(node: &crate::Node) -> (PeerId, Multiaddr) {
    let (_, info) = node.get("/v1/node").await;
    let peer: PeerId = info["peer_id"].as_str().unwrap().parse().unwrap();
    let addr: Multiaddr = info["listen_addrs"][0].as_str().unwrap().parse().unwrap();
    (peer, addr)
}
