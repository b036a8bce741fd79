//! Pairing a new device with an existing one: the link (`volli://pair/…`, for a QR code), the
//! short human code (`427-crossbow-nebula-orbit`), and the cryptographic handshake both use.
//!
//! **Link**: the existing device's peer id and addresses, a session id, its expiry and a
//! 32-byte secret. **Code**: a *nameplate* (1–999, public: it only helps the new node find
//! the device on the LAN or in the DHT) and three words from a list of 2,048 (33 bits,
//! secret). Either way the secret is the password of a SPAKE2 exchange bound to both peer
//! ids and the session, with key confirmation in both directions: an eavesdropper learns
//! nothing, and someone guessing a code gets one try per session (a wrong guess burns it).
//!
//! What the existing device then hands over (keys, certificate, vault) is sealed with HPKE
//! in PSK mode to an X-Wing key the new node made for this exchange, the PSK derived from the
//! SPAKE2 key: a recording of the pairing stays confidential even against a future quantum
//! computer that breaks the elliptic-curve part. The new device and the user see a short
//! check code derived from the same key, so an approval goes to the device that shows it.
//! No I/O here: the node drives the exchange over `/volli/pair/1`.

use crate::xwing::XWing;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, PskBundle, Serializable as _};
use multiaddr::Multiaddr;
use serde::{Deserialize, Serialize};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroize as _;

use crate::ids::{PeerId, UserId};
use crate::time::Timestamp;

/// The link scheme and path prefix.
pub const LINK_PREFIX: &str = "volli://pair/";
/// Longest link accepted.
pub const MAX_LINK_LEN: usize = 2048;
/// Addresses a link carries at most.
pub const MAX_ADDRS: usize = 8;
/// Highest nameplate.
pub const MAX_NAMEPLATE: u16 = 999;
const VERSION: u8 = 1;
const WORDS_IN_CODE: usize = 3;
const HPKE_INFO: &[u8] = b"volli/pair/1 bundle";

static WORDS: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| include_str!("pairing/words.txt").lines().collect());

/// The word list (2,048 words, sorted), shared with recovery phrases.
pub(crate) fn words() -> &'static [&'static str] {
    &WORDS
}

/// Why a link, a code or a step of the exchange was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// Not a pairing link or code.
    #[error("not a Volli pairing link or code")]
    Malformed,
    /// The other side does not know the same secret (a wrong code, or someone else).
    #[error("the pairing secret does not match")]
    Mismatch,
    /// Sealing or opening the handed-over bundle failed.
    #[error("the pairing bundle does not open")]
    Bundle,
}

/// Which session a new node asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionRef {
    /// By the session id in a link.
    Link([u8; 16]),
    /// By the nameplate of a code.
    Nameplate(u16),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LinkBody {
    version: u8,
    user: UserId,
    #[serde(with = "crate::cert::peer_id_bytes")]
    peer: PeerId,
    addrs: Vec<Vec<u8>>,
    session: [u8; 16],
    secret: [u8; 32],
    expires_at: Timestamp,
}

/// A pairing link: everything a new node needs to reach the existing device and prove it
/// holds the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingLink(LinkBody);

impl PairingLink {
    /// A link to device `peer` of `user`, reachable at `addrs`.
    pub fn new(
        user: UserId,
        peer: PeerId,
        addrs: &[Multiaddr],
        session: [u8; 16],
        secret: [u8; 32],
        expires_at: Timestamp,
    ) -> Self {
        Self(LinkBody {
            version: VERSION,
            user,
            peer,
            addrs: addrs.iter().take(MAX_ADDRS).map(|a| a.to_vec()).collect(),
            session,
            secret,
            expires_at,
        })
    }

    /// The `volli://pair/…` text.
    pub fn to_link(&self) -> String {
        let bytes = postcard::to_allocvec(&self.0)
            .unwrap_or_else(|_| unreachable!("postcard encodes to a Vec"));
        format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses a link (bounded; nothing trailing).
    pub fn parse(link: &str) -> Result<Self, PairingError> {
        let link = link.trim();
        if link.len() > MAX_LINK_LEN {
            return Err(PairingError::Malformed);
        }
        let encoded = link
            .strip_prefix(LINK_PREFIX)
            .ok_or(PairingError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| PairingError::Malformed)?;
        let body: LinkBody = match postcard::take_from_bytes(&bytes) {
            Ok((body, [])) => body,
            _ => return Err(PairingError::Malformed),
        };
        if body.version != VERSION || body.addrs.len() > MAX_ADDRS {
            return Err(PairingError::Malformed);
        }
        Ok(Self(body))
    }

    /// The user the device belongs to (as the link claims: proven by the exchange).
    pub fn user(&self) -> UserId {
        self.0.user
    }
    /// The existing device.
    pub fn peer(&self) -> PeerId {
        self.0.peer
    }
    /// Where to reach it.
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.0
            .addrs
            .iter()
            .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
            .collect()
    }
    /// The session.
    pub fn session(&self) -> SessionRef {
        SessionRef::Link(self.0.session)
    }
    /// The password of the exchange.
    pub fn password(&self) -> Vec<u8> {
        self.0.secret.to_vec()
    }
    /// When it stops working.
    pub fn expires_at(&self) -> Timestamp {
        self.0.expires_at
    }
}

