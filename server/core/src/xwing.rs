//! X-Wing as HPKE's KEM, with the decapsulation key expanded once.
//!
//! An X-Wing private key is a 32-byte seed; the ML-KEM-768 and X25519 keys it stands for are
//! derived from it with SHAKE256 and ML-KEM's key generation. The `hpke` crate's `XWing`
//! keeps only the seed and derives both keys again on every decapsulation, which is about
//! half of what opening an envelope costs. [`XWing`] here is the same KEM — same identifier,
//! same encapsulation, same shared secret, so envelopes sealed by either are opened by either
//! — whose private key holds the expanded keys, derived once when the key is made.

use hpke::hybrid_array::typenum::U32;
use hpke::kem::SharedSecret;
use hpke::rand_core::CryptoRng;
use hpke::{Deserializable, HpkeError, Serializable};
use ml_kem::array::Array;
use ml_kem::{Decapsulate as _, FromSeed as _, MlKem768, ml_kem_768};
use shake::{ExtendableOutput as _, Shake256, XofReader as _};
use subtle::{Choice, ConstantTimeEq};
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};
use zeroize::Zeroize as _;

/// The X-Wing combiner's label (draft-connolly-cfrg-xwing-kem).
const LABEL: &[u8; 6] = br"\.//^\";
/// ML-KEM-768's part of an X-Wing ciphertext; the rest is the X25519 ephemeral key.
const CT_M_LEN: usize = 1088;

/// The `hpke` crate's X-Wing, whose public keys and encapsulations these are.
type Upstream = hpke::kem::XWing;

/// X-Wing (ML-KEM-768 + X25519) for HPKE, with expanded private keys.
pub struct XWing;

/// An X-Wing private key: its seed, and the keys derived from it.
#[derive(Clone)]
pub struct PrivateKey {
    seed: [u8; 32],
    ml_kem: ml_kem_768::DecapsulationKey,
    x25519: StaticSecret,
    public: <Upstream as hpke::Kem>::PublicKey,
    x25519_public: X25519Public,
}

impl PrivateKey {
    /// Expands `seed` (X-Wing's `expandDecapsulationKey`).
    fn expand(seed: [u8; 32]) -> Self {
        let mut shake = Shake256::default();
        shake::Update::update(&mut shake, &seed);
        let mut reader = shake.finalize_xof();
        let mut ml_kem_seed = Array::<u8, _>::default();
        reader.read(&mut ml_kem_seed);
        let (ml_kem, ml_kem_public) = MlKem768::from_seed(&ml_kem_seed);
        ml_kem_seed.zeroize();
        let mut x25519_bytes = [0u8; 32];
        reader.read(&mut x25519_bytes);
        let x25519 = StaticSecret::from(x25519_bytes);
        x25519_bytes.zeroize();
        let x25519_public = X25519Public::from(&x25519);
        let mut public = [0u8; 1216];
        public[..1184].copy_from_slice(&ml_kem::KeyExport::to_bytes(&ml_kem_public));
        public[1184..].copy_from_slice(x25519_public.as_bytes());
        let public = <Upstream as hpke::Kem>::PublicKey::from_bytes(&public)
            .unwrap_or_else(|_| unreachable!("an encoded ML-KEM key and X25519 key parse"));
        Self {
            seed,
            ml_kem,
            x25519,
            public,
            x25519_public,
        }
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl Serializable for PrivateKey {
    type OutputSize = U32;

    fn write_exact(&self, buf: &mut [u8]) {
        buf.copy_from_slice(&self.seed);
    }
}

impl Deserializable for PrivateKey {
    fn from_bytes(encoded: &[u8]) -> Result<Self, HpkeError> {
        let seed: [u8; 32] = encoded
            .try_into()
            .map_err(|_| HpkeError::IncorrectInputLength(32, encoded.len()))?;
        Ok(Self::expand(seed))
    }
}

impl ConstantTimeEq for PrivateKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.seed.ct_eq(&other.seed)
    }
}

impl hpke::Kem for XWing {
    type PublicKey = <Upstream as hpke::Kem>::PublicKey;
    type PrivateKey = PrivateKey;
    type EncappedKey = <Upstream as hpke::Kem>::EncappedKey;
    type NSecret = U32;
    const KEM_ID: u16 = <Upstream as hpke::Kem>::KEM_ID;

