// The Vulkan backend. Weights are repacked once per model into device arenas
// (rows padded to 16 bytes, quantized blocks split into codes and scales so
// shaders load whole words; see vulkan/shaders/weights.glsl). A stream owns
// its session's buffers and records ops into a command buffer that is
// submitted at synchronize() or when full, with a barrier only where an op
// touches bytes an earlier op since the last barrier wrote (or writes bytes
// it read). Device addresses are opaque values that Device::span() resolves.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/ggml_order.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "kv/codec.h"
#include "vk_context.h"

namespace kvfit {

namespace vk {
namespace {

constexpr uint32_t kWG = 64;              // workgroup size of most shaders
constexpr uint32_t kMaxCommands = 1024;   // recorded commands before a command buffer is submitted
constexpr size_t kStagingBytes = 4 << 20; // per stream, each way
constexpr VkDeviceSize kArenaBytes = VkDeviceSize(64) << 20;
constexpr uint32_t kTokenTile = 8;        // tokens per workgroup in batched matmul
constexpr size_t kMaxDescriptorSets = 8192;
constexpr uint32_t kSetsPerPool = 256, kMaxBindings = 10;
constexpr uint32_t kAttnChunk = 256;      // keys per chunk of kvfit's attention order (cpu::kAttnChunk)

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }
uint32_t ceil_div(uint64_t a, uint64_t b) { return uint32_t((a + b - 1) / b); }

// Weights in blocks of 32 (activations as Q8_0 / Q8_1 blocks: matmul_q.comp).
bool is_quant(uint32_t type) {
    return type == TYPE_Q4_0 || type == TYPE_Q4_1 || type == TYPE_Q5_0 || type == TYPE_Q5_1 || type == TYPE_Q8_0;
}
// Weights in super-blocks of 256 (activations as Q8_K blocks: matmul_k.comp).
bool is_kquant(uint32_t type) { return type == TYPE_Q4_K || type == TYPE_Q5_K || type == TYPE_Q6_K; }

// Weight types the shaders (matmul, get_rows) compute with.
bool weight_type_ok(uint32_t type) {
    return is_quant(type) || is_kquant(type) || type == TYPE_F32 || type == TYPE_F16 || type == TYPE_BF16;
}

// Bytes of one weight row in the device layout.
size_t weight_stride(uint32_t type, int64_t n) {
    size_t b;
    switch (type) {
        case TYPE_F32: b = size_t(n) * 4; break;
        case TYPE_F16:
        case TYPE_BF16: b = size_t(n) * 2; break;
        case TYPE_Q8_0: b = size_t(n) + size_t(n / QK) * 2; break;
        case TYPE_Q4_0: b = size_t(n) / 2 + size_t(n / QK) * 2; break;
        case TYPE_Q4_1: b = size_t(n) / 2 + size_t(n / QK) * 4; break;
        case TYPE_Q5_0: b = size_t(n) / 2 + size_t(n / QK) * 6; break;
        case TYPE_Q5_1: b = size_t(n) / 2 + size_t(n / QK) * 8; break;
        case TYPE_Q4_K: b = size_t(n / QK_K) * sizeof(BlockQ4_K); break;
        case TYPE_Q5_K: b = size_t(n / QK_K) * sizeof(BlockQ5_K); break;
        case TYPE_Q6_K: b = size_t(n / QK_K) * sizeof(BlockQ6_K); break;
        default: {
            const TypeInfo *ti = type_info(type);
            fail(KVFIT_E_UNSUPPORTED, "the Vulkan backend cannot compute with %s weights", ti ? ti->name : "unknown");
        }
    }
    return round_up(std::max<size_t>(b, 4), 16);
}

// One GGUF row into the device layout (dst is `stride` bytes, zeroed here).
void repack_row(uint32_t type, const uint8_t *src, uint8_t *dst, int64_t n, size_t stride) {
    std::memset(dst, 0, stride);
    const int64_t nb = n / QK;
    switch (type) {
        case TYPE_F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case TYPE_F16:
        case TYPE_BF16: std::memcpy(dst, src, size_t(n) * 2); return;
        case TYPE_Q8_0:
        case TYPE_Q4_0:
        case TYPE_Q4_1: {
            // A GGUF block is its scale(s) then its codes: the codes of all
            // blocks go first, then the blocks' scale bytes as they are.
            const size_t block = type_info(type)->block_bytes, codes = type == TYPE_Q8_0 ? QK : QK / 2;
            const size_t head = block - codes;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = src + size_t(b) * block;
                std::memcpy(dst + size_t(b) * codes, blk + head, codes);
                std::memcpy(dst + size_t(nb) * codes + size_t(b) * head, blk, head);
            }
            return;
        }
        case TYPE_Q5_0:
        case TYPE_Q5_1: {
            // codes of all blocks, then their words of fifth bits, then their scale bytes
            const size_t block = type_info(type)->block_bytes, head = type == TYPE_Q5_0 ? 2 : 4;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = src + size_t(b) * block;
                std::memcpy(dst + size_t(b) * (QK / 2), blk + head + 4, QK / 2);
                std::memcpy(dst + size_t(nb) * (QK / 2) + size_t(b) * 4, blk + head, 4);
                std::memcpy(dst + size_t(nb) * (QK / 2 + 4) + size_t(b) * head, blk, head);
            }
            return;
        }
        case TYPE_Q4_K:
        case TYPE_Q5_K: std::memcpy(dst, src, row_bytes(type, n)); return;
        case TYPE_Q6_K: {
            // ql, qh, scales of each super-block (208 bytes), then the fp16 factors
            const int64_t nk = n / QK_K;
            for (int64_t b = 0; b < nk; b++) {
                const uint8_t *blk = src + size_t(b) * sizeof(BlockQ6_K);
                std::memcpy(dst + size_t(b) * 208, blk, 208);
                std::memcpy(dst + size_t(nk) * 208 + size_t(b) * 2, blk + 208, 2);
            }
            return;
        }
        default: fail(KVFIT_E_INTERNAL, "repack of weight type %u", type);
    }
}