/// A short pairing code: `<nameplate>-<word>-<word>-<word>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairingCode {
    nameplate: u16,
    words: [u16; WORDS_IN_CODE],
}

impl PairingCode {
    /// A fresh random code.
    pub fn random() -> Result<Self, PairingError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|_| PairingError::Malformed)?;
        let n = u64::from_le_bytes(bytes);
        let nameplate = u16::try_from(n % u64::from(MAX_NAMEPLATE)).unwrap_or(0) + 1;
        let mut words = [0u16; WORDS_IN_CODE];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u16::try_from((n >> (10 + 11 * i)) & 0x7ff).unwrap_or(0);
        }
        Ok(Self { nameplate, words })
    }

    /// Parses a code as a person typed it (case and surrounding spaces do not matter).
    pub fn parse(text: &str) -> Result<Self, PairingError> {
        let text = text.trim().to_ascii_lowercase();
        if text.len() > 64 {
            return Err(PairingError::Malformed);
        }
        let mut parts = text.split('-');
        let nameplate: u16 = parts
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=MAX_NAMEPLATE).contains(n))
            .ok_or(PairingError::Malformed)?;
        let mut words = [0u16; WORDS_IN_CODE];
        for w in &mut words {
            let word = parts.next().ok_or(PairingError::Malformed)?;
            let index = WORDS
                .binary_search(&word)
                .map_err(|_| PairingError::Malformed)?;
            *w = u16::try_from(index).map_err(|_| PairingError::Malformed)?;
        }
        if parts.next().is_some() {
            return Err(PairingError::Malformed);
        }
        Ok(Self { nameplate, words })
    }

    /// The public part, used to find the device.
    pub fn nameplate(&self) -> u16 {
        self.nameplate
    }

    /// The session it names.
    pub fn session(&self) -> SessionRef {
        SessionRef::Nameplate(self.nameplate)
    }

    /// The password of the exchange (the words).
    pub fn password(&self) -> Vec<u8> {
        self.words
            .iter()
            .map(|w| WORDS[usize::from(*w)])
            .collect::<Vec<_>>()
            .join("-")
            .into_bytes()
    }
}

impl std::fmt::Display for PairingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.nameplate)?;
        for w in self.words {
            write!(f, "-{}", WORDS[usize::from(w)])?;
        }
        Ok(())
    }
}

/// The DHT key under which a device waiting with a code is found: derived from the
/// nameplate only, never from the words.
pub fn nameplate_key(nameplate: u16) -> Vec<u8> {
    let mut key = b"/volli/pair/".to_vec();
    key.extend_from_slice(&blake3::hash(&nameplate.to_le_bytes()).as_bytes()[..16]);
    key
}

/// Which end of the exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The existing device.
    Device,
    /// The new node.
    Joiner,
}

/// One side of a SPAKE2 exchange, started.
pub struct Exchange {
    side: Side,
    spake: Spake2<Ed25519Group>,
    message: Vec<u8>,
    binding: Vec<u8>,
}

/// The key both sides share after the exchange.
pub struct SharedKey {
    key: [u8; 32],
    transcript: [u8; 32],
}

impl Exchange {
    /// Starts an exchange on `side`, with `password`, bound to the session and both peers.
    pub fn start(
        side: Side,
        password: &[u8],
        session: SessionRef,
        device: PeerId,
        joiner: PeerId,
    ) -> Self {
        let mut binding = b"volli/pair/1".to_vec();
        binding.extend_from_slice(
            &postcard::to_allocvec(&session).unwrap_or_else(|_| unreachable!("postcard")),
        );
        let id_a = [binding.as_slice(), b" device ", &device.to_bytes()].concat();
        let id_b = [binding.as_slice(), b" joiner ", &joiner.to_bytes()].concat();
        let password = Password::new(password);
        let (spake, message) = match side {
            Side::Device => Spake2::<Ed25519Group>::start_a(
                &password,
                &Identity::new(&id_a),
                &Identity::new(&id_b),
            ),
            Side::Joiner => Spake2::<Ed25519Group>::start_b(
                &password,
                &Identity::new(&id_a),
                &Identity::new(&id_b),
            ),
        };
        binding.extend_from_slice(&id_a);
        binding.extend_from_slice(&id_b);
        Self {
            side,
            spake,
            message,
            binding,
        }
    }

