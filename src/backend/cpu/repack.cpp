#include "backend/cpu/repack.h"

#include <cstdlib>
#include <cstring>

namespace kvfit {
namespace cpu {

size_t x4_block_bytes(uint32_t w_type) {
    switch (w_type) {
        case TYPE_Q4_1: return 80;
        case TYPE_Q8_0: return 136;
        default: return 0;
    }
}

bool x4_wanted(const KernelTable &k, uint32_t w_type, int64_t n_rows, int64_t n_cols) {
    if (!gemm_x4_avx512() || std::strcmp(k.name, "avx512") != 0) return false;
    if (const char *e = std::getenv("KVFIT_CPU_REPACK"); e && std::strcmp(e, "0") == 0) return false;
    return x4_block_bytes(w_type) != 0 && n_rows >= 4 && n_rows % 4 == 0 && n_cols % QK == 0;
}

size_t x4_bytes(uint32_t w_type, int64_t n_rows, int64_t n_cols) {
    return size_t(n_rows / 4) * size_t(n_cols / QK) * x4_block_bytes(w_type);
}

void x4_repack(uint32_t w_type, const void *src, size_t row_bytes, int64_t n_rows, int64_t n_cols, uint8_t *dst) {
    const uint8_t *s = static_cast<const uint8_t *>(src);
    const int64_t nb = n_cols / QK;
    const size_t bb = x4_block_bytes(w_type);
    for (int64_t g = 0; g < n_rows / 4; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = dst + (size_t(g) * size_t(nb) + size_t(b)) * bb;
            for (int i = 0; i < 4; i++) {
                const uint8_t *row = s + size_t(4 * g + i) * row_bytes;
                if (w_type == TYPE_Q4_1) {
                    const BlockQ4_1 &blk = reinterpret_cast<const BlockQ4_1 *>(row)[b];
                    std::memcpy(o + 16 * i, blk.qs, 16);
                    std::memcpy(o + 64 + 2 * i, &blk.d, 2);
                    std::memcpy(o + 72 + 2 * i, &blk.m, 2);
                } else {
                    const BlockQ8_0 &blk = reinterpret_cast<const BlockQ8_0 *>(row)[b];
                    for (int j = 0; j < QK; j++) o[32 * i + j] = uint8_t(blk.qs[j]) ^ 0x80;
                    std::memcpy(o + 128 + 2 * i, &blk.d, 2);
                }
            }
        }
    }
}

}  // namespace cpu
}  // namespace kvfit
