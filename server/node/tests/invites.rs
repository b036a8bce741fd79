//! Fifty different users redeem one single-use invite at the same moment, each over its own
//! libp2p connection: exactly one succeeds, the others are told it is used, and the inviter
//! ends up with exactly one contact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use volli_core::wire::{self, RedeemRequest, RedeemResponse};
use volli_core::{ContactCard, DeviceCertificate, Invite, Permissions, Timestamp, UserSecret};
use volli_net::{NetConfig, Protocol};

async fn inviter_addrs(app: &support::App) -> Vec<multiaddr::Multiaddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let addrs = app.node.state.node.listen_addrs();
        if !addrs.is_empty() {
            return addrs;
        }
        assert!(
            Instant::now() < deadline,
            "the node never reported a listen address"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_redemptions_of_a_single_use_invite_give_exactly_one_contact() {
    let app = support::app().await;
    let addrs = inviter_addrs(&app).await;
    let created = app
        .node
        .state
        .contacts
        .create_invite(Duration::from_secs(600), 1)
        .await
        .unwrap();
    let invite = Invite::parse(&created.link).unwrap();
    let inviter = invite.device().peer_id();

    let mut redeemers = Vec::new();
    for _ in 0..50 {
        let key = Keypair::generate_ed25519();
        let user = UserSecret::generate().unwrap();
        let cert = DeviceCertificate::issue(
            &user,
            key.public().to_peer_id(),
            "r",
            Permissions::ALL,
            Timestamp::now(),
        );
        let card = ContactCard::issue(&user, "redeemer", &[cert], &[], Timestamp::now());
        let mut config = NetConfig::new(key, vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]);
        config.dht = false;
        config.relay_server = false;
        let (net, _events) = volli_net::start(config).await.unwrap();
        // Connect first, so the redemptions race on the inviter, not on dialing.
        net.dial(inviter, addrs.clone()).await.unwrap();
        redeemers.push((net, card, _events));
    }

    let request = |card: &ContactCard| {
        wire::encode(&RedeemRequest {
            version: 1,
            secret: invite.secret(),
            card: card.to_bytes(),
        })
    };
    let answers = futures::future::join_all(redeemers.iter().map(|(net, card, _)| {
        let payload = request(card);
        let addrs = addrs.clone();
        async move {
            net.request(inviter, Protocol::Invite, payload, addrs)
                .await
                .unwrap()
        }
    }))
    .await;
    let answers: Vec<RedeemResponse> = answers
        .iter()
        .map(|b| wire::decode(b, 1 << 16).unwrap())
        .collect();
    let accepted = answers
        .iter()
        .filter(|a| matches!(a, RedeemResponse::Accepted { .. }))
        .count();
    let used = answers
        .iter()
        .filter(|a| **a == RedeemResponse::Used)
        .count();
    assert_eq!((accepted, used), (1, 49), "{answers:?}");
    assert_eq!(app.node.state.contacts.list().await.unwrap().len(), 1);
}