bool env_flag(const char *name) {
    const char *v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

// Push constants of each shader, mirroring its GLSL block.
struct GetRowsPush {
    uint32_t type, ncols, stride, w_off, ids_off, x_off, row0, row1;
};
struct QuantizePush {
    uint32_t mode, ncols, x_off, q_off, q_stride;
};
struct MatmulPush {
    uint32_t ncols, nrows, ntok, w_off, w_stride, x_off, x_stride, y_off, ldy, n_wg;
};
struct RmsnormPush {
    uint32_t x_off, g_off, y_off, d;
    float eps;
};
struct KvEncodePush {
    uint32_t codec, hadamard, hd, nrows, x_off, dst_off, head_bytes, signs_off, gx;
};
struct AttentionPush {
    uint32_t q_off, o_off, cs_off, signs_off, k_off, v_off, kn_off, vn_off, n_head, S, W, pos0c;
    int32_t rel_S, rel_wfirst;
    uint32_t p0mod, row_bytes, head_bytes, n_dims;
    float scale;
    uint32_t n_q, n_split, k_row_bytes, k_head_bytes, ks_off, kr_off, k_block_bytes, k_block_head_bytes;
    int32_t rel_res0;
};
struct RopePush {
    uint32_t k_off, cs_off, n_rows, n_heads, head_dim, n_dims, neox, pos0;
};
struct AttentionGgmlPush {
    uint32_t q_off, o_off, cs_off, k_off, v_off, kn_off, vn_off, n_head, pos0, row_bytes, head_bytes, n_dims, neox;
    float scale;
    uint32_t ring;  // a native sliding window's ring slots (0: a dense cache)
};
struct ChannelsPush {
    uint32_t rows_off, dst_off, width;
};
struct MergePush {
    uint32_t part_off, o_off, n_split, hd;
};
struct ElementwisePush {
    uint32_t a_off, b_off, c_off, n, stride;
};
struct ScalePush {
    uint32_t x_off, n, stride;
    float s;
};
struct GegluPush {
    uint32_t g_off, u_off, o_off, n, stride, t_off;
};
// RWKV-7
struct NormAffinePush {
    uint32_t x_off, w_off, b_off, y_off, d, gs;
    float eps;
};
struct TokenShiftPush {
    uint32_t x_off, s_off, m_off, o_off, n, d, total, stride;
};
struct ActivatePush {
    uint32_t x_off, n, stride, f;
};
struct Rwkv7DecayPush {
    uint32_t w_off, w0_off, a_off, a0_off, v_off, vf_off, vm_off, v0_off, d, total, stride, has_vmix;
    float decay;
};
struct Rwkv7KkPush {
    uint32_t k_off, kk_off, ka_off, a_off, ao_off, bo_off, n_head, head_size;
};
struct Wkv7Push {
    uint32_t r_off, w_off, k_off, v_off, a_off, b_off, s_off, o_off, n, n_head, head_size;
};
struct BonusPush {
    uint32_t y_off, r_off, k_off, v_off, rk_off, g_off, n_head, head_size;
};
// Gated DeltaNet
struct GdnPointwisePush {
    uint32_t a_off, b_off, c_off, n, stride, mode, width;
};
struct DeltaGatesPush {
    uint32_t al_off, be_off, dt_off, a_off, n_heads, total;
};
struct L2normPush {
    uint32_t x_off, stride, dim;
    float eps_n, inv_sqrt;
};
struct SsmConvPush {
    uint32_t x_off, w_off, s_off, y_off, n, channels, kernel;
};
struct DeltaNetPush {
    uint32_t q_off, k_off, v_off, qk_stride, v_stride, g_off, b_off, s_off, o_off, n, n_k_heads, n_v_heads;
    float scale;
};
static_assert(sizeof(AttentionPush) <= kPushBytes, "push constants");
static_assert(sizeof(DeltaNetPush) <= kPushBytes, "push constants");

class VulkanStream;

class VulkanBackend final : public Backend {
public:
    VulkanBackend(std::shared_ptr<Instance> inst, const PhysicalDevice &pd) : dev_(std::move(inst), pd) {
        name_ = "Vulkan (" + pd.name + ")";
    }
    ~VulkanBackend() override {
        for (void *a : addrs_) dev_.unmap_address(a);
        for (Buffer &b : arenas_) dev_.destroy(b);
        dev_.destroy(staging_);
        const DeviceFns &f = dev_.fn();
        if (fence_) f.vkDestroyFence(dev_.handle(), fence_, nullptr);
        if (pool_) f.vkDestroyCommandPool(dev_.handle(), pool_, nullptr);
    }

    const char *name() const override { return name_.c_str(); }
    kvfit_backend_kind kind() const override { return KVFIT_BACKEND_VULKAN; }
    bool reproduces_cpu() const override { return dev_.use_fp64(); }

    Weight upload_weight(const GGUFTensor &t) override {
        // Types these shaders do not compute with must not reach a matmul
        // that would read them as another type.
        if (!weight_type_ok(t.type)) {
            const TypeInfo *ti = type_info(t.type);
            fail(KVFIT_E_UNSUPPORTED, "%s: the Vulkan backend cannot compute with %s weights", t.name.c_str(),
                 ti ? ti->name : "unknown");
        }
        Weight w;
        w.type = t.type;
        w.n_cols = t.ne[0];
        w.n_rows = t.ne[1] * t.ne[2] * t.ne[3];
        if (is_quant(t.type) && w.n_cols % QK)
            fail(KVFIT_E_FORMAT, "tensor '%s' has rows of %lld values, not a multiple of %d", t.name.c_str(),
                 (long long)w.n_cols, QK);
        if (is_kquant(t.type) && w.n_cols % QK_K)
            fail(KVFIT_E_FORMAT, "tensor '%s' has rows of %lld values, not a multiple of %d", t.name.c_str(),
                 (long long)w.n_cols, QK_K);
        w.row_bytes = weight_stride(t.type, w.n_cols);
        const size_t src_row = row_bytes(t.type, w.n_cols);
        w.data = place(w.row_bytes * size_t(w.n_rows), [&](uint8_t *dst, size_t first, size_t rows) {
            for (size_t r = 0; r < rows; r++)
                repack_row(t.type, t.data + (first + r) * src_row, dst + r * w.row_bytes, w.n_cols, w.row_bytes);
        }, w.row_bytes);
        return w;
    }

    const float *upload_floats(const float *data, size_t n) override {
        return static_cast<const float *>(place(n * 4, [&](uint8_t *dst, size_t first, size_t rows) {
            std::memcpy(dst, data + first, rows * 4);
        }, 4));
    }

    std::unique_ptr<Stream> create_stream(int n_threads, int max_tokens, int64_t max_cols, int max_kv) override;

    Device &device() { return dev_; }

    // Scaled signs of the Hadamard rotation of n values, on the device.
    const float *hadamard_signs(int n) {
        {
            std::lock_guard<std::mutex> lock(signs_mutex_);
            auto it = signs_.find(n);
            if (it != signs_.end()) return it->second;
        }
        // Row 0 of the Hadamard matrix is all ones, so the rotation of unit
        // vector i starts with sign[i] / sqrt(n): the CPU's table, read back.
        std::vector<float> s(static_cast<size_t>(n)), e(static_cast<size_t>(n));
        for (int i = 0; i < n; i++) {
            std::fill(e.begin(), e.end(), 0.0f);
            e[size_t(i)] = 1.0f;
            hadamard_rotate(e.data(), n);
            s[size_t(i)] = e[0];
        }
        const float *d = upload_floats(s.data(), s.size());
        std::lock_guard<std::mutex> lock(signs_mutex_);
        return signs_.emplace(n, d).first->second;
    }

    // The CPU's GELU table (cpu::gelu_f16_table: 65536 F16 values, two to a
    // word) on the device, placed at its first use.
    const void *gelu_table() {
        std::lock_guard<std::mutex> lock(gelu_mutex_);
        if (!gelu_) {
            const uint8_t *t = reinterpret_cast<const uint8_t *>(cpu::gelu_f16_table());
            gelu_ = place(kGeluTableBytes, [&](uint8_t *dst, size_t first, size_t words) {
                std::memcpy(dst, t + first * 4, words * 4);
            }, 4);
        }
        return gelu_;
    }
    static constexpr size_t kGeluTableBytes = size_t(1) << 17;

private:
    // Reserves `bytes` in an arena and fills them with fill(dst, first, count)
    // over items of `item` bytes (in pieces when they go through staging).
    template <class Fill>
    void *place(size_t bytes, Fill fill, size_t item) {
        std::lock_guard<std::mutex> lock(mutex_);
        const VkDeviceSize align = dev_.offset_align();
        VkDeviceSize off = round_up(arena_used_, align);
        if (arenas_.empty() || off + bytes > arenas_.back().size) {
            const VkDeviceSize size = std::max<VkDeviceSize>(kArenaBytes, round_up(bytes, align));
            arenas_.push_back(dev_.create_buffer(size, dev_.unified_memory() ? MemKind::DeviceMapped : MemKind::Device));
            off = 0;
        }
        Buffer &a = arenas_.back();
        const size_t n_items = bytes / item;
        if (a.mapped) {
            fill(static_cast<uint8_t *>(a.mapped) + off, 0, n_items);
        } else {
            ensure_staging();
            if (item > staging_.size) fail(KVFIT_E_UNSUPPORTED, "Vulkan: a weight row of %zu bytes is too large", item);
            const size_t per = staging_.size / item;
            for (size_t first = 0; first < n_items; first += per) {
                const size_t cnt = std::min(per, n_items - first);
                fill(static_cast<uint8_t *>(staging_.mapped), first, cnt);
                copy_staged(a.buf, off + first * item, cnt * item);
            }
        }
        arena_used_ = off + bytes;
        void *addr = dev_.map_address(a.buf, off, bytes);
        addrs_.push_back(addr);
        return addr;
    }

    void ensure_staging() {
        if (staging_.buf) return;
        const DeviceFns &f = dev_.fn();
        staging_ = dev_.create_buffer(kStagingBytes * 4, MemKind::Upload);
        VkCommandPoolCreateInfo pi{};
        pi.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
        pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
        pi.queueFamilyIndex = dev_.physical().family;
        check(f.vkCreateCommandPool(dev_.handle(), &pi, nullptr, &pool_), "vkCreateCommandPool");
        VkCommandBufferAllocateInfo ai{};
        ai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
        ai.commandPool = pool_;
        ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
        ai.commandBufferCount = 1;
        check(f.vkAllocateCommandBuffers(dev_.handle(), &ai, &cb_), "vkAllocateCommandBuffers");
        VkFenceCreateInfo fi{};
        fi.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
        check(f.vkCreateFence(dev_.handle(), &fi, nullptr, &fence_), "vkCreateFence");
    }

    // Staging -> arena copy, waited for (weights load once, at model load).
    void copy_staged(VkBuffer dst, VkDeviceSize off, size_t bytes) {
        const DeviceFns &f = dev_.fn();
        VkCommandBufferBeginInfo bi{};
        bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
        bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
        check(f.vkBeginCommandBuffer(cb_, &bi), "vkBeginCommandBuffer");
        VkBufferCopy region{0, off, bytes};
        f.vkCmdCopyBuffer(cb_, staging_.buf, dst, 1, &region);
        check(f.vkEndCommandBuffer(cb_), "vkEndCommandBuffer");
        VkSubmitInfo si{};
        si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
        si.commandBufferCount = 1;
        si.pCommandBuffers = &cb_;
        check(dev_.submit(si, fence_), "vkQueueSubmit");
        check(f.vkWaitForFences(dev_.handle(), 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
        check(f.vkResetFences(dev_.handle(), 1, &fence_), "vkResetFences");
    }

    Device dev_;
    std::string name_;
    std::mutex mutex_;
    std::vector<Buffer> arenas_;
    VkDeviceSize arena_used_ = 0;
    std::vector<void *> addrs_;
    Buffer staging_;
    VkCommandPool pool_ = VK_NULL_HANDLE;
    VkCommandBuffer cb_ = VK_NULL_HANDLE;
    VkFence fence_ = VK_NULL_HANDLE;
    std::mutex signs_mutex_;
    std::map<int, const float *> signs_;
    std::mutex gelu_mutex_;
    const void *gelu_ = nullptr;
};

class VulkanStream final : public Stream {
public:
    const char *backend_name() const override { return "Vulkan"; }
    VulkanStream(VulkanBackend &b, int max_tokens, int64_t max_cols, int max_kv)
        : b_(b), d_(b.device()), f_(b.device().fn()), max_tokens_(max_tokens), max_cols_(max_cols), max_kv_(max_kv) {
        profile_ = env_flag("KVFIT_VULKAN_PROFILE") && d_.physical().timestamp_bits > 0;
        try {
            VkCommandPoolCreateInfo pi{};
            pi.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
            pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
            pi.queueFamilyIndex = d_.physical().family;
            check(f_.vkCreateCommandPool(d_.handle(), &pi, nullptr, &pool_), "vkCreateCommandPool");
            for (Batch &bt : batch_) {
                VkCommandBufferAllocateInfo ai{};
                ai.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
                ai.commandPool = pool_;
                ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
                ai.commandBufferCount = 1;
                check(f_.vkAllocateCommandBuffers(d_.handle(), &ai, &bt.cb), "vkAllocateCommandBuffers");
                VkFenceCreateInfo fi{};
                fi.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
                check(f_.vkCreateFence(d_.handle(), &fi, nullptr, &bt.fence), "vkCreateFence");
                if (profile_) {
                    VkQueryPoolCreateInfo qi{};
                    qi.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO;
                    qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
                    qi.queryCount = 2 * kMaxCommands;
                    check(f_.vkCreateQueryPool(d_.handle(), &qi, nullptr, &bt.queries), "vkCreateQueryPool");
                }
            }
            up_ = d_.create_buffer(kStagingBytes, MemKind::Upload);
            down_ = d_.create_buffer(kStagingBytes, MemKind::Readback);
            // Activations converted for matmul: Q8 codes + two floats per block, or halfs.
            const size_t per_token =
                std::max(size_t(max_cols) + size_t(max_cols / QK + 1) * 8, 2 * size_t(max_cols) + 4) + 16;
            act_ = alloc(per_token * size_t(std::max(max_tokens, 1)));
        } catch (...) {
            release();
            throw;
        }
    }

    ~VulkanStream() override {
        if (profile_) report_profile();
        release();
    }

    void *alloc(size_t bytes) override {
        Buffer buf = d_.create_buffer(bytes, MemKind::Device);
        void *addr = nullptr;
        try {
            addr = d_.map_address(buf.buf, 0, bytes);
            allocs_.emplace_back(buf, addr);
            allocated_ += buf.allocated;
        } catch (...) {
            if (addr) d_.unmap_address(addr);
            d_.destroy(buf);
            throw;
        }
        return addr;
    }
    uint64_t allocated_bytes() const override { return allocated_; }

    void upload(void *dst, const void *src, size_t bytes) override {
        live();
        const uint8_t *s = static_cast<const uint8_t *>(src);
        uint8_t *dptr = static_cast<uint8_t *>(dst);
        while (bytes) {
            if (up_used_ >= kStagingBytes) drain();
            const size_t chunk = std::min(bytes, kStagingBytes - up_used_);
            std::memcpy(static_cast<uint8_t *>(up_.mapped) + up_used_, s, chunk);
            const Span ds = d_.span(dptr, chunk, false);
            Batch &bt = begin();
            track({{ds, true}});
            stamp(bt, 0);
            VkBufferCopy region{up_used_, ds.begin, chunk};
            f_.vkCmdCopyBuffer(bt.cb, up_.buf, ds.buf, 1, &region);
            stamp(bt, 1);
            up_used_ = std::min(kStagingBytes, round_up(up_used_ + chunk, 16));
            done("upload");
            s += chunk;
            dptr += chunk;
            bytes -= chunk;
        }
    }

    void download(void *dst, const void *src, size_t bytes) override {
        live();
        uint8_t *hd = static_cast<uint8_t *>(dst);
        const uint8_t *sptr = static_cast<const uint8_t *>(src);
        while (bytes) {
            if (down_used_ >= kStagingBytes) drain();
            const size_t chunk = std::min(bytes, kStagingBytes - down_used_);
            const Span ss = d_.span(sptr, chunk, false);
            Batch &bt = begin();
            track({{ss, false}});
            stamp(bt, 0);
            VkBufferCopy region{ss.begin, down_used_, chunk};
            f_.vkCmdCopyBuffer(bt.cb, ss.buf, down_.buf, 1, &region);
            stamp(bt, 1);
            bt.reads.push_back({hd, down_used_, chunk});
            down_used_ = std::min(kStagingBytes, round_up(down_used_ + chunk, 16));
            done("download");
            hd += chunk;
            sptr += chunk;
            bytes -= chunk;
        }
    }

    void synchronize() override {
        live();
        drain();
    }

    void copy(void *dst, const void *src, size_t bytes) override {
        live();
        if (!bytes) return;
        const Span ss = d_.span(src, bytes, false), ds = d_.span(dst, bytes, false);
        if (ss.buf == ds.buf && ss.begin < ds.end && ds.begin < ss.end)
            fail(KVFIT_E_INTERNAL, "Vulkan: overlapping device-to-device copy");
        Batch &bt = begin();
        track({{ss, false}, {ds, true}});
        stamp(bt, 0);
        VkBufferCopy region{ss.begin, ds.begin, bytes};
        f_.vkCmdCopyBuffer(bt.cb, ss.buf, ds.buf, 1, &region);
        stamp(bt, 1);
        done("copy");
    }

    void get_rows(const Weight &table, const int32_t *ids, int n, float *x) override {
        if (n <= 0) return;
        const size_t ncols = size_t(table.n_cols);
        const Span is = d_.span(ids, size_t(n) * 4), xs = d_.span(x, size_t(n) * ncols * 4);
        const Pipeline &pl = d_.pipeline("get_rows", 3, {kWG});
        for_row_chunks(table, [&](int64_t r0, int64_t rows, const Span &ws) {
            GetRowsPush p{table.type, uint32_t(ncols), uint32_t(table.row_bytes), uint32_t(ws.rel),
                          uint32_t(is.rel / 4), uint32_t(xs.rel / 4), uint32_t(r0), uint32_t(r0 + rows)};
            run("get_rows", pl, {{ws, false}, {is, false}, {xs, true}}, &p, sizeof p, ceil_div(ncols, kWG), uint32_t(n));
        });
    }

    void rmsnorm(const float *x, const Weight &w, float eps, int n, float *y) override {
        if (n <= 0) return;
        if (w.type != TYPE_F32) fail(KVFIT_E_INTERNAL, "Vulkan: norm weights must be F32");
        const size_t d = size_t(w.n_cols);
        const Span xs = d_.span(x, size_t(n) * d * 4), gs = d_.span(w.data, d * 4), ys = d_.span(y, size_t(n) * d * 4);
        const Pipeline &pl = d_.pipeline(variant("rmsnorm"), 3, {kWG});
        RmsnormPush p{uint32_t(xs.rel / 4), uint32_t(gs.rel / 4), uint32_t(ys.rel / 4), uint32_t(d), eps};
        run("rmsnorm", pl, {{xs, false}, {gs, false}, {ys, true}}, &p, sizeof p, uint32_t(n));
    }

    void matmul(const Weight &w, const float *x, int n, float *y) override {
        if (n <= 0 || w.n_rows <= 0) return;
        if (n > max_tokens_ || w.n_cols > max_cols_)
            fail(KVFIT_E_INTERNAL, "Vulkan: matmul of %d x %lld exceeds the stream's scratch", n, (long long)w.n_cols);
        const size_t ncols = size_t(w.n_cols), nrows = size_t(w.n_rows);
        const bool q = is_quant(w.type), kq = is_kquant(w.type);
        Span xs;
        uint32_t x_stride;
        if (w.type == TYPE_F32) {
            xs = d_.span(x, size_t(n) * ncols * 4);
            x_stride = uint32_t(ncols);
        } else {
            // Activations first become what the CPU multiplies this weight type with.
            const uint32_t mode = kq ? 4
                                  : w.type == TYPE_Q4_1 || w.type == TYPE_Q5_1 ? 1
                                  : q ? 0
                                  : w.type == TYPE_F16 ? 2 : 3;
            // rows 16-byte aligned: matmul loads them 16 bytes at a time
            x_stride = uint32_t(round_up(kq  ? ncols / 4 + 17 * (ncols / QK_K)
                                         : q ? ncols / 4 + 2 * (ncols / QK)
                                             : (ncols + 1) / 2,
                                         4));
            const Span in = d_.span(x, size_t(n) * ncols * 4);
            xs = d_.span(act_, size_t(n) * x_stride * 4);
            QuantizePush p{mode, uint32_t(ncols), uint32_t(in.rel / 4), uint32_t(xs.rel / 4), x_stride};
            const uint32_t items = kq ? uint32_t(ncols / QK_K) : q ? uint32_t(ncols / QK) : x_stride;
            run("quantize", d_.pipeline(variant("quantize"), 2, {kWG}), {{in, false}, {xs, true}}, &p, sizeof p,
                ceil_div(items, kWG), uint32_t(n));
        }
        const Span ys = d_.span(y, size_t(n) * nrows * 4);
        const uint32_t nt = n == 1 ? 1 : kTokenTile;
        // Rows per workgroup: quantized weights take 8 invocations a row (one
        // per lane of the CPU's block order); float weights a subgroup a row
        // where there are subgroups, else a workgroup.
        std::string shader;
        uint32_t wg = kWG, rows_per_wg = 1;
        if (q || kq) {
            shader = variant(kq ? "matmul_k" : "matmul_q");
            rows_per_wg = kWG / 8;
        } else if (d_.use_subgroup()) {
            shader = "matmul_f_sg";
            wg = std::max<uint32_t>(kWG, d_.subgroup_size());
            rows_per_wg = wg / d_.subgroup_size();
        } else {
            shader = "matmul_f";
        }
        const Pipeline &pl = d_.pipeline(shader, 3, {wg, w.type, nt});
        for_row_chunks(w, [&](int64_t r0, int64_t rows, const Span &ws) {
            const uint32_t gx = std::min<uint32_t>(ceil_div(uint64_t(rows), rows_per_wg),
                                                   d_.limits().maxComputeWorkGroupCount[0]);
            MatmulPush p{uint32_t(ncols), uint32_t(rows), uint32_t(n), uint32_t(ws.rel), uint32_t(w.row_bytes),
                         uint32_t(xs.rel / 4), x_stride, uint32_t(ys.rel / 4 + size_t(r0)), uint32_t(nrows), gx};
            run("matmul", pl, {{ws, false}, {xs, false}, {ys, true}}, &p, sizeof p, gx, ceil_div(uint64_t(n), nt));
        });
    }

    void kv_encode(int codec, bool hadamard, float *x, int n, int n_heads, int head_dim, uint8_t *dst) override {
        check_codec(codec, hadamard, head_dim);
        if (n <= 0) return;
        const uint32_t rows = uint32_t(n) * uint32_t(n_heads);
        const size_t hb = codec_row_bytes(KVCodec(codec), head_dim);
        const Span xs = d_.span(x, size_t(rows) * size_t(head_dim) * 4), ds = d_.span(dst, size_t(rows) * hb);
        const float *signs = hadamard ? b_.hadamard_signs(head_dim) : x;
        const Span ss = d_.span(signs, hadamard ? size_t(head_dim) * 4 : 4);
        const uint32_t gx = std::min<uint32_t>(rows, d_.limits().maxComputeWorkGroupCount[0]);
        KvEncodePush p{uint32_t(codec), hadamard, uint32_t(head_dim), rows, uint32_t(xs.rel / 4), uint32_t(ds.rel),
                       uint32_t(hb), uint32_t(ss.rel / 4), gx};
        run("kv_encode", d_.pipeline(variant("kv_encode"), 3, {kWG}), {{xs, hadamard}, {ds, true}, {ss, false}}, &p, sizeof p,
            gx, ceil_div(rows, gx));
    }

    void kv_encode_channels(const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) override {
        check_codec(int(KVCodec::Q4), false, head_dim);
        const uint32_t width = uint32_t(n_heads) * uint32_t(head_dim);
        const Span rs = d_.span(rows, size_t(width) * 2 * KV_CHANNEL_BLOCK);
        const Span ds = d_.span(dst, size_t(n_heads) * channel_block_bytes(head_dim));
        ChannelsPush p{uint32_t(rs.rel), uint32_t(ds.rel), width};
        run("kv_channels", d_.pipeline(variant("kv_channels"), 2, {kWG}), {{rs, false}, {ds, true}}, &p, sizeof p,
            ceil_div(width, kWG));
    }

    // Whether the shaders' fma() rounds once on this device: fma_probe.comp on
    // cases where a fused and an unfused fma differ (the rounding error of a
    // product), against std::fma.
    bool fma_is_fused() {
        std::vector<float> in;
        const float u = std::ldexp(1.0f, -23);
        in.insert(in.end(), {1.0f + u, 1.0f + u, -(1.0f + 2 * u)});  // fused: 2^-46; unfused: 0
        uint32_t x = 12345;
        auto next = [&] {  // a float in [-2, 2) from a small LCG
            x = x * 1664525u + 1013904223u;
            return float(int32_t(x >> 8) - (1 << 23)) * std::ldexp(1.0f, -22);
        };
        for (int i = 0; i < 255; i++) {
            const float a = next(), b = next();
            in.insert(in.end(), {a, b, -(a * b)});
        }
        const uint32_t n = uint32_t(in.size() / 3);
        void *buf = alloc(size_t(n) * 16);
        upload(buf, in.data(), in.size() * 4);
        const Span vs = d_.span(buf, size_t(n) * 16);
        const uint32_t push = n;
        run("fma_probe", d_.pipeline("fma_probe", 1, {kWG}), {{vs, true}}, &push, sizeof push, ceil_div(n, kWG));
        std::vector<float> out(n);
        download(out.data(), static_cast<uint8_t *>(buf) + size_t(n) * 12, size_t(n) * 4);
        synchronize();
        for (uint32_t i = 0; i < n; i++) {
            const float want = std::fma(in[3 * i], in[3 * i + 1], in[3 * i + 2]);
            if (std::memcmp(&want, &out[i], 4) != 0) return false;
        }
        return true;
    }

    // Dense F16 caches keep keys after RoPE, as on the CPU, so that attention
    // can follow the CPU's (llama.cpp's) arithmetic; see attention_ggml.comp.
    bool stores_rotated_keys() const override { return true; }

    void rope_keys(float *k, int n, int n_heads, int head_dim, uint64_t pos0, const CacheAttention &a) override {
        if (n <= 0) return;
        const uint32_t half = uint32_t(a.rope.n_dims / 2);
        if (pos0 + uint64_t(n) > 0xffffffffu || a.rope.n_dims > head_dim)
            fail(KVFIT_E_INTERNAL, "Vulkan: rope_keys arguments out of range");
        const uint32_t rows = uint32_t(n) * uint32_t(n_heads);
        const Span ks = d_.span(k, size_t(rows) * size_t(head_dim) * 4);
        const Span cs = d_.span(a.rope_cs, (size_t(pos0) + size_t(n)) * half * 2 * 4);
        RopePush p{uint32_t(ks.rel / 4), uint32_t(cs.rel / 4), rows, uint32_t(n_heads), uint32_t(head_dim),
                   uint32_t(a.rope.n_dims), a.rope.mode == RopeMode::Neox, uint32_t(pos0)};
        run("rope", d_.pipeline(variant("rope"), 2, {kWG}), {{ks, true}, {cs, false}}, &p, sizeof p, ceil_div(half, kWG), rows);
    }

    // The CPU's order for fewer than 64 queries over rotated F16 keys (it
    // takes its batched path from 64 on, and so does this backend).
    static constexpr int kGgmlTiledQueries = 64;

    // Rotated keys live in a dense F16 cache, or in the ring of a layer with
    // the model's own sliding window (no sinks; a key at its stream position
    // p in slot p mod n_window), at positions that fit 31 bits.
    static void check_rotated(const CacheAttention &a) {
        if (a.codec != int(KVCodec::F16) || (a.streaming && (a.n_sink || !a.n_window)) || a.channel_keys ||
            a.hadamard || a.pos0 + uint64_t(a.n_q) > 0x7fffffffu)
            fail(KVFIT_E_INTERNAL, "Vulkan: rotated keys outside a dense F16 cache or a native window");
    }

    void attention_ggml_order(const CacheAttention &a, const float *q, float *out) {
        const uint32_t hd = uint32_t(a.head_dim), group = uint32_t(a.n_head / a.n_head_kv);
        check_rotated(a);
        const size_t qbytes = size_t(a.n_q) * size_t(a.n_head) * hd * 4;
        const Span qs = d_.span(q, qbytes), os = d_.span(out, qbytes);
        // cached rows: every earlier position, or the ring's slots in use
        const size_t cached = a.streaming ? size_t(std::min<uint64_t>(a.pos0, a.n_window)) : size_t(a.pos0);
        const Span ks = d_.span(a.k, std::max<size_t>(cached * a.row_bytes, 4));
        const Span vs = d_.span(a.v, std::max<size_t>(cached * a.row_bytes, 4));
        const Span kn = d_.span(a.k_new, size_t(a.n_q) * a.row_bytes), vn = d_.span(a.v_new, size_t(a.n_q) * a.row_bytes);
        const Span cs = d_.span(a.rope_cs, d_.bytes_after(a.rope_cs));
        AttentionGgmlPush p{uint32_t(qs.rel / 4), uint32_t(os.rel / 4), uint32_t(cs.rel / 4), uint32_t(ks.rel),
                            uint32_t(vs.rel), uint32_t(kn.rel), uint32_t(vn.rel), uint32_t(a.n_head),
                            uint32_t(a.pos0), uint32_t(a.row_bytes), uint32_t(a.head_bytes), uint32_t(a.rope.n_dims),
                            a.rope.mode == RopeMode::Neox, a.scale, a.streaming ? a.n_window : 0u};
        run("attention_ggml", d_.pipeline(variant("attention_ggml"), 7, {kWG, hd, group}),
            {{qs, false}, {os, true}, {ks, false}, {vs, false}, {kn, false}, {vn, false}, {cs, false}}, &p, sizeof p,
            uint32_t(a.n_head), uint32_t(a.n_q));
    }

    void cache_attention(const CacheAttention &a, const float *q, float *out) override {
        check_codec(a.codec, a.hadamard, a.head_dim);
        if (a.keys_rotated && a.n_q > 0 && a.n_q < kGgmlTiledQueries) return attention_ggml_order(a, q, out);
        if (a.channel_keys && (a.codec != int(KVCodec::Q4) || a.hadamard || a.n_window % KV_CHANNEL_BLOCK))
            fail(KVFIT_E_UNSUPPORTED, "Vulkan: per-channel keys need Q4 values, no Hadamard rotation and a window "
                 "of whole blocks");
        if (a.n_q <= 0) return;
        if (a.keys_rotated) check_rotated(a);
        const uint32_t hd = uint32_t(a.head_dim), group = uint32_t(a.n_head / a.n_head_kv);
        const uint32_t S = a.n_sink, W = a.n_window;
        if (a.rope.n_dims <= 0 || a.rope.n_dims > a.head_dim || a.rope.n_dims % 2 || W == 0 || uint32_t(a.n_q) > W + S)
            fail(KVFIT_E_INTERNAL, "Vulkan: attention arguments out of range");
        // Queries per workgroup: keys are decoded once for all of them, as
        // far as shared memory and registers allow.
        const uint32_t dpt = (hd + kWG - 1) / kWG;
        auto shared_bytes = [&](uint32_t qb) {
            const size_t r = size_t(qb) * group;
            return (2 * r * hd + 2 * r * kWG + 8 * r + 3 * kWG) * 4;
        };
        // (two accumulators of qb * group * dpt floats per invocation)
        uint32_t qb = a.n_q == 1 ? 1 : 8;
        while (qb > 1 && (shared_bytes(qb) > d_.limits().maxComputeSharedMemorySize || qb * group * dpt > 32 ||
                          qb * group > kWG))
            qb /= 2;
        if (shared_bytes(qb) > d_.limits().maxComputeSharedMemorySize || group * dpt > 32 || group > kWG)
            fail(KVFIT_E_UNSUPPORTED, "Vulkan: attention with %u query heads per KV head of size %u does not fit "
                 "a workgroup on %s", group, hd, d_.physical().name.c_str());
        const size_t qbytes = size_t(a.n_q) * size_t(a.n_head) * hd * 4;
        const Span qs = d_.span(q, qbytes), os = d_.span(out, qbytes);
        // Keys: rows like the values', or with channel keys F16 rows (staged,
        // sinks, the block being filled) and W / 32 packed blocks.
        const size_t k_row = a.channel_keys ? size_t(a.n_head_kv) * hd * 2 : a.row_bytes;
        const Span ks = d_.span(a.k, a.channel_keys ? size_t(W / KV_CHANNEL_BLOCK) * a.k_block_bytes
                                                    : size_t(S + W) * a.row_bytes);
        const Span vs = d_.span(a.v, size_t(S + W) * a.row_bytes);
        const Span kn = d_.span(a.k_new, size_t(a.n_q) * k_row), vn = d_.span(a.v_new, size_t(a.n_q) * a.row_bytes);
        // (without channel keys these two bind the key cache again, unread)
        const Span sk = a.channel_keys && S ? d_.span(a.k_sink, size_t(S) * k_row) : ks;
        const Span rk = a.channel_keys ? d_.span(a.k_res, KV_CHANNEL_BLOCK * k_row) : ks;
        const Span cs = d_.span(a.rope_cs, d_.bytes_after(a.rope_cs));
        const float *signs = a.hadamard ? b_.hadamard_signs(a.head_dim) : a.rope_cs;
        const Span ss = d_.span(signs, a.hadamard ? size_t(hd) * 4 : 4);

        const uint64_t p0 = a.pos0, t_last = p0 + uint64_t(a.n_q) - 1;
        auto win_start = [&](uint64_t t) { return a.streaming ? std::max<uint64_t>(S, t + 1 > W ? t + 1 - W : 0) : uint64_t(S); };
        // A decode step over more than one chunk of keys (kAttnChunk) takes a
        // workgroup per chunk, merged below, so it keeps more than n_head_kv
        // busy; the chunks are those of the CPU's order, so the bits are too.
        const uint64_t n_keys = std::min<uint64_t>(S, t_last + 1) + (t_last + 1 - std::min(win_start(p0), t_last + 1));
        const uint32_t n_split = a.n_q == 1 ? uint32_t((n_keys + kAttnChunk - 1) / kAttnChunk) : 1;
        if (n_split > d_.limits().maxComputeWorkGroupCount[2])
            fail(KVFIT_E_UNSUPPORTED, "Vulkan: attention over %llu keys exceeds %s's workgroup count",
                 (unsigned long long)n_keys, d_.physical().name.c_str());
        AttentionPush p{};
        p.q_off = uint32_t(qs.rel / 4);
        p.cs_off = uint32_t(cs.rel / 4);
        p.signs_off = uint32_t(ss.rel / 4);
        p.k_off = uint32_t(ks.rel);
        p.v_off = uint32_t(vs.rel);
        p.kn_off = uint32_t(kn.rel);
        p.vn_off = uint32_t(vn.rel);
        p.n_head = uint32_t(a.n_head);
        p.S = S;
        p.W = W;
        p.pos0c = uint32_t(std::min<uint64_t>(p0, S));
        p.rel_S = int32_t(std::clamp<int64_t>(int64_t(S) - int64_t(std::min<uint64_t>(p0, uint64_t(1) << 62)),
                                              -(int64_t(1) << 30), int64_t(1) << 30));
        // Keys kept rotated are at their stream positions, so the frame is the
        // stream's own: queries at p0 + i (dense: the same thing).
        p.rel_wfirst = a.keys_rotated ? -int32_t(p0) : int32_t(int64_t(std::max<uint64_t>(win_start(p0), S)) - int64_t(p0));
        p.p0mod = p0 >= S ? uint32_t((p0 - S) % W) : 0;
        p.row_bytes = uint32_t(a.row_bytes);
        p.head_bytes = uint32_t(a.head_bytes);
        p.n_dims = uint32_t(a.rope.n_dims);
        p.scale = a.scale;
        p.n_q = uint32_t(a.n_q);
        p.n_split = n_split;
        p.k_row_bytes = uint32_t(k_row);
        p.k_head_bytes = uint32_t(a.channel_keys ? size_t(hd) * 2 : a.head_bytes);
        if (a.channel_keys) {
            p.ks_off = uint32_t(sk.rel);
            p.kr_off = uint32_t(rk.rel);
            p.k_block_bytes = uint32_t(a.k_block_bytes);
            p.k_block_head_bytes = uint32_t(a.k_block_bytes / size_t(a.n_head_kv));
            // positions from res0 on are in the block being filled (as the CPU's decode_keys)
            const uint64_t res0 = p0 > S ? S + (p0 - S) / KV_CHANNEL_BLOCK * KV_CHANNEL_BLOCK : p0;
            p.rel_res0 = int32_t(int64_t(res0) - int64_t(p0));
        }
        const Pipeline &pl = d_.pipeline(variant("attention"), 10, {kWG, hd, group, uint32_t(a.codec), a.hadamard,
                                                           a.rope.mode == RopeMode::Neox, qb, a.channel_keys,
                                                           a.keys_rotated});
        const uint32_t gy = ceil_div(uint32_t(a.n_q), qb);
        if (n_split == 1) {
            p.o_off = uint32_t(os.rel / 4);
            run("attention", pl,
                {{qs, false}, {os, true}, {ks, false}, {vs, false}, {kn, false}, {vn, false}, {cs, false}, {ss, false},
                 {sk, false}, {rk, false}},
                &p, sizeof p, uint32_t(a.n_head_kv), gy, n_split);
            return;
        }
        // Partials: per output row and chunk, m, l and hd sums; sized once, for
        // the most keys this stream's sessions attend over.
        const size_t rows = size_t(a.n_head);
        const size_t need = rows * n_split * (hd + 2) * 4;
        if (need > part_bytes_) {
            if (part_) fail(KVFIT_E_INTERNAL, "Vulkan: attention partials grew");
            const size_t max_chunks = (size_t(std::max(max_kv_, 1)) + kAttnChunk - 1) / kAttnChunk + 1;
            part_bytes_ = std::max(need, rows * max_chunks * (hd + 2) * 4);
            part_ = alloc(part_bytes_);
        }
        const Span ps = d_.span(part_, rows * n_split * (hd + 2) * 4);
        p.o_off = uint32_t(ps.rel / 4);
        run("attention", pl,
            {{qs, false}, {ps, true}, {ks, false}, {vs, false}, {kn, false}, {vn, false}, {cs, false}, {ss, false},
             {sk, false}, {rk, false}},
            &p, sizeof p, uint32_t(a.n_head_kv), gy, n_split);
        MergePush mp{uint32_t(ps.rel / 4), uint32_t(os.rel / 4), n_split, hd};
        run("attention_merge", d_.pipeline(variant("attention_merge"), 2, {kWG}), {{ps, false}, {os, true}}, &mp, sizeof mp,
            uint32_t(rows));
    }

    void swiglu(const float *gate, const float *up, size_t n, float *out) override {
        elementwise(d_.use_fp64() ? "swiglu_f64" : "swiglu", gate, up, out, n);
    }

    void add(float *y, const float *x, size_t n) override { elementwise("add", y, x, nullptr, n); }

    void scale(float *x, size_t n, float s) override {
        if (!n) return;
        if (n > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: scale over %zu values", n);
        const Span xs = d_.span(x, n * 4);
        const uint32_t gx = std::min<uint32_t>(ceil_div(n, kWG), d_.limits().maxComputeWorkGroupCount[0]);
        ScalePush p{uint32_t(xs.rel / 4), uint32_t(n), gx * kWG, s};
        run("scale", d_.pipeline("scale", 1, {kWG}), {{xs, true}}, &p, sizeof p, gx);
    }

    void geglu(const float *gate, const float *up, size_t n, float *out) override {
        if (!n) return;
        if (n > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: geglu over %zu values", n);
        const Span gs = d_.span(gate, n * 4), us = d_.span(up, n * 4), os = d_.span(out, n * 4);
        const Span ts = d_.span(b_.gelu_table(), VulkanBackend::kGeluTableBytes);
        const uint32_t gx = std::min<uint32_t>(ceil_div(n, kWG), d_.limits().maxComputeWorkGroupCount[0]);
        GegluPush p{uint32_t(gs.rel / 4), uint32_t(us.rel / 4), uint32_t(os.rel / 4), uint32_t(n), gx * kWG,
                    uint32_t(ts.rel / 4)};
        run("geglu", d_.pipeline("geglu", 4, {kWG}), {{gs, false}, {us, false}, {os, true}, {ts, false}}, &p, sizeof p,
            gx);
    }

    // ---- RWKV-7 (vulkan/shaders/norm_affine, token_shift, activate,
    // rwkv7_prepare, wkv7, rwkv7_bonus).
    void norm_affine(const float *x, const float *w, const float *b, float eps, int n, int d, int groups,
                     float *y) override {
        if (n <= 0) return;
        if (groups <= 0 || d % groups) fail(KVFIT_E_INTERNAL, "norm_affine: %d groups in rows of %d", groups, d);
        const size_t nd = size_t(n) * size_t(d);
        const Span xs = d_.span(x, nd * 4), ws = d_.span(w, size_t(d) * 4), bs = d_.span(b, size_t(d) * 4),
                   ys = d_.span(y, nd * 4);
        NormAffinePush p{uint32_t(xs.rel / 4), uint32_t(ws.rel / 4), uint32_t(bs.rel / 4), uint32_t(ys.rel / 4),
                         uint32_t(d), uint32_t(d / groups), eps};
        run("norm_affine", d_.pipeline(variant("norm_affine"), 4, {kWG}), {{xs, false}, {ws, false}, {bs, false}, {ys, true}},
            &p, sizeof p, uint32_t(groups), dim_y(n));
    }

    void token_shift_mix(const float *x, float *state, const float *mix, int n_mix, int n, int d, float *out) override {
        if (n <= 0) return;
        const size_t nd = size_t(n) * size_t(d), total = size_t(n_mix) * nd;
        if (total > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: token_shift_mix over %zu values", total);
        const Span xs = d_.span(x, nd * 4), ss = d_.span(state, size_t(d) * 4),
                   ms = d_.span(mix, size_t(n_mix) * size_t(d) * 4), os = d_.span(out, total * 4);
        const uint32_t gx = std::min<uint32_t>(ceil_div(total, kWG), d_.limits().maxComputeWorkGroupCount[0]);
        TokenShiftPush p{uint32_t(xs.rel / 4), uint32_t(ss.rel / 4), uint32_t(ms.rel / 4), uint32_t(os.rel / 4),
                         uint32_t(n), uint32_t(d), uint32_t(total), gx * kWG};
        run("token_shift", d_.pipeline("token_shift", 4, {kWG}), {{xs, false}, {ss, false}, {ms, false}, {os, true}}, &p,
            sizeof p, gx);
        copy(state, x + nd - size_t(d), size_t(d) * 4);  // ordered after the shader's reads of the state
    }

    void activate(Activation f, float *x, size_t n) override {
        const uint32_t code = f == Activation::Tanh ? 0u : f == Activation::Sigmoid ? 1u : 2u;
        const Pipeline &pl = d_.pipeline(variant("activate"), 1, {kWG});
        // in pieces that each fit one storage-buffer binding
        const size_t per = size_t((d_.max_range() - d_.offset_align()) / 4);
        for (size_t i0 = 0; i0 < n; i0 += per) {
            const size_t m = std::min(per, n - i0);
            const Span xs = d_.span(x + i0, m * 4);
            const uint32_t gx = std::min<uint32_t>(ceil_div(m, kWG), d_.limits().maxComputeWorkGroupCount[0]);
            ActivatePush p{uint32_t(xs.rel / 4), uint32_t(m), gx * kWG, code};
            run("activate", pl, {{xs, true}}, &p, sizeof p, gx);
        }
    }

    void rwkv7_prepare(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                       const float *vmix, const float *v0, float *k, const float *k_k, const float *k_a, int n,
                       int n_head, int head_size, float *a_out, float *b_out) override {
        if (n <= 0) return;
        const size_t d = size_t(n_head) * size_t(head_size), nd = size_t(n) * d;
        auto rows = [&](const void *ptr) { return d_.span(ptr, nd * 4); };
        auto vec = [&](const void *ptr) { return d_.span(ptr, d * 4); };
        const Span ws = rows(w), w0s = vec(w0), as = rows(a), a0s = vec(a0), vs = rows(v), ks = rows(k),
                   kks = vec(k_k), kas = vec(k_a), aos = rows(a_out), bos = rows(b_out);
        // Without the value mix (layer 0) its operands are not read: v stands in for them.
        const Span vfs = vmix ? rows(v_first) : vs, vms = vmix ? rows(vmix) : vs, v0s = vmix ? vec(v0) : vs;
        if (nd > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: rwkv7_prepare over %zu values", nd);
        const uint32_t gx = std::min<uint32_t>(ceil_div(nd, kWG), d_.limits().maxComputeWorkGroupCount[0]);
        Rwkv7DecayPush dp{uint32_t(ws.rel / 4), uint32_t(w0s.rel / 4), uint32_t(as.rel / 4), uint32_t(a0s.rel / 4),
                          uint32_t(vs.rel / 4), uint32_t(vfs.rel / 4), uint32_t(vms.rel / 4), uint32_t(v0s.rel / 4),
                          uint32_t(d),          uint32_t(nd),          gx * kWG,              vmix ? 1u : 0u,
                          -std::exp(-0.5f)};
        run("rwkv7_decay", d_.pipeline(variant("rwkv7_decay"), 8, {kWG}),
            {{ws, true}, {w0s, false}, {as, true}, {a0s, false}, {vs, true}, {vfs, false}, {vms, false}, {v0s, false}},
            &dp, sizeof dp, gx);
        Rwkv7KkPush kp{uint32_t(ks.rel / 4), uint32_t(kks.rel / 4), uint32_t(kas.rel / 4), uint32_t(as.rel / 4),
                       uint32_t(aos.rel / 4), uint32_t(bos.rel / 4), uint32_t(n_head), uint32_t(head_size)};
        run("rwkv7_kk", d_.pipeline(variant("rwkv7_kk"), 6, {kWG}),
            {{ks, true}, {kks, false}, {kas, false}, {as, false}, {aos, true}, {bos, true}}, &kp, sizeof kp,
            uint32_t(n_head), dim_y(n));
    }

    void wkv7(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b, int n,
              int n_head, int head_size, float *state, float *out) override {
        if (n <= 0) return;
        const size_t d = size_t(n_head) * size_t(head_size), nd = size_t(n) * d;
        const Span rs = d_.span(r, nd * 4), ws = d_.span(w, nd * 4), ks = d_.span(k, nd * 4), vs = d_.span(v, nd * 4),
                   as = d_.span(a, nd * 4), bs = d_.span(b, nd * 4), ss = d_.span(state, d * size_t(head_size) * 4),
                   os = d_.span(out, nd * 4);
        Wkv7Push p{uint32_t(rs.rel / 4), uint32_t(ws.rel / 4), uint32_t(ks.rel / 4), uint32_t(vs.rel / 4),
                   uint32_t(as.rel / 4), uint32_t(bs.rel / 4), uint32_t(ss.rel / 4), uint32_t(os.rel / 4),
                   uint32_t(n),          uint32_t(n_head),     uint32_t(head_size)};
        run("wkv7", d_.pipeline("wkv7", 8, {kWG}),
            {{rs, false}, {ws, false}, {ks, false}, {vs, false}, {as, false}, {bs, false}, {ss, true}, {os, true}}, &p,
            sizeof p, ceil_div(d, kWG));
    }

    void rwkv7_bonus_gate(float *y, const float *r, const float *k, const float *v, const float *r_k, const float *g,
                          int n, int n_head, int head_size) override {
        if (n <= 0) return;
        const size_t d = size_t(n_head) * size_t(head_size), nd = size_t(n) * d;
        const Span ys = d_.span(y, nd * 4), rs = d_.span(r, nd * 4), ks = d_.span(k, nd * 4), vs = d_.span(v, nd * 4),
                   rks = d_.span(r_k, d * 4), gs = d_.span(g, nd * 4);
        BonusPush p{uint32_t(ys.rel / 4), uint32_t(rs.rel / 4),  uint32_t(ks.rel / 4), uint32_t(vs.rel / 4),
                    uint32_t(rks.rel / 4), uint32_t(gs.rel / 4), uint32_t(n_head),     uint32_t(head_size)};
        run("rwkv7_bonus", d_.pipeline("rwkv7_bonus", 6, {kWG}),
            {{ys, true}, {rs, false}, {ks, false}, {vs, false}, {rks, false}, {gs, false}}, &p, sizeof p,
            uint32_t(n_head), dim_y(n));
    }

    // --- Gated DeltaNet (qwen35). With doubles the CPU reference's
    // arithmetic operation for operation (the shaders' comments), except the
    // logarithm of delta_gates' softplus. delta_net_chunked runs the
    // recurrent kernel: see delta_net.comp.
    void ssm_conv(const float *x, int n, int channels, int kernel, const float *w, float *state, float *y) override {
        if (n <= 0 || channels <= 0 || kernel < 1) fail(KVFIT_E_INTERNAL, "ssm_conv of %d x %d, kernel %d", n, channels, kernel);
        const size_t C = size_t(channels), K1 = size_t(kernel - 1);
        const Span xs = d_.span(x, size_t(n) * C * 4), ws = d_.span(w, C * size_t(kernel) * 4),
                   ss = d_.span(state, std::max<size_t>(K1, 1) * C * 4), ys = d_.span(y, size_t(n) * C * 4);
        SsmConvPush p{uint32_t(xs.rel / 4), uint32_t(ws.rel / 4), uint32_t(ss.rel / 4), uint32_t(ys.rel / 4),
                      uint32_t(n), uint32_t(channels), uint32_t(kernel)};
        run("ssm_conv", d_.pipeline(variant("ssm_conv"), 4, {kWG}), {{xs, false}, {ws, false}, {ss, true}, {ys, true}},
            &p, sizeof p, ceil_div(C, kWG));
    }

    void silu(const float *x, size_t n, float *y) override { gdn_pointwise(0, x, nullptr, y, n, n); }

    void sigmoid_mul(float *x, const float *gate, size_t n) override { gdn_pointwise(1, x, gate, x, n, n); }

    void delta_gates(float *alpha, float *beta, const float *dt_bias, const float *a, int n, int n_heads) override {
        if (n <= 0 || n_heads <= 0) return;
        const size_t total = size_t(n) * size_t(n_heads);
        if (total > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: delta_gates over %zu values", total);
        const Span as = d_.span(alpha, total * 4), bs = d_.span(beta, total * 4), ds = d_.span(dt_bias, size_t(n_heads) * 4),
                   gs = d_.span(a, size_t(n_heads) * 4);
        DeltaGatesPush p{uint32_t(as.rel / 4), uint32_t(bs.rel / 4), uint32_t(ds.rel / 4), uint32_t(gs.rel / 4),
                         uint32_t(n_heads), uint32_t(total)};
        run("delta_gates", d_.pipeline(variant("delta_gates"), 4, {kWG}),
            {{as, true}, {bs, true}, {ds, false}, {gs, false}}, &p, sizeof p, ceil_div(total, kWG));
    }

    void l2norm(float *x, int n, int rows, int dim, size_t stride, float eps) override {
        if (n <= 0 || rows <= 0) return;
        if (dim <= 0) fail(KVFIT_E_INTERNAL, "l2norm of rows of %d", dim);
        const size_t span = size_t(n - 1) * stride + size_t(rows) * size_t(dim);
        const Span xs = d_.span(x, span * 4);
        L2normPush p{uint32_t(xs.rel / 4), uint32_t(stride), uint32_t(dim), eps / float(dim), 1.0f / std::sqrt(float(dim))};
        run("l2norm", d_.pipeline(variant("l2norm"), 1, {kWG}), {{xs, true}}, &p, sizeof p, uint32_t(rows), uint32_t(n));
    }

    void gated_rmsnorm(const float *x, const Weight &w, const float *z, float eps, int rows, float *y) override {
        if (rows <= 0) return;
        rmsnorm(x, w, eps, rows, y);
        gdn_pointwise(2, y, z, y, size_t(rows) * size_t(w.n_cols), size_t(w.n_cols));
    }

    void delta_net(const DeltaNetArgs &a) override {
        if (a.n <= 0 || a.n_k_heads <= 0 || a.n_v_heads <= 0 || a.head_dim <= 0 || !a.q || !a.k || !a.v || !a.g ||
            !a.beta || !a.state || !a.out)
            fail(KVFIT_E_INTERNAL, "delta_net: incomplete arguments");
        const uint32_t D = uint32_t(a.head_dim);
        if (D > 256 || D > d_.limits().maxComputeWorkGroupSize[0] || D > d_.limits().maxComputeWorkGroupInvocations)
            fail(KVFIT_E_UNSUPPORTED, "the Vulkan backend does not support delta-rule heads of %u values", D);
        const size_t n = size_t(a.n), hd = size_t(D), hv = size_t(a.n_v_heads);
        const size_t qk = (n - 1) * a.qk_stride + size_t(a.n_k_heads) * hd, vv = (n - 1) * a.v_stride + hv * hd;
        const Span qs = d_.span(a.q, qk * 4), ks = d_.span(a.k, qk * 4), vs = d_.span(a.v, vv * 4),
                   gs = d_.span(a.g, n * hv * 4), bs = d_.span(a.beta, n * hv * 4), ss = d_.span(a.state, hv * hd * hd * 4),
                   os = d_.span(a.out, n * hv * hd * 4);
        DeltaNetPush p{uint32_t(qs.rel / 4), uint32_t(ks.rel / 4), uint32_t(vs.rel / 4), uint32_t(a.qk_stride),
                       uint32_t(a.v_stride),  uint32_t(gs.rel / 4), uint32_t(bs.rel / 4), uint32_t(ss.rel / 4),
                       uint32_t(os.rel / 4),  uint32_t(a.n),        uint32_t(a.n_k_heads), uint32_t(a.n_v_heads),
                       a.scale};
        run("delta_net", d_.pipeline(variant("delta_net"), 7, {D, D}),
            {{qs, false}, {ks, false}, {vs, false}, {gs, false}, {bs, false}, {ss, true}, {os, true}}, &p, sizeof p,
            uint32_t(a.n_v_heads));
    }

    // The chunked (WY) form pays where a chunk's products run on matrix
    // units; here every state row is already one invocation's serial work
    // over the batch, so the recurrent kernel serves prefill too (its result
    // is the CPU's recurrent form, within rounding of the CPU's chunked one).
    void delta_net_chunked(const DeltaNetArgs &a, int chunk) override {
        if (chunk < 1 || chunk > 1024) fail(KVFIT_E_INTERNAL, "delta_net chunk of %d", chunk);
        delta_net(a);
    }

    // One copy command with a region per row.
    void copy_2d(void *dst, size_t dst_stride, const void *src, size_t src_stride, size_t rows, size_t width) override {
        live();
        if (!rows || !width) return;
        const size_t sb = (rows - 1) * src_stride + width, db = (rows - 1) * dst_stride + width;
        const Span ss = d_.span(src, sb, false), ds = d_.span(dst, db, false);
        if (ss.buf == ds.buf && ss.begin < ds.end && ds.begin < ss.end)
            fail(KVFIT_E_INTERNAL, "Vulkan: overlapping device-to-device copy");
        std::vector<VkBufferCopy> regions(rows);
        for (size_t r = 0; r < rows; r++) regions[r] = {ss.begin + r * src_stride, ds.begin + r * dst_stride, width};
        Batch &bt = begin();
        track({{ss, false}, {ds, true}});
        stamp(bt, 0);
        f_.vkCmdCopyBuffer(bt.cb, ss.buf, ds.buf, uint32_t(regions.size()), regions.data());
        stamp(bt, 1);
        done("copy_2d");
    }

private:
    // Workgroups along y for n rows (the device's limit is at least 65535).
    uint32_t dim_y(int n) const {
        if (uint32_t(n) > d_.limits().maxComputeWorkGroupCount[1])
            fail(KVFIT_E_INTERNAL, "Vulkan: %d rows exceed the device's workgroup count", n);
        return uint32_t(n);
    }

    struct Readback {
        void *dst;
        size_t off, bytes;
    };
    struct Batch {
        VkCommandBuffer cb = VK_NULL_HANDLE;
        VkFence fence = VK_NULL_HANDLE;
        VkQueryPool queries = VK_NULL_HANDLE;
        bool recording = false, pending = false;
        uint32_t n_cmds = 0;
        std::vector<Readback> reads;
        std::vector<const char *> names;  // per command, when profiling
    };
    struct Arg {
        Span s;
        bool write;
    };
    struct Range {
        VkBuffer buf;
        VkDeviceSize begin, end;
    };

    // The shader variant dividing in double where the device has doubles.
    std::string variant(const char *shader) const { return d_.use_fp64() ? std::string(shader) + "_f64" : shader; }

    void check_codec(int codec, bool hadamard, int head_dim) const {
        if (codec < int(KVCodec::F16) || codec > int(KVCodec::Q4))
            fail(KVFIT_E_UNSUPPORTED, "the Vulkan backend does not support KV codec %d", codec);
        if (head_dim <= 0 || head_dim > 512 || head_dim % 2 || (codec != int(KVCodec::F16) && head_dim % KV_GROUP) ||
            (hadamard && (head_dim & (head_dim - 1))))
            fail(KVFIT_E_UNSUPPORTED, "the Vulkan backend does not support KV heads of %d values with codec %d%s",
                 head_dim, codec, hadamard ? " and the Hadamard rotation" : "");
    }

    // Calls fn(first row, rows, span) over pieces of a weight that each fit
    // one storage-buffer binding (all of it on most devices).
    template <class Fn>
    void for_row_chunks(const Weight &w, Fn fn) {
        const VkDeviceSize room = d_.max_range() - d_.offset_align();
        const int64_t per = std::max<int64_t>(1, int64_t(room / std::max<size_t>(w.row_bytes, 1)));
        for (int64_t r0 = 0; r0 < w.n_rows; r0 += per) {
            const int64_t rows = std::min(per, w.n_rows - r0);
            fn(r0, rows, d_.span(static_cast<const uint8_t *>(w.data) + size_t(r0) * w.row_bytes, size_t(rows) * w.row_bytes));
        }
    }

    void elementwise(const char *shader, const float *a, const float *b, float *c, size_t n) {
        if (!n) return;
        if (n > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: elementwise op over %zu values", n);
        const Span as = d_.span(a, n * 4), bs = d_.span(b, n * 4);
        const uint32_t gx = std::min<uint32_t>(ceil_div(n, kWG), d_.limits().maxComputeWorkGroupCount[0]);
        if (c) {
            const Span cs = d_.span(c, n * 4);
            ElementwisePush p{uint32_t(as.rel / 4), uint32_t(bs.rel / 4), uint32_t(cs.rel / 4), uint32_t(n), gx * kWG};
            run(shader, d_.pipeline(shader, 3, {kWG}), {{as, false}, {bs, false}, {cs, true}}, &p, sizeof p, gx);
        } else {
            ElementwisePush p{uint32_t(as.rel / 4), uint32_t(bs.rel / 4), uint32_t(n), gx * kWG, 0};
            run(shader, d_.pipeline(shader, 2, {kWG}), {{as, true}, {bs, false}}, &p, 4 * sizeof(uint32_t), gx);
        }
    }

    // Gated DeltaNet's element-wise ops (gdn_pointwise.comp): mode 0 silu, 1
    // sigmoid_mul, 2 the gate of gated_rmsnorm; width: the rows silu runs over.
    void gdn_pointwise(uint32_t mode, const float *a, const float *b, float *c, size_t n, size_t width) {
        if (!n) return;
        if (n > 0xffffffffu) fail(KVFIT_E_INTERNAL, "Vulkan: element-wise op over %zu values", n);
        const Span as = d_.span(a, n * 4), bs = d_.span(b ? b : a, n * 4), cs = d_.span(c, n * 4);
        const uint32_t gx = std::min<uint32_t>(ceil_div(n, kWG), d_.limits().maxComputeWorkGroupCount[0]);
        GdnPointwisePush p{uint32_t(as.rel / 4), uint32_t(bs.rel / 4), uint32_t(cs.rel / 4), uint32_t(n), gx * kWG, mode,
                           uint32_t(width)};
        run("gdn_pointwise", d_.pipeline(variant("gdn_pointwise"), 3, {kWG}), {{as, false}, {bs, false}, {cs, true}}, &p,
            sizeof p, gx);
    }

    void live() const {
        if (!broken_.empty()) fail(KVFIT_E_BACKEND, "the Vulkan stream failed earlier: %s", broken_.c_str());
    }

    // The batch being recorded, started if needed.
    Batch &begin() {
        Batch &bt = batch_[cur_];
        if (bt.recording) return bt;
        if (bt.pending) wait(bt);
        VkCommandBufferBeginInfo bi{};
        bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
        bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
        check(f_.vkBeginCommandBuffer(bt.cb, &bi), "vkBeginCommandBuffer");
        bt.recording = true;
        bt.n_cmds = 0;
        if (bt.queries) f_.vkCmdResetQueryPool(bt.cb, bt.queries, 0, 2 * kMaxCommands);
        barrier(bt);  // orders this batch after everything submitted before it
        bound_ = VK_NULL_HANDLE;
        return bt;
    }

    void barrier(Batch &bt) {
        VkMemoryBarrier mb{};
        mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
        mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
        mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                           VK_ACCESS_TRANSFER_WRITE_BIT;
        const VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
        f_.vkCmdPipelineBarrier(bt.cb, st, st, 0, 1, &mb, 0, nullptr, 0, nullptr);
        reads_.clear();
        writes_.clear();
    }

    // A barrier before this command if it depends on one recorded since the last barrier.
    void track(std::initializer_list<Arg> args) {
        auto overlaps = [](const std::vector<Range> &v, const Span &s) {
            for (const Range &r : v)
                if (r.buf == s.buf && r.begin < s.end && s.begin < r.end) return true;
            return false;
        };
        bool hazard = false;
        for (const Arg &a : args) hazard |= overlaps(writes_, a.s) || (a.write && overlaps(reads_, a.s));
        if (hazard) barrier(batch_[cur_]);
        for (const Arg &a : args) (a.write ? writes_ : reads_).push_back({a.s.buf, a.s.begin, a.s.end});
    }

    // Timestamps before (end = 0) and after (1) each command, when profiling.
    void stamp(Batch &bt, int end) {
        if (bt.queries)
            f_.vkCmdWriteTimestamp(bt.cb, end ? VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT : VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT,
                                   bt.queries, 2 * bt.n_cmds + uint32_t(end));
    }

    // After recording a command: its name for the profile, and submission of a full batch.
    void done(const char *name) {
        Batch &bt = batch_[cur_];
        if (bt.queries) bt.names.push_back(name);
        if (++bt.n_cmds >= kMaxCommands) submit();
    }

    void run(const char *name, const Pipeline &pl, std::initializer_list<Arg> args, const void *push, size_t push_bytes,
             uint32_t gx, uint32_t gy = 1, uint32_t gz = 1) {
        live();
        if (!gx || !gy || !gz) return;
        const VkDescriptorSet set = descriptors(pl, args);
        Batch &bt = begin();
        track(args);
        if (bound_ != pl.pipeline) {
            f_.vkCmdBindPipeline(bt.cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl.pipeline);
            bound_ = pl.pipeline;
        }
        f_.vkCmdBindDescriptorSets(bt.cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl.layout, 0, 1, &set, 0, nullptr);
        f_.vkCmdPushConstants(bt.cb, pl.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, uint32_t(push_bytes), push);
        stamp(bt, 0);
        f_.vkCmdDispatch(bt.cb, gx, gy, gz);
        stamp(bt, 1);
        done(name);
    }

    // Descriptor sets are immutable and cached by what they bind: a forward
    // pass binds the same buffers every step, so steady state writes none.
    VkDescriptorSet descriptors(const Pipeline &pl, std::initializer_list<Arg> args) {
        std::vector<uint64_t> key;
        key.reserve(1 + 3 * args.size());
        key.push_back(reinterpret_cast<uint64_t>(pl.set_layout));
        for (const Arg &a : args) {
            key.push_back(reinterpret_cast<uint64_t>(a.s.buf));
            key.push_back(a.s.desc_off);
            key.push_back(a.s.desc_range);
        }
        auto it = sets_.find(key);
        if (it != sets_.end()) return it->second;
        if (sets_.size() >= kMaxDescriptorSets) {
            // Something keeps binding new ranges: start over once nothing is in flight.
            drain();
            for (VkDescriptorPool dp : dpools_) f_.vkDestroyDescriptorPool(d_.handle(), dp, nullptr);
            dpools_.clear();
            sets_.clear();
        }
        if (dpools_.empty() || dpool_used_ == kSetsPerPool) {
            VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * kMaxBindings};
            VkDescriptorPoolCreateInfo ci{};
            ci.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
            ci.maxSets = kSetsPerPool;
            ci.poolSizeCount = 1;
            ci.pPoolSizes = &size;
            VkDescriptorPool dp;
            check(f_.vkCreateDescriptorPool(d_.handle(), &ci, nullptr, &dp), "vkCreateDescriptorPool");
            dpools_.push_back(dp);
            dpool_used_ = 0;
        }
        VkDescriptorSetAllocateInfo ai{};
        ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
        ai.descriptorPool = dpools_.back();
        ai.descriptorSetCount = 1;
        ai.pSetLayouts = &pl.set_layout;
        VkDescriptorSet set;
        check(f_.vkAllocateDescriptorSets(d_.handle(), &ai, &set), "vkAllocateDescriptorSets");
        dpool_used_++;
        VkDescriptorBufferInfo infos[kMaxBindings];
        VkWriteDescriptorSet writes[kMaxBindings];
        uint32_t i = 0;
        for (const Arg &a : args) {
            infos[i] = {a.s.buf, a.s.desc_off, a.s.desc_range};
            writes[i] = {};
            writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
            writes[i].dstSet = set;
            writes[i].dstBinding = i;
            writes[i].descriptorCount = 1;
            writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
            writes[i].pBufferInfo = &infos[i];
            i++;
        }
        f_.vkUpdateDescriptorSets(d_.handle(), i, writes, 0, nullptr);
        return sets_[key] = set;
    }

    // Ends and submits the batch being recorded; the next one records meanwhile.
    void submit() {
        Batch &bt = batch_[cur_];
        if (!bt.recording) return;
        bt.recording = false;
        if (!bt.reads.empty()) {
            VkMemoryBarrier mb{};
            mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
            mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
            mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
            f_.vkCmdPipelineBarrier(bt.cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0,
                                    nullptr, 0, nullptr);
        }
        VkResult r = f_.vkEndCommandBuffer(bt.cb);
        if (r == VK_SUCCESS) {
            VkSubmitInfo si{};
            si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
            si.commandBufferCount = 1;
            si.pCommandBuffers = &bt.cb;
            r = d_.submit(si, bt.fence);
        }
        if (r != VK_SUCCESS) {
            broken_ = "command submission failed";
            check(r, "vkQueueSubmit");
        }
        bt.pending = true;
        cur_ ^= 1;
    }

    void wait(Batch &bt) {
        const VkResult r = f_.vkWaitForFences(d_.handle(), 1, &bt.fence, VK_TRUE, UINT64_MAX);
        bt.pending = false;
        if (r != VK_SUCCESS) {
            broken_ = "waiting for the device failed (device lost?)";
            bt.reads.clear();
            bt.names.clear();
            check(r, "vkWaitForFences");
        }
        f_.vkResetFences(d_.handle(), 1, &bt.fence);
        for (const Readback &rb : bt.reads)
            std::memcpy(rb.dst, static_cast<const uint8_t *>(down_.mapped) + rb.off, rb.bytes);
        bt.reads.clear();
        if (bt.queries && !bt.names.empty()) {
            std::vector<uint64_t> ts(2 * bt.names.size());
            if (f_.vkGetQueryPoolResults(d_.handle(), bt.queries, 0, uint32_t(ts.size()), ts.size() * 8, ts.data(), 8,
                                         VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
                const double period = d_.limits().timestampPeriod;
                for (size_t i = 0; i < bt.names.size(); i++) {
                    auto &pr = profile_ns_[bt.names[i]];
                    pr.first += double(ts[2 * i + 1] - ts[2 * i]) * period;
                    pr.second++;
                }
            }
        }
        bt.names.clear();
    }

    // Submits what was recorded, waits for everything, and frees the staging buffers.
    void drain() {
        submit();
        // the older batch first, so read-backs land in program order
        for (int k = 0; k < 2; k++) {
            Batch &bt = batch_[cur_ ^ k];
            if (bt.pending) wait(bt);
        }
        up_used_ = down_used_ = 0;
    }

    void report_profile() {
        std::vector<std::pair<std::string, std::pair<double, uint64_t>>> v(profile_ns_.begin(), profile_ns_.end());
        std::sort(v.begin(), v.end(), [](const auto &a, const auto &b) { return a.second.first > b.second.first; });
        for (const auto &e : v)
            log(KVFIT_LOG_INFO, "Vulkan profile: %-10s %8llu calls %10.3f ms", e.first.c_str(),
                (unsigned long long)e.second.second, e.second.first * 1e-6);
    }

    void release() noexcept {
        if (d_.handle()) {
            for (Batch &bt : batch_)
                if (bt.pending) f_.vkWaitForFences(d_.handle(), 1, &bt.fence, VK_TRUE, UINT64_MAX);
        }
        for (Batch &bt : batch_) {
            if (bt.fence) f_.vkDestroyFence(d_.handle(), bt.fence, nullptr);
            if (bt.queries) f_.vkDestroyQueryPool(d_.handle(), bt.queries, nullptr);
            bt = Batch();
        }
        if (pool_) f_.vkDestroyCommandPool(d_.handle(), pool_, nullptr);  // frees the command buffers
        pool_ = VK_NULL_HANDLE;
        for (VkDescriptorPool dp : dpools_) f_.vkDestroyDescriptorPool(d_.handle(), dp, nullptr);
        dpools_.clear();
        for (auto &a : allocs_) {
            d_.unmap_address(a.second);
            d_.destroy(a.first);
        }
        allocs_.clear();
        d_.destroy(up_);
        d_.destroy(down_);
    }

    VulkanBackend &b_;
    Device &d_;
    const DeviceFns &f_;
    int max_tokens_;
    int64_t max_cols_;
    int max_kv_;
    bool profile_ = false;
    VkCommandPool pool_ = VK_NULL_HANDLE;
    Batch batch_[2];
    int cur_ = 0;
    VkPipeline bound_ = VK_NULL_HANDLE;
    std::vector<Range> reads_, writes_;  // since the last barrier
    Buffer up_, down_;
    size_t up_used_ = 0, down_used_ = 0;
    std::vector<std::pair<Buffer, void *>> allocs_;
    uint64_t allocated_ = 0;  // what alloc() obtained
    void *act_ = nullptr;
    void *part_ = nullptr;  // attention partials, allocated at the first split
    size_t part_bytes_ = 0;
    std::vector<VkDescriptorPool> dpools_;
    uint32_t dpool_used_ = 0;
    std::map<std::vector<uint64_t>, VkDescriptorSet> sets_;
    std::map<std::string, std::pair<double, uint64_t>> profile_ns_;
    std::string broken_;
};

std::unique_ptr<Stream> VulkanBackend::create_stream(int, int max_tokens, int64_t max_cols, int max_kv) {
    return std::make_unique<VulkanStream>(*this, max_tokens, max_cols, max_kv);
}

bool is_gpu(kvfit_device_type t) { return t == KVFIT_DEVICE_DISCRETE_GPU || t == KVFIT_DEVICE_INTEGRATED_GPU; }

}  // namespace
}  // namespace vk

std::vector<DeviceDesc> vulkan_devices() {
    std::vector<DeviceDesc> out;
    try {
        auto inst = vk::Instance::get();
        for (const vk::PhysicalDevice &pd : inst->devices()) {
            DeviceDesc d;
            d.backend = KVFIT_BACKEND_VULKAN;
            d.index = pd.index;
            d.type = pd.type;
            d.name = pd.name;
            d.memory = pd.memory;
            out.push_back(d);
        }
    } catch (const Error &e) {
        log(KVFIT_LOG_DEBUG, "no Vulkan devices: %s", e.what());
    }
    return out;
}

std::unique_ptr<Backend> create_vulkan_backend(int device, bool allow_cpu) {
    auto inst = vk::Instance::get();
    const auto &devs = inst->devices();
    if (devs.empty()) fail(KVFIT_E_BACKEND_UNAVAILABLE, "no Vulkan 1.1 device with a compute queue");
    const vk::PhysicalDevice *pick = nullptr;
    if (device >= 0) {
        if (size_t(device) >= devs.size())
            fail(KVFIT_E_BACKEND_UNAVAILABLE, "there is no Vulkan device %d (%zu found)", device, devs.size());
        pick = &devs[size_t(device)];
        if (!allow_cpu && !vk::is_gpu(pick->type))
            fail(KVFIT_E_BACKEND_UNAVAILABLE, "Vulkan device %d (%s) is not a GPU", device, pick->name.c_str());
    } else {
        // discrete, then integrated, then (if allowed) anything; the most memory among equals
        auto rank = [](kvfit_device_type t) {
            return t == KVFIT_DEVICE_DISCRETE_GPU ? 0 : t == KVFIT_DEVICE_INTEGRATED_GPU ? 1 : 2;
        };
        for (const vk::PhysicalDevice &pd : devs) {
            if (!allow_cpu && !vk::is_gpu(pd.type)) continue;
            if (!pick || rank(pd.type) < rank(pick->type) || (rank(pd.type) == rank(pick->type) && pd.memory > pick->memory))
                pick = &pd;
        }
        if (!pick) fail(KVFIT_E_BACKEND_UNAVAILABLE, "no Vulkan GPU (only CPU implementations)");
    }
    auto b = std::make_unique<vk::VulkanBackend>(inst, *pick);
    // Exact fma: the device's own where it is fused, else emulated through doubles.
    if (b->device().use_fp64() && !vk::env_flag("KVFIT_VULKAN_EMULATE_FMA")) {
        auto probe = b->create_stream(1, 1, 64, 1);
        b->device().set_fma_fused(static_cast<vk::VulkanStream &>(*probe).fma_is_fused());
    }
    log(KVFIT_LOG_INFO, "Vulkan backend on device %d: %s (subgroup operations %s, fp64 %s, fma %s)", pick->index,
        pick->name.c_str(), b->device().use_subgroup() ? "on" : "off", b->device().use_fp64() ? "on" : "off",
        b->device().fma_fused() ? "fused" : b->device().use_fp64() ? "emulated" : "as the device does it");
    return b;
}

uint64_t vulkan_validation_errors() { return vk::validation_errors(); }

}  // namespace kvfit