    /// The message to send to the other side.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Finishes with the other side's message. `extra` is everything else the two sides
    /// exchanged in the clear (the joiner's reply key and name), which the confirmations
    /// then cover.
    pub fn finish(self, theirs: &[u8], extra: &[u8]) -> Result<SharedKey, PairingError> {
        let (device_msg, joiner_msg) = match self.side {
            Side::Device => (self.message.as_slice(), theirs),
            Side::Joiner => (theirs, self.message.as_slice()),
        };
        let mut transcript = blake3::Hasher::new_derive_key("volli pair transcript v1");
        transcript.update(&self.binding);
        transcript.update(&(device_msg.len() as u64).to_le_bytes());
        transcript.update(device_msg);
        transcript.update(&(joiner_msg.len() as u64).to_le_bytes());
        transcript.update(joiner_msg);
        transcript.update(extra);
        let transcript = *transcript.finalize().as_bytes();
        let mut raw = self
            .spake
            .finish(theirs)
            .map_err(|_| PairingError::Mismatch)?;
        let mut input = raw.clone();
        input.extend_from_slice(&transcript);
        let key = blake3::derive_key("volli pair key v1", &input);
        raw.zeroize();
        input.zeroize();
        Ok(SharedKey { key, transcript })
    }
}

impl SharedKey {
    /// The confirmation `side` sends: proof it derived the same key.
    pub fn confirmation(&self, side: Side) -> [u8; 32] {
        let label: &[u8] = match side {
            Side::Device => b"device confirms",
            Side::Joiner => b"joiner confirms",
        };
        *blake3::keyed_hash(&self.key, &[label, &self.transcript].concat()).as_bytes()
    }

    /// Checks the other side's confirmation, in constant time.
    pub fn check(&self, side: Side, confirmation: &[u8; 32]) -> Result<(), PairingError> {
        if bool::from(self.confirmation(side).ct_eq(confirmation)) {
            Ok(())
        } else {
            Err(PairingError::Mismatch)
        }
    }

    /// The six-digit code both sides show the user.
    pub fn check_code(&self) -> String {
        let h = blake3::keyed_hash(&self.key, b"check code");
        let n = u32::from_le_bytes([
            h.as_bytes()[0],
            h.as_bytes()[1],
            h.as_bytes()[2],
            h.as_bytes()[3],
        ]);
        format!("{:06}", n % 1_000_000)
    }

    fn psk(&self) -> [u8; 32] {
        blake3::derive_key("volli pair bundle psk v1", &self.key)
    }

    /// Seals `bundle` to the joiner's X-Wing key (made for this exchange), in HPKE's PSK
    /// mode with a key from this exchange: `(encapsulation, ciphertext)`.
    pub fn seal_bundle(
        &self,
        reply_key: &[u8],
        bundle: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), PairingError> {
        let public = <XWing as hpke::Kem>::PublicKey::from_bytes(reply_key)
            .map_err(|_| PairingError::Bundle)?;
        let psk = self.psk();
        let mode =
            OpModeS::Psk(PskBundle::new(&psk, b"volli pair").map_err(|_| PairingError::Bundle)?);
        let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, XWing>(
            &mode,
            &public,
            HPKE_INFO,
            bundle,
            &self.transcript,
        )
        .map_err(|_| PairingError::Bundle)?;
        Ok((encapped.to_bytes().to_vec(), ciphertext))
    }

    /// Opens what [`Self::seal_bundle`] sealed, with the joiner's X-Wing key.
    pub fn open_bundle(
        &self,
        reply: &ReplyKey,
        encapped: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, PairingError> {
        let encapped = <XWing as hpke::Kem>::EncappedKey::from_bytes(encapped)
            .map_err(|_| PairingError::Bundle)?;
        let psk = self.psk();
        let mode =
            OpModeR::Psk(PskBundle::new(&psk, b"volli pair").map_err(|_| PairingError::Bundle)?);
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, XWing>(
            &mode,
            &reply.secret,
            &encapped,
            HPKE_INFO,
            ciphertext,
            &self.transcript,
        )
        .map_err(|_| PairingError::Bundle)
    }
}

impl Drop for SharedKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// An X-Wing key pair made for one exchange (pairing, or one round of vault sync): what the
/// other side seals to.
pub struct ReplyKey {
    secret: <XWing as hpke::Kem>::PrivateKey,
    public: Vec<u8>,
}

impl ReplyKey {
    /// A fresh key pair.
    pub fn generate() -> Result<Self, PairingError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| PairingError::Bundle)?;
        let (secret, public) = XWing::derive_keypair(&seed);
        seed.zeroize();
        Ok(Self {
            secret,
            public: public.to_bytes().to_vec(),
        })
    }

    /// The public key, to send.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Opens what was sealed to it with [`seal_to`].
    pub fn open(
        &self,
        info: &[u8],
        encapped: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, PairingError> {
        let encapped = <XWing as hpke::Kem>::EncappedKey::from_bytes(encapped)
            .map_err(|_| PairingError::Bundle)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, XWing>(
            &OpModeR::Base,
            &self.secret,
            &encapped,
            info,
            ciphertext,
            b"",
        )
        .map_err(|_| PairingError::Bundle)
    }
}

