// Runs the real kernels of noise.cu and aes_gcm.cu on a GPU against vectors.txt (written by
// the Rust CPU references), checks tamper detection, and times chacha20_fill against a
// device-to-device copy and AES-GCM decryption. A stand-alone binary (nvcc, cudart static)
// for GPU hosts without a Rust toolchain; the Rust-side GPU tests are tests/cuda_kernels.rs.
//
//     nvcc -std=c++17 -O2 -arch=sm_90 -Ikernels -o gpu_check kernels/host_check/gpu_check.cu
//     ./gpu_check kernels/host_check/vectors.txt
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../aes_gcm.cu"
#include "../noise.cu"

static int failures = 0, checks = 0;
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        ++checks;                                                             \
        if (!(cond)) {                                                        \
            ++failures;                                                       \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);         \
            std::fprintf(stderr, __VA_ARGS__);                                \
            std::fprintf(stderr, "\n");                                       \
        }                                                                     \
    } while (0)
#define CUDA(x)                                                                              \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            std::fprintf(stderr, "CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
            std::exit(2);                                                                    \
        }                                                                                    \
    } while (0)

static std::vector<uint8_t> unhex(const std::string& s) {
    std::vector<uint8_t> out;
    if (s == "-") return out;
    for (size_t i = 0; i + 1 < s.size(); i += 2) out.push_back((uint8_t)std::stoul(s.substr(i, 2), nullptr, 16));
    return out;
}
static uint64_t hex64(const std::string& s) { return std::stoull(s, nullptr, 16); }
static void key_args(const std::string& hex, uint64_t k[4]) {
    const std::vector<uint8_t> b = unhex(hex);
    for (int i = 0; i < 4; ++i) {
        k[i] = 0;
        for (int j = 7; j >= 0; --j) k[i] = (k[i] << 8) | b[8 * i + j];
    }
}
static void split128(const std::string& dec, uint64_t* lo, uint64_t* hi) {
    unsigned __int128 v = 0;
    for (char c : dec) v = v * 10 + (unsigned)(c - '0');
    *lo = (uint64_t)v;
    *hi = (uint64_t)(v >> 64);
}
template <class T>
static T* dev_alloc(size_t n) {
    T* p = nullptr;
    CUDA(cudaMalloc(&p, n * sizeof(T) + 16));
    CUDA(cudaMemset(p, 0, n * sizeof(T) + 16));
    return p;
}
template <class T>
static std::vector<T> to_host(const T* d, size_t n) {
    std::vector<T> h(n);
    CUDA(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}
static unsigned blocks_for(uint64_t units) {
    uint64_t b = (units + 255) / 256;
    return (unsigned)(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

// Decrypts a STREAM region on the device; returns the ok flags and the plaintext.
static std::vector<uint32_t> stream_decrypt(const std::vector<uint8_t>& key, const std::vector<uint8_t>& prefix,
                                            const std::vector<uint8_t>& aad, uint32_t chunk, uint64_t len,
                                            const std::vector<uint8_t>& region, std::vector<uint8_t>* pt,
                                            float* ms) {
    const uint64_t count = len == 0 ? 1 : (len + chunk - 1) / chunk;
    uint32_t rk[AES256_ROUND_KEY_WORDS];
    aes256_expand_key(key.data(), AES_SBOX_HOST, rk);
    uint8_t *d_region = dev_alloc<uint8_t>(region.size()), *d_out = dev_alloc<uint8_t>(len), *d_aad = dev_alloc<uint8_t>(aad.size());
    uint32_t *d_rk = dev_alloc<uint32_t>(AES256_ROUND_KEY_WORDS), *d_ok = dev_alloc<uint32_t>(count);
    CUDA(cudaMemcpy(d_region, region.data(), region.size(), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_aad, aad.data(), aad.size(), cudaMemcpyHostToDevice));
    CUDA(cudaMemcpy(d_rk, rk, sizeof(rk), cudaMemcpyHostToDevice));
    const uint32_t p0 = aes_load_be32(prefix.data());
    const uint32_t p1 = ((uint32_t)prefix[4] << 16) | ((uint32_t)prefix[5] << 8) | prefix[6];
    const unsigned grid = (unsigned)(count < (1u << 20) ? count : (1u << 20));
    cudaEvent_t a, b;
    CUDA(cudaEventCreate(&a));
    CUDA(cudaEventCreate(&b));
    const int reps = ms ? 10 : 1;
    aes_gcm_stream_decrypt<<<grid, GCM_LANES>>>(d_out, d_region, len, chunk, count, d_rk, p0, p1, d_aad,
                                                (uint32_t)aad.size(), d_ok);
    CUDA(cudaGetLastError());
    CUDA(cudaEventRecord(a));
    for (int r = 0; r < reps; ++r)
        aes_gcm_stream_decrypt<<<grid, GCM_LANES>>>(d_out, d_region, len, chunk, count, d_rk, p0, p1, d_aad,
                                                    (uint32_t)aad.size(), d_ok);
    CUDA(cudaEventRecord(b));
    CUDA(cudaEventSynchronize(b));
    if (ms) {
        CUDA(cudaEventElapsedTime(ms, a, b));
        *ms /= reps;
    }
    std::vector<uint32_t> ok = to_host(d_ok, count);
    if (pt) *pt = to_host(d_out, len);
    cudaFree(d_region); cudaFree(d_out); cudaFree(d_aad); cudaFree(d_rk); cudaFree(d_ok);
    return ok;
}

static void vector_line(const std::string& line) {
    std::istringstream in(line);
    std::string kind;
    in >> kind;
    std::vector<std::string> f;
    for (std::string tok; in >> tok;) f.push_back(tok);
    uint64_t k[4];
    if (kind == "chacha") {
        key_args(f[0], k);
        const uint64_t nonce = hex64(f[1]), counter0 = hex64(f[2]), n = std::stoull(f[3]);
        uint32_t* d = dev_alloc<uint32_t>(n);
        chacha20_fill<<<blocks_for((n + 15) / 16), 256>>>(d, n, k[0], k[1], k[2], k[3], nonce, counter0);
        CUDA(cudaGetLastError());
        std::vector<uint32_t> got = to_host(d, n);
        for (uint64_t j = 0; j < n; ++j) CHECK(got[j] == (uint32_t)hex64(f[4 + j]), "chacha20_fill word %" PRIu64, j);
        // Unaligned output (scalar path).
        chacha20_fill<<<1, 256>>>(d + 1, n - 1 > 0 ? n - 1 : 0, k[0], k[1], k[2], k[3], nonce, counter0);
        got = to_host(d + 1, n > 0 ? n - 1 : 0);
        for (uint64_t j = 0; j + 1 < n; ++j) CHECK(got[j] == (uint32_t)hex64(f[4 + j]), "unaligned word %" PRIu64, j);
        cudaFree(d);
    } else if (kind == "grid_laplace") {
        key_args(f[0], k);
        const uint64_t nonce = std::stoull(f[1]), n = std::stoull(f[5]);
        const double scale = dp_f64_from_bits(hex64(f[2])), shift = dp_f64_from_bits(hex64(f[3]));
        const int64_t cap = std::stoll(f[4]);
        int64_t* d = dev_alloc<int64_t>(n);
        grid_laplace<<<blocks_for((n + 7) / 8), 256>>>(d, n, k[0], k[1], k[2], k[3], nonce, scale, shift, (double)cap, cap);
        CUDA(cudaGetLastError());
        std::vector<int64_t> got = to_host(d, n);
        for (uint64_t i = 0; i < n; ++i) CHECK(got[i] == std::stoll(f[6 + i]), "grid_laplace %" PRIu64 ": %" PRId64, i, got[i]);
        cudaFree(d);
    } else if (kind == "dlaplace" || kind == "dgauss") {
        key_args(f[0], k);
        const uint64_t nonce = std::stoull(f[1]), n = std::stoull(f[4]);
        uint64_t a_lo, a_hi, b_lo, b_hi;
        split128(f[2], &a_lo, &a_hi);
        split128(f[3], &b_lo, &b_hi);
        int64_t* d = dev_alloc<int64_t>(n);
        uint32_t* st = dev_alloc<uint32_t>(1);
        if (kind == "dgauss")
            discrete_gaussian<<<blocks_for(n), 256>>>(d, n, k[0], k[1], k[2], k[3], nonce, a_lo, a_hi, b_lo, b_hi, st);
        else
            discrete_laplace<<<blocks_for(n), 256>>>(d, n, k[0], k[1], k[2], k[3], nonce, a_lo, a_hi, b_lo, b_hi, st);
        CUDA(cudaGetLastError());
        std::vector<int64_t> got = to_host(d, n);
        CHECK(to_host(st, 1)[0] == 0, "%s status", kind.c_str());
        for (uint64_t i = 0; i < n; ++i) CHECK(got[i] == std::stoll(f[5 + i]), "%s %" PRIu64 ": %" PRId64, kind.c_str(), i, got[i]);
        cudaFree(d); cudaFree(st);
    } else if (kind == "argmax") {
        key_args(f[0], k);
        const uint64_t nonce = std::stoull(f[1]);
        const double step = dp_f64_from_bits(hex64(f[2]));
        uint64_t e_lo, e_hi, d_lo, d_hi;
        split128(f[3], &e_lo, &e_hi);
        split128(f[4], &d_lo, &d_hi);
        const uint64_t rows = std::stoull(f[5]);
        const uint32_t classes = (uint32_t)std::stoul(f[6]);
        std::vector<float> scores(rows * classes);
        for (size_t i = 0; i < scores.size(); ++i) {
            const uint32_t bits = (uint32_t)hex64(f[7 + i]);
            std::memcpy(&scores[i], &bits, 4);
        }
        float* ds = dev_alloc<float>(scores.size());
        CUDA(cudaMemcpy(ds, scores.data(), scores.size() * 4, cudaMemcpyHostToDevice));
        uint32_t *labels = dev_alloc<uint32_t>(rows), *order = dev_alloc<uint32_t>(scores.size()), *st = dev_alloc<uint32_t>(1);
        noisy_argmax<<<blocks_for(rows), 256>>>(labels, ds, rows, classes, order, k[0], k[1], k[2], k[3], nonce, step,
                                               e_lo, e_hi, d_lo, d_hi, st);
        CUDA(cudaGetLastError());
        std::vector<uint32_t> got = to_host(labels, rows);
        CHECK(to_host(st, 1)[0] == 0, "argmax status");
        for (uint64_t r = 0; r < rows; ++r) CHECK(got[r] == std::stoul(f[7 + rows * classes + r]), "argmax row %" PRIu64 ": %u", r, got[r]);
        cudaFree(ds); cudaFree(labels); cudaFree(order); cudaFree(st);
    } else if (kind == "laplace_argmax") {
        key_args(f[0], k);
        const uint64_t nonce = std::stoull(f[1]);
        const double step = dp_f64_from_bits(hex64(f[2])), scale = dp_f64_from_bits(hex64(f[3])),
                     shift = dp_f64_from_bits(hex64(f[4]));
        const int64_t cap = std::stoll(f[5]);
        const uint64_t rows = std::stoull(f[6]);
        const uint32_t classes = (uint32_t)std::stoul(f[7]);
        std::vector<float> scores(rows * classes);
        for (size_t i = 0; i < scores.size(); ++i) {
            const uint32_t bits = (uint32_t)hex64(f[8 + i]);
            std::memcpy(&scores[i], &bits, 4);
        }
        float* ds = dev_alloc<float>(scores.size());
        CUDA(cudaMemcpy(ds, scores.data(), scores.size() * 4, cudaMemcpyHostToDevice));
        uint32_t *labels = dev_alloc<uint32_t>(rows), *st = dev_alloc<uint32_t>(1);
        double* noisy = dev_alloc<double>(scores.size());
        laplace_argmax<<<blocks_for(rows), 256>>>(labels, noisy, ds, rows, classes, k[0], k[1], k[2], k[3], nonce, step,
                                                  scale, shift, (double)cap, cap, st);
        CUDA(cudaGetLastError());
        std::vector<uint32_t> got = to_host(labels, rows);
        std::vector<double> gn = to_host(noisy, scores.size());
        CHECK(to_host(st, 1)[0] == 0, "laplace_argmax status");
        const size_t labels_at = 8 + rows * classes, noisy_at = labels_at + rows;
        for (uint64_t r = 0; r < rows; ++r) CHECK(got[r] == std::stoul(f[labels_at + r]), "laplace_argmax row %" PRIu64, r);
        for (size_t i = 0; i < gn.size(); ++i) CHECK(dp_f64_bits(gn[i]) == hex64(f[noisy_at + i]), "laplace_argmax noisy %zu", i);
        cudaFree(ds); cudaFree(labels); cudaFree(st); cudaFree(noisy);
    } else if (kind == "stream") {
        const std::vector<uint8_t> key = unhex(f[0]), prefix = unhex(f[1]), aad = unhex(f[2]);
        const uint32_t chunk = (uint32_t)std::stoul(f[3]);
        const uint64_t len = std::stoull(f[4]);
        const std::vector<uint8_t> region = unhex(f[5]), pt = unhex(f[6]);
        std::vector<uint8_t> out;
        std::vector<uint32_t> ok = stream_decrypt(key, prefix, aad, chunk, len, region, &out, nullptr);
        for (size_t c = 0; c < ok.size(); ++c) CHECK(ok[c] == 1, "stream chunk %zu rejected", c);
        CHECK(out == pt, "stream plaintext (len %" PRIu64 ")", len);
        for (size_t at : {size_t(0), region.size() / 2, region.size() - 1}) {
            std::vector<uint8_t> bad = region;
            bad[at] ^= 0x10;
            ok = stream_decrypt(key, prefix, aad, chunk, len, bad, nullptr, nullptr);
            size_t rejected = 0;
            for (uint32_t o : ok) rejected += o != 1;
            CHECK(rejected == 1, "tampered byte %zu: %zu chunks rejected", at, rejected);
        }
    }
}

static void bench() {
    const uint64_t bytes = 256ull << 20, words = bytes / 4;
    uint32_t *a = dev_alloc<uint32_t>(words), *b = dev_alloc<uint32_t>(words);
    cudaEvent_t e0, e1;
    CUDA(cudaEventCreate(&e0));
    CUDA(cudaEventCreate(&e1));
    const int reps = 20;
    chacha20_fill<<<blocks_for(words / 16), 256>>>(a, words, 1, 2, 3, 4, 5, 0);
    CUDA(cudaEventRecord(e0));
    for (int r = 0; r < reps; ++r) chacha20_fill<<<blocks_for(words / 16), 256>>>(a, words, 1, 2, 3, 4, 5 + r, 0);
    CUDA(cudaEventRecord(e1));
    CUDA(cudaEventSynchronize(e1));
    float ms_fill = 0, ms_copy = 0, ms_gl = 0;
    CUDA(cudaEventElapsedTime(&ms_fill, e0, e1));
    CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    CUDA(cudaEventRecord(e0));
    for (int r = 0; r < reps; ++r) CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
    CUDA(cudaEventRecord(e1));
    CUDA(cudaEventSynchronize(e1));
    CUDA(cudaEventElapsedTime(&ms_copy, e0, e1));
    // grid_laplace: 32 M samples of i64 at scale 2^20.
    const uint64_t n = 32ull << 20;
    int64_t* s = reinterpret_cast<int64_t*>(a);
    CUDA(cudaEventRecord(e0));
    for (int r = 0; r < reps; ++r)
        grid_laplace<<<blocks_for(n / 8), 256>>>(s, n, 1, 2, 3, 4, 100 + r * (n + 1), 1048576.0, 0.4999995, 7268174.0, 7268174);
    CUDA(cudaEventRecord(e1));
    CUDA(cudaEventSynchronize(e1));
    CUDA(cudaEventElapsedTime(&ms_gl, e0, e1));
    CUDA(cudaGetLastError());
    std::printf("BENCH chacha20_fill %.1f GB/s, device-to-device copy %.1f GB/s (256 MiB), grid_laplace %.2f G samples/s\n",
                bytes * reps / (ms_fill * 1e6), bytes * reps / (ms_copy * 1e6), n * reps / (ms_gl * 1e6));
    cudaFree(a); cudaFree(b);
    // AES-GCM: 256 MiB in 1 MiB chunks (random tags: every chunk fails, the work is the same).
    std::vector<uint8_t> region(bytes + 16 * 256, 0xab), key(32, 7), prefix(7, 1), aad(32, 2);
    float ms_aes = 0;
    std::vector<uint32_t> ok = stream_decrypt(key, prefix, aad, 1 << 20, bytes, region, nullptr, &ms_aes);
    std::printf("BENCH aes_gcm_stream_decrypt %.1f GB/s (256 MiB, 1 MiB chunks)\n", bytes / (ms_aes * 1e6));
}

int main(int argc, char** argv) {
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        std::printf("gpu_check: no CUDA device\n");
        return 3;
    }
    cudaDeviceProp prop;
    CUDA(cudaGetDeviceProperties(&prop, 0));
    std::printf("gpu_check on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    std::ifstream file(argc > 1 ? argv[1] : "kernels/host_check/vectors.txt");
    int lines = 0;
    for (std::string line; std::getline(file, line);) {
        if (line.empty() || line[0] == '#') continue;
        vector_line(line);
        ++lines;
    }
    CHECK(lines > 20, "only %d vectors", lines);
    CUDA(cudaDeviceSynchronize());
    std::printf("gpu_check: %d checks, %d vector lines, %d failures\n", checks, lines, failures);
    bench();
    return failures == 0 ? 0 : 1;
}
