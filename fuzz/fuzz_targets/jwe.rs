//! A KBS resource as the key broker's response carries it (flattened JSON JWE,
//! `ECDH-ES+A256KW` and `A256GCM`): the first byte's low bit picks between parsing and
//! opening the rest with a fresh TEE key (never panicking, whatever the broker or a
//! man-in-the-middle sent), and sealing the rest to a fresh key and opening it again, which
//! must give back exactly the rest.
#![no_main]
use confidant::keys::jwe::{ParsedJwe, TeeKeyPair, encrypt};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(pair) = TeeKeyPair::generate() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = ParsedJwe::parse(rest);
        assert!(
            pair.decrypt(rest).is_err(),
            "a JWE opened under a key made after it"
        );
    } else {
        let jwe = encrypt(pair.public_key(), rest).expect("encrypting to a fresh key");
        let opened = pair.decrypt(&jwe).expect("opening what was sealed to it");
        assert_eq!(&opened[..], rest);
    }
});