    fn sk_to_pk(sk: &PrivateKey) -> Self::PublicKey {
        sk.public.clone()
    }

    fn derive_keypair(ikm: &[u8]) -> (PrivateKey, Self::PublicKey) {
        // The same derivation as upstream (SHAKE256 LabeledDerive of the seed), then expanded.
        let (upstream, _) = Upstream::derive_keypair(ikm);
        let mut seed = [0u8; 32];
        upstream.write_exact(&mut seed);
        let sk = PrivateKey::expand(seed);
        seed.zeroize();
        let pk = sk.public.clone();
        (sk, pk)
    }

    fn decap(
        sk: &PrivateKey,
        pk_sender_id: Option<&Self::PublicKey>,
        encapped: &Self::EncappedKey,
    ) -> Result<SharedSecret<Self>, HpkeError> {
        if pk_sender_id.is_some() {
            // X-Wing has no authenticated mode.
            return Err(HpkeError::DecapError);
        }
        let ct = encapped.to_bytes();
        let (ct_m, ct_x) = ct.split_at(CT_M_LEN);
        let ct_m = ml_kem_768::Ciphertext::try_from(ct_m).map_err(|_| HpkeError::DecapError)?;
        let ct_x: [u8; 32] = ct_x.try_into().map_err(|_| HpkeError::DecapError)?;
        let ss_m = sk.ml_kem.decapsulate(&ct_m);
        let ss_x = sk.x25519.diffie_hellman(&X25519Public::from(ct_x));
        let mut combiner = <sha3::Sha3_256 as sha3::Digest>::new();
        for part in [
            &ss_m[..],
            ss_x.as_bytes(),
            &ct_x,
            sk.x25519_public.as_bytes(),
            LABEL,
        ] {
            sha3::Digest::update(&mut combiner, part);
        }
        Ok(SharedSecret(Array(sha3::Digest::finalize(combiner).into())))
    }

    fn encap_with_rng(
        pk_recip: &Self::PublicKey,
        sender_id_keypair: Option<(&PrivateKey, &Self::PublicKey)>,
        csprng: &mut impl CryptoRng,
    ) -> Result<(SharedSecret<Self>, Self::EncappedKey), HpkeError> {
        if sender_id_keypair.is_some() {
            return Err(HpkeError::EncapError);
        }
        let (ss, encapped) = Upstream::encap_with_rng(pk_recip, None, csprng)?;
        Ok((SharedSecret(ss.0), encapped))
    }
}

#[cfg(test)]
mod tests {
    use hpke::Kem as _;

    use super::*;

    #[test]
    fn agrees_with_upstream_both_ways() {
        for ikm in [[0u8; 32], [7; 32], [255; 32]] {
            let (up_sk, up_pk) = Upstream::derive_keypair(&ikm);
            let (sk, pk) = XWing::derive_keypair(&ikm);
            assert_eq!(pk, up_pk, "same public key from the same seed");
            assert_eq!(sk.to_bytes(), up_sk.to_bytes());
            let again = PrivateKey::from_bytes(&sk.to_bytes()).unwrap();
            assert_eq!(XWing::sk_to_pk(&again), pk);

            let (ss, ct) = Upstream::encap(&pk, None).unwrap();
            let mine = XWing::decap(&sk, None, &ct).unwrap();
            assert_eq!(mine.0, ss.0, "upstream's encapsulation opens here");

            let (ss, ct) = XWing::encap(&pk, None).unwrap();
            let theirs = Upstream::decap(&up_sk, None, &ct).unwrap();
            assert_eq!(theirs.0, ss.0, "this encapsulation opens upstream");
        }
    }

    #[test]
    fn a_tampered_encapsulation_gives_another_secret() {
        let (sk, pk) = XWing::derive_keypair(&[3; 32]);
        let (ss, ct) = XWing::encap(&pk, None).unwrap();
        for at in [0, CT_M_LEN - 1, CT_M_LEN, 1119] {
            let mut bytes = ct.to_bytes();
            bytes[at] ^= 1;
            let ct = <XWing as hpke::Kem>::EncappedKey::from_bytes(&bytes).unwrap();
            let other = XWing::decap(&sk, None, &ct).unwrap();
            assert_ne!(other.0, ss.0);
        }
    }
}
