use super::*;

#[test]
fn secret_buffer_round_trip_and_alignment() {
    let mut b = SecretBuffer::zeroed(10_000);
    assert_eq!(b.len(), 10_000);
    assert!(b.secret_bytes().iter().all(|&x| x == 0));
    b.secret_bytes_mut()[9_999] = 7;
    assert_eq!(b.secret_bytes()[9_999], 7);
    assert_eq!(b.secret_bytes().as_ptr() as usize % page_size(), 0);
}

#[test]
fn empty_secret_buffer_is_valid() {
    let b = SecretBuffer::zeroed(0);
    assert!(b.is_empty());
    assert_eq!(b.secret_bytes(), &[] as &[u8]);
}

#[test]
fn copy_from_copies() {
    let b = SecretBuffer::copy_from(b"key material");
    assert_eq!(b.secret_bytes(), b"key material");
}

#[test]
fn large_buffers_are_mapped_zeroed_and_writable() {
    let mut b = SecretBuffer::zeroed(5 << 20);
    assert_eq!(b.len(), 5 << 20);
    assert!(b.secret_bytes().iter().all(|&x| x == 0));
    b.secret_bytes_mut().fill(0xAB);
    assert!(b.secret_bytes().iter().all(|&x| x == 0xAB));
    let c = SecretBuffer::copy_from(b.secret_bytes());
    assert_eq!(c.secret_bytes(), b.secret_bytes());
}
