//! What a receipt costs the server's CPU, piece by piece (issue 22 item 3): the keyed request
//! digest of a demo row, the response digest, the CBOR statement, one group signed (Ed25519
//! over the RFC 9162 root, proofs included) at the sizes the audit writer makes, and one
//! receipt's COSE encoding; and, for the client, one verification of the envelope.
//!
//! Run: `cargo bench --bench receipts -- --warm-up-time 1 --measurement-time 3`.

use std::sync::Arc;

use confidant::receipt::digest::{RequestInput, request, response};
use confidant::receipt::{Draft, ReceiptSigner, envelope};
use criterion::{BatchSize, Criterion};

#[allow(clippy::expect_used)]
fn bench(c: &mut Criterion) {
    let signer = Arc::new(
        ReceiptSigner::from_parts(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            b"{\"tee\":\"simulated\"}".to_vec(),
        )
        .expect("the signer"),
    );
    let row = confidant::demo::SAMPLE_ROW.to_vec();
    let shape = [1u64, row.len() as u64];
    let salt = [9u8; 32];
    let draft = |i: usize| Draft {
        signer: Arc::clone(&signer),
        rpc: "predict",
        request_id: format!("0190a3c2-6a1b-7cc0-9d3e-5f7a{i:08x}").into(),
        request: [1; 32],
        response: [2; 32],
        model: "demo".into(),
        version: "1.0.0".into(),
        manifest: [3; 32],
        epsilon: 0.0,
    };
    let statement = |i: usize| {
        draft(i)
            .statement(1_000 + i as u64, &"ab".repeat(32), 0)
            .to_cbor()
    };
    let mut g = c.benchmark_group("receipts");
    g.bench_function("request_digest_demo_row", |b| {
        b.iter(|| {
            request(
                &salt,
                RequestInput::Rows {
                    shape: &shape,
                    values: &row,
                },
            )
        })
    });
    g.bench_function("response_digest_2_scores", |b| {
        b.iter(|| response(1, 2, &[0.25, 0.75], &["benign"]))
    });
    // What the audit writer does per answer: the statement's CBOR from the draft.
    let (d, hash) = (draft(0), "ab".repeat(32));
    g.bench_function("statement_cbor", |b| {
        b.iter(|| d.statement_cbor(1_000, &hash, 0))
    });
    for n in [1usize, 8, 32] {
        let statements: Vec<Vec<u8>> = (0..n).map(statement).collect();
        g.bench_function(format!("sign_group_{n}"), |b| {
            b.iter_batched(
                || statements.clone(),
                |s| signer.sign_group_unencoded(s),
                BatchSize::SmallInput,
            )
        });
    }
    let statements: Vec<Vec<u8>> = (0..8).map(statement).collect();
    g.bench_function("encode_one_of_8", |b| {
        b.iter_batched(
            || signer.sign_group_unencoded(statements.clone()).remove(3),
            envelope::Unencoded::encode,
            BatchSize::SmallInput,
        )
    });
    let receipt = signer.sign_group(&statements).remove(3);
    g.bench_function("open_and_verify_one", |b| {
        b.iter(|| envelope::open(&receipt).expect("verifies"))
    });
    g.finish();
}

fn main() {
    // Written out rather than through `criterion_main!`, whose generated function has no docs.
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
