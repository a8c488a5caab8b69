//! A sealed model file as the host's disk hands it over: parsed, its signature and its
//! ciphertext digest checked, both as an MLP and as any model kind. Beyond never panicking:
//! a file that passes both checks under the seed's publisher key is the seed, byte for byte.
#![no_main]
use std::sync::OnceLock;

use confidant::engine::ModelSpec;
use confidant::sealed::{PublisherKey, SealedFile};
use libfuzzer_sys::fuzz_target;

mod seed_keys;

const SEED: &[u8] = include_bytes!("../corpus_seed/sealed/demo");

/// The seed's publisher.
fn trusted() -> &'static PublisherKey {
    static KEY: OnceLock<PublisherKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let pem = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(
            &seed_keys::publisher_key().verifying_key(),
            Default::default(),
        )
        .expect("PEM");
        PublisherKey::from_pem(&pem).expect("publisher key")
    })
}

fuzz_target!(|data: &[u8]| {
    let trusted = std::slice::from_ref(trusted());
    if let Ok(file) = SealedFile::parse(data.to_vec()) {
        let digest = file.verify_ciphertext_digest();
        if file.verify(trusted).is_ok() && digest.is_ok() {
            assert_eq!(data, SEED, "a changed sealed file passed both checks");
        }
    }
    if let Ok(file) = SealedFile::<ModelSpec>::parse_as(data.to_vec()) {
        let digest = file.verify_ciphertext_digest();
        if file.verify(trusted).is_ok() && digest.is_ok() {
            assert_eq!(data, SEED, "a changed sealed file passed both checks");
        }
    }
});
