// Runs the kernels' per-thread math (the CONFIDANT_HD functions of chacha_stream.cuh,
// dp_samplers.cuh and aes_gcm.cuh) on the CPU against known answers: RFC 7539 (ChaCha20),
// FIPS 197 C.3 (AES-256), McGrew–Viega test case 16 (AES-256-GCM), and vectors.txt, written by
// the Rust CPU references. Host code only: scripts/check-kernels-host.sh compiles it with nvcc
// and runs it without a GPU. Exits non-zero on any mismatch.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "aes_gcm.cuh"
#include "dp_samplers.cuh"

static int failures = 0;
static int checks = 0;

#define CHECK(cond, ...)                                       \
    do {                                                       \
        ++checks;                                              \
        if (!(cond)) {                                         \
            ++failures;                                        \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            std::fprintf(stderr, __VA_ARGS__);                 \
            std::fprintf(stderr, "\n");                        \
        }                                                      \
    } while (0)

static std::vector<uint8_t> unhex(const std::string& s) {
    std::vector<uint8_t> out;
    if (s == "-") return out;
    for (size_t i = 0; i + 1 < s.size(); i += 2) out.push_back((uint8_t)std::stoul(s.substr(i, 2), nullptr, 16));
    return out;
}

static ConfidantChachaKey key_from_hex(const std::string& s) {
    const std::vector<uint8_t> b = unhex(s);
    ConfidantChachaKey k;
    for (int i = 0; i < 8; ++i)
        k.w[i] = (uint32_t)b[4 * i] | ((uint32_t)b[4 * i + 1] << 8) | ((uint32_t)b[4 * i + 2] << 16) |
                 ((uint32_t)b[4 * i + 3] << 24);
    return k;
}

static uint64_t hex64(const std::string& s) { return std::stoull(s, nullptr, 16); }

static dp_u128 dec128(const std::string& s) {
    dp_u128 v = 0;
    for (char c : s) v = v * 10 + (dp_u128)(c - '0');
    return v;
}

static Gf128 gf_hex(const std::string& s) {
    const std::vector<uint8_t> b = unhex(s);
    return gf_load_partial(b.data(), 16);
}

// ---- Known-answer tests from the specifications. ----

static void rfc7539() {
    // §2.3.2, in the original layout (see src/gpu/chacha/tests.rs).
    ConfidantChachaKey k;
    for (int i = 0; i < 8; ++i)
        k.w[i] = (uint32_t)(4 * i) | ((uint32_t)(4 * i + 1) << 8) | ((uint32_t)(4 * i + 2) << 16) |
                 ((uint32_t)(4 * i + 3) << 24);
    uint32_t out[16];
    chacha20_block(k, 0x0900000000000001ull, 0x4a000000ull, out);
    const uint32_t want[16] = {0xe4e7f110, 0x15593bd1, 0x1fdd0f50, 0xc47120a3, 0xc7f4d1c7, 0x0368c033,
                               0x9aaa2204, 0x4e6cd4c3, 0x466482d2, 0x09aa9f07, 0x05d7c214, 0xa2028bd9,
                               0xd19c12b5, 0xb94e16de, 0xe883d0cb, 0x4e3c50a2};
    for (int i = 0; i < 16; ++i) CHECK(out[i] == want[i], "RFC 7539 block word %d", i);
}

static AesTables host_tables() {
    AesTables t;
    for (int i = 0; i < 256; ++i) aes_table_entry(t, AES_SBOX_HOST, i);
    return t;
}

static void fips197() {
    const AesTables t = host_tables();
    // A.3: the expansion of 603deb10...0914dff4 ends with w[59] = 706c631e.
    const std::vector<uint8_t> a3 = unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
    uint32_t rk[AES256_ROUND_KEY_WORDS];
    aes256_expand_key(a3.data(), AES_SBOX_HOST, rk);
    CHECK(rk[8] == 0x9ba35411 && rk[59] == 0x706c631e, "FIPS 197 A.3 key expansion");
    // C.3: AES-256 of 00112233...ff under 00010203...1f.
    uint8_t key[32];
    for (int i = 0; i < 32; ++i) key[i] = (uint8_t)i;
    aes256_expand_key(key, AES_SBOX_HOST, rk);
    uint32_t s[4] = {0x00112233, 0x44556677, 0x8899aabb, 0xccddeeff};
    aes256_encrypt_block(t, rk, s);
    CHECK(s[0] == 0x8ea2b7ca && s[1] == 0x516745bf && s[2] == 0xeafc4990 && s[3] == 0x4b496089,
          "FIPS 197 C.3 ciphertext");
}

