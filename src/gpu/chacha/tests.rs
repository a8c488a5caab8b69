use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;

fn key(seed: u8) -> NoiseKey {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7);
    }
    NoiseKey::dangerous_from_bytes(k)
}

/// RFC 7539 §2.3.2, moved to the original layout: the RFC's 32-bit counter 1 and 96-bit
/// nonce 00:00:00:09:00:00:00:4a:00:00:00:00 occupy words 12–15, which here are the 64-bit
/// counter 0x09000000_00000001 and the 64-bit nonce 0x4a000000.
#[test]
fn rfc_7539_block_function() {
    let k: [u8; 32] = std::array::from_fn(|i| i as u8);
    let words = NoiseKey::dangerous_from_bytes(k).words();
    let out = chacha20_block(&words, 0x0900_0000_0000_0001, 0x4a00_0000);
    let want = [
        0xe4e7_f110,
        0x1559_3bd1,
        0x1fdd_0f50,
        0xc471_20a3,
        0xc7f4_d1c7,
        0x0368_c033,
        0x9aaa_2204,
        0x4e6c_d4c3,
        0x4664_82d2,
        0x09aa_9f07,
        0x05d7_c214,
        0xa202_8bd9,
        0xd19c_12b5,
        0xb94e_16de,
        0xe883_d0cb,
        0x4e3c_50a2,
    ];
    assert_eq!(out, want);
}

#[test]
fn streams_equal_rand_chacha() {
    for seed in 0..4u8 {
        let k = key(seed);
        for nonce in [0u64, 1, 7, 0x0123_4567_89ab_cdef, u64::MAX] {
            let mut theirs = ChaCha20Rng::from_seed(*k.secret_bytes());
            theirs.set_stream(nonce);
            let mut ours = ChaChaStream::new(&k, nonce);
            for i in 0..300 {
                assert_eq!(
                    ours.next_u64(),
                    theirs.next_u64(),
                    "seed {seed} nonce {nonce} word {i}"
                );
            }
        }
    }
}

#[test]
fn fill_words_equals_rand_chacha_from_any_block() {
    let k = key(9);
    for (nonce, counter0, n) in [(0u64, 0u64, 37usize), (5, 3, 64), (u64::MAX, 1000, 17)] {
        let mut theirs = ChaCha20Rng::from_seed(*k.secret_bytes());
        theirs.set_stream(nonce);
        theirs.set_word_pos(u128::from(counter0) * 16);
        let want: Vec<u32> = (0..n).map(|_| theirs.next_u32()).collect();
        let mut got = vec![0u32; n];
        fill_words(&k, nonce, counter0, &mut got);
        assert_eq!(got, want, "nonce {nonce} counter0 {counter0}");
    }
}

#[test]
fn stream_from_a_block_continues_the_stream() {
    let k = key(3);
    let mut a = ChaChaStream::new(&k, 11);
    for _ in 0..16 {
        a.next_u64();
    }
    let mut b = ChaChaStream::at_block(&k, 11, 2);
    assert_eq!(a.next_u64(), b.next_u64());
}

#[test]
fn kernel_words_pack_the_key_words() {
    let k = key(1);
    let w = k.words();
    let kw = k.kernel_words();
    for i in 0..4 {
        assert_eq!(kw[i], u64::from(w[2 * i]) | (u64::from(w[2 * i + 1]) << 32));
    }
}
