// Microbenchmark of the CPU matmul kernels: time per product for the shapes
// that dominate decoding SmolLM2-135M (576x1536 Q4_1 ffn_down, 49152x576 Q8_0
// output) and a Gemma 3 270M sized 640x2048 in each k-quant, per instruction
// set and thread count, and batched prefill against the same number of
// separate matrix-vector products; then one decode step of one layer's
// attention over a full 4 + 1024 token cache, per KV codec.
//
//   kvfit-kernel-bench [max_threads=2] [seconds_per_case=0.3] [matmul|attention|pool] [type]
//
// With a type name (Q4_K, F16, ...) the matmul section times only that type.
//
// Weights and activations are random; results are times, not checked values
// (tests/test_kernels.cpp checks the values).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/threadpool.h"
#include "gguf/ggml_types.h"
#include "kv/memory.h"

using namespace kvfit;

namespace {

struct Matrix {
    uint32_t type;
    int64_t rows, cols;
    size_t row_bytes;
    std::vector<uint8_t> data;
};

Matrix make_matrix(uint32_t type, int64_t rows, int64_t cols) {
    Matrix m{type, rows, cols, row_bytes(type, cols), {}};
    m.data.resize(m.row_bytes * size_t(rows));
    std::mt19937 rng(42);
    if (cpu::is_k_type(type)) {
        // random codes and scales with fp16 factors of a real model's size
        const TypeInfo *ti = type_info(type);
        for (uint8_t &b : m.data) b = uint8_t(rng());
        for (size_t b = 0; b < m.data.size() / ti->block_bytes; b++) {
            uint8_t *blk = m.data.data() + b * ti->block_bytes;
            const uint16_t d = fp32_to_fp16(type == TYPE_Q6_K ? 1.2e-5f : 1e-4f), dmin = fp32_to_fp16(8e-4f);
            if (type == TYPE_Q6_K) {
                std::memcpy(blk + offsetof(BlockQ6_K, d), &d, 2);
            } else {
                std::memcpy(blk, &d, 2);
                std::memcpy(blk + 2, &dmin, 2);
            }
        }
        return m;
    }
    std::normal_distribution<float> g(0.0f, 0.05f);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r++) {
        for (float &v : row) v = g(rng);
        uint8_t *dst = m.data.data() + size_t(r) * m.row_bytes;
        switch (type) {
            case TYPE_Q4_0: quantize_row_q4_0_ref(row.data(), reinterpret_cast<BlockQ4_0 *>(dst), cols); break;
            case TYPE_Q4_1: quantize_row_q4_1_ref(row.data(), reinterpret_cast<BlockQ4_1 *>(dst), cols); break;
            case TYPE_Q5_0: quantize_row_q5_0_ref(row.data(), reinterpret_cast<BlockQ5_0 *>(dst), cols); break;
            case TYPE_Q5_1: quantize_row_q5_1_ref(row.data(), reinterpret_cast<BlockQ5_1 *>(dst), cols); break;
            case TYPE_Q8_0: quantize_row_q8_0_ref(row.data(), reinterpret_cast<BlockQ8_0 *>(dst), cols); break;
            default: kernels_scalar().quantize_row(type, row.data(), dst, cols); break;
        }
    }
    return m;
}

const char *shape_str(int64_t rows, int64_t cols) {
    static char buf[48];
    std::snprintf(buf, sizeof buf, "%lldx%lld", (long long)rows, (long long)cols);
    return buf;
}

// Fastest time of one call, in microseconds, over repeated calls filling
// `seconds`: the machine may be shared, and the minimum is the figure least
// disturbed by other processes.
template <typename F>
double time_us(F &&f, double seconds) {
    using clk = std::chrono::steady_clock;
    f();  // warm caches and the pool
    std::vector<double> samples;
    const auto end = clk::now() + std::chrono::duration<double>(seconds);
    do {
        const auto t0 = clk::now();
        f();
        samples.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
    } while (clk::now() < end || samples.size() < 5);
    std::sort(samples.begin(), samples.end());
    return samples.front();
}

}  // namespace

