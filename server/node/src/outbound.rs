//! Requests to other nodes on the application protocols, always after a hello.
//!
//! A node answers a peer on `/volli/msg/1`, `/volli/relay/1` and `/volli/sync/1` only once
//! the peer proved which user it belongs to (its device certificate, in a hello). So before
//! any such request this side makes sure the peer has answered our hello on the current
//! connection: the other side then knows us, and can refuse peers that never said hello at
//! once, without waiting for one. Invites go out without a hello: the inviter does not know
//! the invitee yet, and the invite itself says who it is; pairings likewise.

use std::sync::Arc;
use std::time::Duration;

use multiaddr::Multiaddr;
use serde::de::DeserializeOwned;
use volli_core::wire::{self, Hello};
use volli_core::{DeviceCertificate, PeerId, UserId};
use volli_net::{NetClient, NetError, Protocol};

use crate::identity::Identity;
use crate::peers::Peers;

/// Sends requests, greeting the peer first when needed. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    net: NetClient,
    peers: Peers,
    hello: Arc<Vec<u8>>,
}

impl Outbound {
    /// Requests from `identity`'s device over `net`.
    pub fn new(net: NetClient, peers: Peers, identity: &Identity) -> Self {
        let hello = wire::encode(&Hello {
            version: 1,
            certificate: identity.certificate.clone(),
        });
        Self {
            net,
            peers,
            hello: Arc::new(hello),
        }
    }

    /// Our hello, to answer one with.
    pub fn hello(&self) -> Vec<u8> {
        self.hello.as_ref().clone()
    }

    /// Sends `payload` on `protocol` to `peer` (dialing `addrs` if not connected), after a
    /// hello if the peer has not answered one on this connection yet.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: Protocol,
        payload: Vec<u8>,
        addrs: Vec<Multiaddr>,
    ) -> Result<Vec<u8>, NetError> {
        // Invites and pairings go to a device that does not know us yet.
        let anonymous = matches!(
            protocol,
            Protocol::Hello | Protocol::Invite | Protocol::Pair
        );
        if !anonymous && !self.peers.greeted(&peer) {
            self.greet(peer, addrs.clone()).await?;
        }
        self.net.request(peer, protocol, payload, addrs).await
    }

    /// [`Outbound::request`] within `timeout`, its answer decoded; errors as text.
    pub async fn call<T: DeserializeOwned>(
        &self,
        peer: PeerId,
        protocol: Protocol,
        payload: Vec<u8>,
        addrs: Vec<Multiaddr>,
        timeout: Duration,
    ) -> Result<T, String> {
        match tokio::time::timeout(timeout, self.request(peer, protocol, payload, addrs)).await {
            Ok(Ok(bytes)) => {
                wire::decode(&bytes, protocol.max_response()).map_err(|e| e.to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Asks one of a contact's `devices` after another, connected ones first, until one
    /// answers: `ask` gets each device and its known addresses. With `known_only`, devices
    /// neither connected nor with an address are not tried. The last error when none did.
    pub async fn ask_any<T, F: Future<Output = Result<T, String>>>(
        &self,
        devices: &[DeviceCertificate],
        known_only: bool,
        mut ask: impl FnMut(PeerId, Vec<Multiaddr>) -> F,
    ) -> Result<T, String> {
        let mut last = String::from("no device known");
        for (peer, connected, addrs) in self.peers.dial_targets(devices) {
            if known_only && !connected && addrs.is_empty() {
                continue;
            }
            match ask(peer, addrs).await {
                Ok(answer) => return Ok(answer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Exchanges hellos with `peer`; returns the user it proved it belongs to, if any.
    pub async fn greet(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<Option<UserId>, NetError> {
        let answer = self
            .net
            .request(peer, Protocol::Hello, self.hello(), addrs)
            .await?;
        let user = self.heard(peer, &answer);
        self.peers.set_greeted(peer);
        Ok(user)
    }

    /// Binds `peer` to a user if the hello in `bytes` carries a certificate that verifies
    /// for exactly that peer id.
    pub fn heard(&self, peer: PeerId, bytes: &[u8]) -> Option<UserId> {
        let Ok(hello) = wire::decode::<Hello>(bytes, Protocol::Hello.max_response()) else {
            tracing::debug!(%peer, "unreadable hello");
            return None;
        };
        let cert: DeviceCertificate = hello.certificate;
        if cert.verify_for(&cert.user_id(), &peer).is_err() {
            tracing::warn!(%peer, "a peer presented a certificate that is not its own");
            return None;
        }
        let user = cert.user_id();
        self.peers.verified(cert);
        Some(user)
    }
}