// The aes_gcm_stream_decrypt kernel for one chunk, with the GPU's threads as a loop over lanes.
static bool gcm_chunk(const uint8_t key[32], const uint32_t nonce[3], const std::vector<uint8_t>& aad,
                      const std::vector<uint8_t>& ct, const uint8_t tag[16], std::vector<uint8_t>& out) {
    const AesTables t = host_tables();
    uint32_t rk[AES256_ROUND_KEY_WORDS];
    aes256_expand_key(key, AES_SBOX_HOST, rk);
    uint32_t hs[4] = {0, 0, 0, 0};
    aes256_encrypt_block(t, rk, hs);
    const Gf128 h = gf_from_words(hs[0], hs[1], hs[2], hs[3]);
    std::vector<Gf128> hpow(GCM_LANES + 1);
    for (uint32_t e = 1; e <= GCM_LANES + 1; ++e) hpow[e - 1] = gf_pow(h, e);
    GhashTable hl;
    ghash_table_init(hl, gf_pow(h, GCM_LANES));
    const uint32_t len = (uint32_t)ct.size();
    const uint32_t total = ((uint32_t)aad.size() + 15) / 16 + (len + 15) / 16;
    out.assign(len, 0);
    Gf128 shares = {0, 0};
    for (uint32_t lane = 0; lane < GCM_LANES; ++lane) {
        Gf128 acc = {0, 0};
        uint32_t last = 0;
        bool any = false;
        for (uint32_t k = lane; k < total; k += GCM_LANES) {
            gcm_lane_block(t, rk, hl, nonce, k, aad.data(), (uint32_t)aad.size(), ct.data(), len, out.data(), false,
                           acc);
            last = k;
            any = true;
        }
        shares = gf_xor(shares, gcm_lane_share(acc, last, any, total, hpow.data()));
    }
    return gcm_finish(t, rk, h, shares, nonce, (uint32_t)aad.size(), len, tag);
}

static void check_gcm(const std::string& name, const std::vector<uint8_t>& key, const std::vector<uint8_t>& iv,
                      const std::vector<uint8_t>& aad, const std::vector<uint8_t>& ct, const std::vector<uint8_t>& tag,
                      const std::vector<uint8_t>& pt) {
    const uint32_t nonce[3] = {aes_load_be32(iv.data()), aes_load_be32(iv.data() + 4), aes_load_be32(iv.data() + 8)};
    std::vector<uint8_t> out;
    CHECK(gcm_chunk(key.data(), nonce, aad, ct, tag.data(), out), "%s: tag rejected", name.c_str());
    CHECK(out == pt, "%s: plaintext differs", name.c_str());
    std::vector<uint8_t> bad_tag = tag;
    bad_tag[15] ^= 1;
    CHECK(!gcm_chunk(key.data(), nonce, aad, ct, bad_tag.data(), out), "%s: tampered tag accepted", name.c_str());
    if (!ct.empty()) {
        std::vector<uint8_t> bad = ct;
        bad[bad.size() / 2] ^= 0x20;
        CHECK(!gcm_chunk(key.data(), nonce, aad, bad, tag.data(), out), "%s: tampered body accepted", name.c_str());
    }
}

