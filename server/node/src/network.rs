//! Dispatches network events: connections update the peer table and trigger the hello
//! exchange that binds a peer id to a user; inbound requests go to the service that owns
//! their protocol. Requests are handled concurrently, at most [`MAX_INFLIGHT`] at once.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use volli_core::wire::{self, Hello};
use volli_core::{DeviceCertificate, PeerId, UserId};
use volli_net::{NetClient, NetEvent, Protocol, Responder};
use volli_store::Vault;

use crate::contacts::Contacts;
use crate::discovery::Discovery;
use crate::identity::Identity;
use crate::messaging::Messaging;
use crate::peers::Peers;
use crate::relay::Relay;

/// Inbound requests handled at once; more wait.
pub const MAX_INFLIGHT: usize = 64;

/// What the dispatcher hands events to.
#[derive(Clone)]
pub struct Dispatch {
    /// The network.
    pub net: NetClient,
    /// The peer table.
    pub peers: Peers,
    /// Discovery.
    pub discovery: Discovery,
    /// Contacts and invites.
    pub contacts: Contacts,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The vault.
    pub vault: Vault,
    /// Messages.
    pub messaging: Messaging,
    /// Friends' relays.
    pub relay: Relay,
}

impl Dispatch {
    /// Handles events until the network stops.
    pub fn spawn(self, mut events: mpsc::Receiver<NetEvent>) {
        let permits = Arc::new(Semaphore::new(MAX_INFLIGHT));
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    NetEvent::ListenAddrs(_) => self.discovery.wake(),
                    NetEvent::Connected { peer, addr } => {
                        self.peers.set_connected(peer, true, Some(&addr));
                        let this = self.clone();
                        tokio::spawn(async move { this.say_hello(peer).await });
                    }
                    NetEvent::Disconnected { peer } => {
                        self.peers.set_connected(peer, false, None);
                        if let Some(user) = self.peers.get(&peer).and_then(|e| e.user_id) {
                            self.discovery.contact_lost(user);
                        }
                    }
                    NetEvent::Identified { peer, listen_addrs } => {
                        self.peers.add_addrs(peer, &listen_addrs)
                    }
                    NetEvent::Rtt { peer, rtt } => self.peers.rtt(peer, rtt),
                    NetEvent::Request {
                        peer,
                        protocol,
                        payload,
                        responder,
                    } => {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.answer(peer, protocol, payload, responder).await;
                            drop(permit);
                        });
                    }
                    _ => {}
                }
            }
        });
    }

    fn hello(&self) -> Vec<u8> {
        wire::encode(&Hello {
            version: 1,
            certificate: self.identity.certificate.clone(),
        })
    }

    /// Sends our certificate and checks the peer's.
    async fn say_hello(&self, peer: PeerId) {
        match self
            .net
            .request(peer, Protocol::Hello, self.hello(), Vec::new())
            .await
        {
            Ok(bytes) => {
                // Once per connection (the answer to our own hello): a contact's device
                // is here, so flush what waits for it and fetch what its node holds.
                if let Some(user) = self.heard(peer, &bytes).await
                    && matches!(self.vault.contact(user).await, Ok(Some(_)))
                {
                    self.relay.contact_ready(user).await;
                    self.messaging.contact_ready(user).await;
                }
            }
            Err(e) => tracing::debug!(%peer, error = %e, "hello failed"),
        }
    }

    /// Binds `peer` to a user if its certificate verifies for exactly that peer id.
    async fn heard(&self, peer: PeerId, bytes: &[u8]) -> Option<UserId> {
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
        self.peers.verified(cert.clone());
        if let Err(e) = self.vault.add_contact_device(cert).await {
            tracing::warn!(error = %e, "cannot record a contact's device");
        }
        Some(user)
    }

    async fn answer(
        &self,
        peer: PeerId,
        protocol: Protocol,
        payload: Vec<u8>,
        responder: Responder,
    ) {
        match protocol {
            Protocol::Hello => {
                let _ = self.heard(peer, &payload).await;
                responder.respond(self.hello()).await;
            }
            Protocol::Invite => {
                let response = self.contacts.handle_redeem(peer, &payload).await;
                responder.respond(response).await;
            }
            Protocol::Message => {
                responder
                    .respond(self.messaging.handle(&payload).await)
                    .await
            }
            Protocol::Relay => {
                let response = self.relay.handle(peer, &payload).await;
                responder.respond(response).await;
            }
            // Not served yet: dropping the responder fails the requester's call.
            _ => drop(responder),
        }
    }
}