int main(int argc, char **argv) {
    const int max_threads = argc > 1 ? std::max(1, std::atoi(argv[1])) : 2;
    const double seconds = argc > 2 ? std::atof(argv[2]) : 0.3;
    const char *only = argc > 3 ? argv[3] : nullptr;       // one section
    const char *only_type = argc > 4 ? argv[4] : nullptr;  // one weight type
    auto section = [&](const char *name) { return !only || !std::strcmp(only, name); };
    auto wanted = [&](uint32_t type) { return !only_type || !std::strcmp(only_type, type_info(type)->name); };

    std::vector<const cpu::KernelImpl *> impls = {&cpu::impl_scalar()};
    for (const cpu::KernelImpl *i : {cpu::impl_avx2(), cpu::impl_avx512(), cpu::impl_neon()})
        if (i) impls.push_back(i);

    struct Case {
        uint32_t type;
        int64_t rows, cols;
    };
    const Case cases[] = {{TYPE_Q4_1, 576, 1536}, {TYPE_Q8_0, 49152, 576}, {TYPE_Q4_0, 576, 1536},
                          {TYPE_Q8_0, 576, 1536}, {TYPE_F16, 576, 1536},   {TYPE_Q5_0, 576, 1536},
                          {TYPE_Q5_1, 576, 1536}, {TYPE_Q4_K, 640, 2048},  {TYPE_Q5_K, 640, 2048},
                          {TYPE_Q6_K, 640, 2048}};

    std::printf("best kernels: %s\n\n", kernels_best().name);
    if (section("matmul")) {
        std::printf("matrix-vector (decode): best us per product, weight GB/s\n");
        std::printf("%-6s %-12s %-8s %7s %10s %8s\n", "type", "shape", "kernels", "threads", "us", "GB/s");
        for (const Case &c : cases) {
            if (!wanted(c.type)) continue;
            Matrix m = make_matrix(c.type, c.rows, c.cols);
            std::vector<float> x(size_t(c.cols)), y(size_t(c.rows));
            std::mt19937 rng(1);
            std::normal_distribution<float> g(0.0f, 1.0f);
            for (float &v : x) v = g(rng);
            std::vector<uint8_t> scratch(matmul_scratch_bytes(c.type, c.cols, 1));
            for (const cpu::KernelImpl *impl : impls) {
                for (int nth = 1; nth <= max_threads; nth++) {
                    // The scalar path is slow; one thread shows it.
                    if (impl == &cpu::impl_scalar() && nth > 1) continue;
                    ThreadPool pool(nth);
                    const double us = time_us(
                        [&] {
                            matmul(pool, impl->table, c.type, m.data.data(), m.row_bytes, c.rows, c.cols, x.data(), 1,
                                   y.data(), c.rows, scratch.data());
                        },
                        impl == &cpu::impl_scalar() ? std::min(seconds, 0.2) : seconds);
                    std::printf("%-6s %-12s %-8s %7d %10.1f %8.1f\n", type_info(c.type)->name, shape_str(c.rows, c.cols),
                                impl->table.name, nth, us, double(m.data.size()) / us * 1e-3);
                }
            }
            // For reference, the structure of ggml's mul_mat on x86: quantize the
            // activations to the standard blocks, then one vec_dot call per row
            // (same kernels as kvfit's public vec_dot: per block dot, scale, FMA).
            const KernelTable &kb = kernels_best();
            const uint32_t xt = vec_dot_type(c.type);
            std::vector<uint8_t> xq(xt == TYPE_F32 ? size_t(c.cols) * 4 : row_bytes(xt, c.cols));  // any block size
            const double us = time_us(
                [&] {
                    kb.quantize_row(xt, x.data(), xq.data(), c.cols);
                    for (int64_t r = 0; r < c.rows; r++)
                        y[size_t(r)] = kb.vec_dot(c.type, c.cols, m.data.data() + size_t(r) * m.row_bytes, xq.data());
                },
                seconds);
            std::printf("%-6s %-12s %-8s %7d %10.1f %8.1f   (row-by-row vec_dot, ggml's structure)\n",
                        type_info(c.type)->name, shape_str(c.rows, c.cols), kb.name, 1, us,
                        double(m.data.size()) / us * 1e-3);
        }

        std::printf("\nbatched prefill: us per token, one product of n tokens vs n matrix-vector products\n");
        std::printf("%-6s %-12s %-8s %7s %6s %12s %12s %7s\n", "type", "shape", "kernels", "threads", "tokens",
                    "batched", "separate", "speedup");
        const int64_t n_tok = 64;
        for (const Case &c : {cases[0], cases[2], cases[3], cases[4], cases[7], cases[9]}) {
            if (!wanted(c.type)) continue;
            Matrix m = make_matrix(c.type, c.rows, c.cols);
            std::vector<float> x(size_t(c.cols * n_tok)), y(size_t(c.rows * n_tok));
            std::mt19937 rng(2);
            std::normal_distribution<float> g(0.0f, 1.0f);
            for (float &v : x) v = g(rng);
            std::vector<uint8_t> scratch(matmul_scratch_bytes(c.type, c.cols, n_tok));
            const cpu::KernelImpl *impl = impls.back();
            for (int nth = 1; nth <= max_threads; nth++) {
                ThreadPool pool(nth);
                const double batched = time_us(
                    [&] {
                        matmul(pool, impl->table, c.type, m.data.data(), m.row_bytes, c.rows, c.cols, x.data(), n_tok,
                               y.data(), c.rows, scratch.data());
                    },
                    seconds);
                const double separate = time_us(
                    [&] {
                        for (int64_t t = 0; t < n_tok; t++)
                            matmul(pool, impl->table, c.type, m.data.data(), m.row_bytes, c.rows, c.cols,
                                   x.data() + t * c.cols, 1, y.data() + t * c.rows, c.rows, scratch.data());
                    },
                    seconds);
                std::printf("%-6s %-12s %-8s %7d %6lld %12.2f %12.2f %6.2fx\n", type_info(c.type)->name,
                            shape_str(c.rows, c.cols),
                            impl->table.name, nth, (long long)n_tok, batched / n_tok, separate / n_tok,
                            separate / batched);
            }
        }

    }

    if (section("attention")) {
        // Decode attention of one layer with SmolLM2's shape (9 query heads, 3 KV
        // heads of 64) over 4 sinks + a full window of 1024, per codec.
        std::printf("\ndecode attention, one layer, 4 sinks + 1024 window, 9/3 heads of 64: best us per token\n");
        for (kvfit_kv_codec codec : {KVFIT_KV_F16, KVFIT_KV_Q8, KVFIT_KV_Q4, KVFIT_KV_Q4_HADAMARD, KVFIT_KV_Q4_CHANNEL}) {
            RopeParams rope;
            rope.n_dims = 64;
            rope.freq_base = 100000.0f;
            const std::vector<LayerSpec> specs = uniform_attention_layers(1, 9, 3, 64, rope);
            kvfit_session_params sp = {};
            sp.n_sink = 4;
            sp.n_window = 1024;
            sp.kv_codec = codec;
            const MemoryPlan plan = plan_memory(specs, sp, 8192);
            auto backend = create_cpu_backend();
            for (int nth = 1; nth <= max_threads; nth++) {
                auto stream = backend->create_stream(nth, 256, 576, 1028);
                SessionMemory cache(*stream, specs, plan, 256);
                std::mt19937 rng(3);
                std::normal_distribution<float> g(0.0f, 1.0f);
                std::vector<float> q(256 * 576), k(256 * 192), v(256 * 192), out(256 * 576);
                for (float &x : q) x = g(rng);
                for (float &x : v) x = g(rng);
                uint64_t pos = 0;
                while (pos < 2000) {  // fill the cache past its window
                    for (float &x : k) x = g(rng);
                    cache.attend(*stream, 0, q.data(), k.data(), v.data(), 256, pos, out.data());
                    pos += 256;
                }
                const double us = time_us(
                    [&] {
                        cache.attend(*stream, 0, q.data(), k.data(), v.data(), 1, pos, out.data());
                        pos++;
                    },
                    seconds);
                std::printf("%-4s threads %d: %8.1f\n", codec == KVFIT_KV_F16 ? "f16" : codec == KVFIT_KV_Q8 ? "q8"
                            : codec == KVFIT_KV_Q4 ? "q4" : codec == KVFIT_KV_Q4_HADAMARD ? "q4h" : "q4c", nth, us);
            }
        }

    }

    if (section("pool")) {
        // Cost of a parallel loop beyond its work: every index busy for 2 us, so a
        // perfect pool takes 2 us per run() whatever the thread count. (An empty
        // loop would measure little: the caller claims every index itself before
        // a worker has noticed the job.)
        std::printf("\nthread pool: us per run() of 2 us of work per thread (ideal 2.0)\n");
        for (int nth = 1; nth <= max_threads; nth++) {
            ThreadPool pool(nth);
            const double us = time_us(
                [&] {
                    for (int i = 0; i < 100; i++)
                        pool.run([](int, int) {
                            const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(2);
                            while (std::chrono::steady_clock::now() < end) {
                            }
                        });
                },
                seconds);
            std::printf("threads %d: %.2f\n", nth, us / 100);
        }
    }
    return 0;
}