static void gcm_test_case_16() {
    check_gcm("GCM test case 16", unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
              unhex("cafebabefacedbaddecaf888"), unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
              unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
                    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"),
              unhex("76fc6ece0f4e1768cddf8853bb2d551b"),
              unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"));
}

// ---- vectors.txt ----

static void vector_line(const std::string& line) {
    std::istringstream in(line);
    std::string kind;
    in >> kind;
    std::vector<std::string> f;
    for (std::string tok; in >> tok;) f.push_back(tok);
    if (kind == "chacha") {
        const ConfidantChachaKey k = key_from_hex(f[0]);
        const uint64_t nonce = hex64(f[1]), counter0 = hex64(f[2]);
        const size_t n = std::stoul(f[3]);
        for (size_t j = 0; j < n; ++j) {
            uint32_t w[16];
            chacha20_block(k, counter0 + j / 16, nonce, w);
            CHECK(w[j % 16] == (uint32_t)hex64(f[4 + j]), "chacha word %zu", j);
        }
        // The sequential stream reads the same words, two at a time.
        ChaChaStream s;
        chacha_stream_init(s, k, nonce, counter0);
        for (size_t j = 0; j + 1 < n; j += 2) {
            const uint64_t want = hex64(f[4 + j]) | (hex64(f[5 + j]) << 32);
            CHECK(chacha_next_u64(s) == want, "chacha stream word %zu", j / 2);
        }
    } else if (kind == "log") {
        const double x = dp_f64_from_bits(hex64(f[0]));
        CHECK(dp_f64_bits(dp_log(x)) == hex64(f[1]), "log(%a) = %a", x, dp_log(x));
    } else if (kind == "grid_laplace") {
        const ConfidantChachaKey k = key_from_hex(f[0]);
        const uint64_t nonce = std::stoull(f[1]);
        const double cap_f = (double)std::stoll(f[4]);
        const FastLaplaceParams p = {dp_f64_from_bits(hex64(f[2])), dp_f64_from_bits(hex64(f[3])), cap_f,
                                     std::stoll(f[4])};
        const uint64_t n = std::stoull(f[5]);
        // The grid_laplace kernel's mapping: thread b computes block b, the words of samples 8b..8b+7.
        for (uint64_t b = 0; b * 8 < n; ++b) {
            uint32_t w[16];
            chacha20_block(k, b, nonce, w);
            for (int j = 0; j < 8 && 8 * b + j < n; ++j) {
                const uint64_t i = 8 * b + j;
                const uint64_t word = (uint64_t)w[2 * j] | ((uint64_t)w[2 * j + 1] << 32);
                const int64_t got = dp_fast_laplace(p, word, k, nonce + 1 + i);
                CHECK(got == std::stoll(f[6 + i]), "grid_laplace sample %" PRIu64 ": %" PRId64, i, got);
            }
        }
    } else if (kind == "dlaplace" || kind == "dgauss") {
        const ConfidantChachaKey k = key_from_hex(f[0]);
        const uint64_t nonce = std::stoull(f[1]);
        const dp_u128 a = dec128(f[2]), b = dec128(f[3]);
        const size_t n = std::stoul(f[4]);
        DgParams p = {};
        if (kind == "dgauss") CHECK(dp_gaussian_params(a, b, &p) == DP_OK, "gaussian parameters");
        for (size_t i = 0; i < n; ++i) {
            ChaChaStream s;
            chacha_stream_init(s, k, nonce + i, 0);
            int64_t y = 0;
            const int st = kind == "dgauss" ? dp_discrete_gaussian(s, p, &y) : dp_discrete_laplace(s, a, b, &y);
            CHECK(st == DP_OK && y == std::stoll(f[5 + i]), "%s sample %zu: %" PRId64, kind.c_str(), i, y);
        }
    } else if (kind == "argmax") {
        const ConfidantChachaKey k = key_from_hex(f[0]);
        const uint64_t nonce = std::stoull(f[1]);
        const double step = dp_f64_from_bits(hex64(f[2]));
        const dp_u128 eps = dec128(f[3]), den = dec128(f[4]);
        const size_t rows = std::stoul(f[5]), classes = std::stoul(f[6]);
        std::vector<float> scores(rows * classes);
        for (size_t i = 0; i < scores.size(); ++i) {
            const uint32_t bits = (uint32_t)hex64(f[7 + i]);
            std::memcpy(&scores[i], &bits, 4);
        }
        std::vector<uint32_t> order(classes);
        for (size_t r = 0; r < rows; ++r) {
            ChaChaStream s;
            chacha_stream_init(s, k, nonce + r, 0);
            uint32_t label = 0;
            const int st = dp_permute_and_flip(s, scores.data() + r * classes, (uint32_t)classes, step, eps, den,
                                               order.data(), &label);
            CHECK(st == DP_OK && label == std::stoul(f[7 + rows * classes + r]), "argmax row %zu: %u", r, label);
        }
    } else if (kind == "laplace_argmax") {
        const ConfidantChachaKey k = key_from_hex(f[0]);
        const uint64_t nonce = std::stoull(f[1]);
        const double step = dp_f64_from_bits(hex64(f[2]));
        const int64_t cap = std::stoll(f[5]);
        const FastLaplaceParams p = {dp_f64_from_bits(hex64(f[3])), dp_f64_from_bits(hex64(f[4])), (double)cap, cap};
        const size_t rows = std::stoul(f[6]), classes = std::stoul(f[7]);
        std::vector<float> scores(rows * classes);
        for (size_t i = 0; i < scores.size(); ++i) {
            const uint32_t bits = (uint32_t)hex64(f[8 + i]);
            std::memcpy(&scores[i], &bits, 4);
        }
        const size_t labels_at = 8 + rows * classes, noisy_at = labels_at + rows;
        std::vector<double> noisy(rows * classes);
        for (size_t r = 0; r < rows; ++r) {
            uint32_t label = 0;
            const int st = dp_laplace_argmax(k, nonce, r * classes, scores.data() + r * classes, (uint32_t)classes,
                                             step, p, noisy.data() + r * classes, &label);
            CHECK(st == DP_OK && label == std::stoul(f[labels_at + r]), "laplace_argmax row %zu: %u", r, label);
        }
        for (size_t i = 0; i < noisy.size(); ++i)
            CHECK(dp_f64_bits(noisy[i]) == hex64(f[noisy_at + i]), "laplace_argmax noisy %zu", i);
    } else if (kind == "gfmul") {
        const Gf128 x = gf_hex(f[0]), y = gf_hex(f[1]), z = gf_hex(f[2]);
        const Gf128 g = gf_mul(x, y);
        CHECK(g.hi == z.hi && g.lo == z.lo, "gf_mul");
        GhashTable t;
        ghash_table_init(t, y);
        const Gf128 g4 = gf_mul_table(x, t);
        CHECK(g4.hi == z.hi && g4.lo == z.lo, "gf_mul_table (Shoup 4-bit)");
        CHECK(gf_pow(x, 3).hi == gf_mul(gf_mul(x, x), x).hi, "gf_pow");
    } else if (kind == "nonce") {
        const std::vector<uint8_t> prefix = unhex(f[0]), want = unhex(f[3]);
        const uint32_t p0 = aes_load_be32(prefix.data());
        const uint32_t p1 = ((uint32_t)prefix[4] << 16) | ((uint32_t)prefix[5] << 8) | prefix[6];
        uint32_t n[3];
        stream_chunk_nonce(p0, p1, (uint32_t)std::stoul(f[1]), f[2] == "1", n);
        CHECK(n[0] == aes_load_be32(want.data()) && n[1] == aes_load_be32(want.data() + 4) &&
                  n[2] == aes_load_be32(want.data() + 8),
              "stream chunk nonce");
    } else if (kind == "stream") {
        // The kernel's chunk loop (one GPU thread block per chunk) on the CPU.
        const std::vector<uint8_t> key = unhex(f[0]), prefix = unhex(f[1]), aad = unhex(f[2]);
        const uint32_t chunk = (uint32_t)std::stoul(f[3]);
        const uint64_t len = std::stoull(f[4]);
        const std::vector<uint8_t> region = unhex(f[5]), pt = unhex(f[6]);
        const uint64_t count = len == 0 ? 1 : (len + chunk - 1) / chunk;
        CHECK(region.size() == len + 16 * count, "stream region length");
        const uint32_t p0 = aes_load_be32(prefix.data());
        const uint32_t p1 = ((uint32_t)prefix[4] << 16) | ((uint32_t)prefix[5] << 8) | prefix[6];
        std::vector<uint8_t> all;
        for (uint64_t c = 0; c < count; ++c) {
            const uint64_t start = c * chunk;
            const uint64_t n = len - start < chunk ? len - start : chunk;
            uint32_t nonce[3];
            stream_chunk_nonce(p0, p1, (uint32_t)c, c + 1 == count, nonce);
            std::vector<uint8_t> body(region.begin() + start, region.begin() + start + n), out;
            CHECK(gcm_chunk(key.data(), nonce, aad, body, region.data() + len + 16 * c, out), "stream chunk %" PRIu64, c);
            all.insert(all.end(), out.begin(), out.end());
        }
        CHECK(all == pt, "stream plaintext");
    } else if (kind == "gcm") {
        check_gcm("vector gcm", unhex(f[0]), unhex(f[1]), unhex(f[2]), unhex(f[3]), unhex(f[4]), unhex(f[5]));
    } else {
        CHECK(false, "unknown vector kind %s", kind.c_str());
    }
}

int main(int argc, char** argv) {
    rfc7539();
    fips197();
    gcm_test_case_16();
    const char* path = argc > 1 ? argv[1] : "kernels/host_check/vectors.txt";
    std::ifstream file(path);
    CHECK(file.good(), "cannot open %s", path);
    int lines = 0;
    for (std::string line; std::getline(file, line);) {
        if (line.empty() || line[0] == '#') continue;
        vector_line(line);
        ++lines;
    }
    CHECK(lines > 20, "only %d vectors in %s", lines, path);
    std::printf("host_check: %d checks, %d vector lines, %d failures\n", checks, lines, failures);
    return failures == 0 ? 0 : 1;
}