/// Seals `plaintext` to a [`ReplyKey`]'s public key (HPKE base mode, X-Wing):
/// `(encapsulation, ciphertext)`.
pub fn seal_to(
    reply_key: &[u8],
    info: &[u8],
    plaintext: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), PairingError> {
    let public =
        <XWing as hpke::Kem>::PublicKey::from_bytes(reply_key).map_err(|_| PairingError::Bundle)?;
    let (encapped, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, XWing>(
        &OpModeS::Base,
        &public,
        info,
        plaintext,
        b"",
    )
    .map_err(|_| PairingError::Bundle)?;
    Ok((encapped.to_bytes().to_vec(), ciphertext))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn peers() -> (PeerId, PeerId) {
        (PeerId::random(), PeerId::random())
    }

    fn run(device_pw: &[u8], joiner_pw: &[u8]) -> Result<(SharedKey, SharedKey), PairingError> {
        let (d, j) = peers();
        let session = SessionRef::Nameplate(7);
        let device = Exchange::start(Side::Device, device_pw, session, d, j);
        let joiner = Exchange::start(Side::Joiner, joiner_pw, session, d, j);
        let (dm, jm) = (device.message().to_vec(), joiner.message().to_vec());
        let dk = device.finish(&jm, b"extra")?;
        let jk = joiner.finish(&dm, b"extra")?;
        jk.check(Side::Device, &dk.confirmation(Side::Device))?;
        dk.check(Side::Joiner, &jk.confirmation(Side::Joiner))?;
        Ok((dk, jk))
    }

    #[test]
    fn the_same_code_gives_the_same_key_and_check_code() {
        let code = PairingCode::random().unwrap();
        let (d, j) = run(&code.password(), &code.password()).unwrap();
        assert_eq!(d.check_code(), j.check_code());
        assert_eq!(d.check_code().len(), 6);
        let reply = ReplyKey::generate().unwrap();
        let (e, c) = d.seal_bundle(reply.public(), b"the keys").unwrap();
        assert_eq!(j.open_bundle(&reply, &e, &c).unwrap(), b"the keys");
    }

    #[test]
    fn a_wrong_code_fails_confirmation() {
        assert_eq!(
            run(b"apple-banana-cherry", b"apple-banana-cheese").err(),
            Some(PairingError::Mismatch)
        );
    }

    #[test]
    fn codes_round_trip_and_carry_33_secret_bits() {
        for _ in 0..50 {
            let code = PairingCode::random().unwrap();
            let text = code.to_string();
            assert_eq!(PairingCode::parse(&text).unwrap(), code);
            assert_eq!(
                PairingCode::parse(&format!("  {}  ", text.to_uppercase())).unwrap(),
                code
            );
            assert!((1..=MAX_NAMEPLATE).contains(&code.nameplate()));
        }
        assert_eq!(WORDS.len(), 2048);
        assert!(
            WORDS.windows(2).all(|w| w[0] < w[1]),
            "sorted, for the binary search"
        );
        for bad in [
            "",
            "0-abandon-ability-able",
            "1000-abandon-ability-able",
            "7-abandon-ability",
            "7-abandon-ability-able-about",
            "7-abandon-ability-xylophonez",
            "x-abandon-ability-able",
        ] {
            assert!(PairingCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_round_trip() {
        let (d, _) = peers();
        let link = PairingLink::new(
            crate::UserSecret::from_master([1; 32]).user_id(),
            d,
            &["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            [3; 16],
            [4; 32],
            Timestamp::from_millis(1_000),
        );
        let text = link.to_link();
        assert!(text.starts_with(LINK_PREFIX));
        assert_eq!(PairingLink::parse(&text).unwrap(), link);
        assert!(PairingLink::parse("volli://pair/AAAA").is_err());
        assert!(PairingLink::parse(&format!("{LINK_PREFIX}{}", "A".repeat(MAX_LINK_LEN))).is_err());
    }

    proptest! {
        #[test]
        fn garbage_links_and_codes_never_panic(text in ".{0,300}", bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = PairingCode::parse(&text);
            let _ = PairingLink::parse(&text);
            let _ = PairingLink::parse(&format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes)));
        }
    }
}
