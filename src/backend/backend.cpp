#include "backend/backend.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <strings.h>

#include "common.h"

namespace kvfit {

namespace {

// $KVFIT_DEVICE: a device index for the chosen backend, or -1 if unset.
int device_from_env() {
    const char *env = std::getenv("KVFIT_DEVICE");
    if (!env || !*env) return -1;
    char *end = nullptr;
    errno = 0;
    const long v = std::strtol(env, &end, 10);
    if (errno || *end || v < 0 || v > 1 << 20) fail(KVFIT_E_ARG, "KVFIT_DEVICE='%s' is not a device index", env);
    return int(v);
}

#if defined(KVFIT_WITH_VULKAN)
// Whether a GPU driver could be present: hardware Vulkan drivers on Linux
// open a device node (a DRM render node, or NVIDIA's own). Without one only
// CPU implementations such as lavapipe can answer, which AUTO does not use,
// and probing them would map their whole compiler (about 50 MB resident)
// into the process for good, as Mesa's drivers are never unloaded.
bool gpu_device_node_present() {
    for (const char *path : {"/dev/dri/renderD128", "/dev/dri/renderD129", "/dev/nvidia0", "/dev/nvgpu",
                             "/dev/nvhost-ctrl-gpu", "/dev/kgsl-3d0", "/dev/mali0"})
        if (access(path, F_OK) == 0) return true;
    return false;
}
#endif

}  // namespace

void Stream::rope_keys(float *, int, int, int, uint64_t, const CacheAttention &) {
    fail(KVFIT_E_INTERNAL, "this backend does not store rotated keys");
}

void Stream::fold_add(const FoldArgs &, const uint8_t *, const uint8_t *, int, bool, size_t) {
    fail(KVFIT_E_UNSUPPORTED, "fold mode (kvfit_session_params.fold) is implemented on the CPU backend only");
}

void Stream::fold_read(const FoldArgs &, const float *, int, const float *, float *) {
    fail(KVFIT_E_UNSUPPORTED, "fold mode (kvfit_session_params.fold) is implemented on the CPU backend only");
}

void Stream::add_rows(float *y, const float *b, int n, size_t d) {
    for (int t = 0; t < n; t++) add(y + size_t(t) * d, b, d);
}

void Stream::zero(void *dst, size_t bytes) {
    // A static block: uploads may complete after this returns.
    static const std::vector<uint8_t> zeros(size_t(1) << 16);
    for (size_t o = 0; o < bytes; o += zeros.size())
        upload(static_cast<uint8_t *>(dst) + o, zeros.data(), std::min(zeros.size(), bytes - o));
}

void Stream::scale(float *, size_t, float) { fail(KVFIT_E_UNSUPPORTED, "this backend has no scale op yet"); }

void Stream::geglu(const float *, const float *, size_t, float *) {
    fail(KVFIT_E_UNSUPPORTED, "this backend has no GELU op yet");
}

const char *state_type_name(StateType t) {
    switch (t) {
        case StateType::F16: return "F16";
        case StateType::BF16: return "BF16";
        default: return "F32";
    }
}

// The ops of recurrent layers (RWKV-7, Gated DeltaNet): a backend that has
// not implemented one says which and where.
namespace {
[[noreturn]] void no_op(const Stream &s, const char *op) {
    fail(KVFIT_E_UNSUPPORTED, "the %s backend has no %s op yet (recurrent layers run on the CPU backend)", s.backend_name(), op);
}
}  // namespace

void Stream::norm_affine(const float *, const float *, const float *, float, int, int, int, float *) {
    no_op(*this, "norm_affine");
}
void Stream::token_shift_mix(const float *, float *, const float *, int, int, int, float *) {
    no_op(*this, "token_shift_mix");
}
void Stream::activate(Activation, float *, size_t) { no_op(*this, "activate"); }
void Stream::rwkv7_prepare(float *, const float *, float *, const float *, float *, const float *, const float *,
                           const float *, float *, const float *, const float *, int, int, int, float *, float *) {
    no_op(*this, "rwkv7_prepare");
}
void Stream::wkv7(const float *, const float *, const float *, const float *, const float *, const float *, int, int,
                  int, float *, float *) {
    no_op(*this, "wkv7");
}
void Stream::wkv7_typed(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                        int n, int n_head, int head_size, StateType type, void *state, float *out) {
    if (type != StateType::F32)
        fail(KVFIT_E_UNSUPPORTED, "the %s backend keeps recurrent states in F32 only, not %s", backend_name(),
             state_type_name(type));
    wkv7(r, w, k, v, a, b, n, n_head, head_size, static_cast<float *>(state), out);
}
void Stream::rwkv7_bonus_gate(float *, const float *, const float *, const float *, const float *, const float *, int,
                              int, int) {
    no_op(*this, "rwkv7_bonus_gate");
}

void Stream::ssm_conv(const float *, int, int, int, const float *, float *, float *) { no_op(*this, "ssm_conv"); }
void Stream::silu(const float *, size_t, float *) { no_op(*this, "silu"); }
void Stream::sigmoid_mul(float *, const float *, size_t) { no_op(*this, "sigmoid_mul"); }
void Stream::delta_gates(float *, float *, const float *, const float *, int, int) { no_op(*this, "delta_gates"); }
void Stream::l2norm(float *, int, int, int, size_t, float) { no_op(*this, "l2norm"); }
void Stream::gated_rmsnorm(const float *, const Weight &, const float *, float, int, float *) { no_op(*this, "gated_rmsnorm"); }
void Stream::delta_net(const DeltaNetArgs &) { no_op(*this, "delta_net"); }
void Stream::delta_net_chunked(const DeltaNetArgs &, int) { no_op(*this, "delta_net_chunked"); }

void Stream::copy_2d(void *dst, size_t dst_stride, const void *src, size_t src_stride, size_t rows, size_t width) {
    for (size_t r = 0; r < rows; r++)
        copy(static_cast<uint8_t *>(dst) + r * dst_stride, static_cast<const uint8_t *>(src) + r * src_stride, width);
}

#if !defined(KVFIT_WITH_VULKAN)
uint64_t vulkan_validation_errors() { return 0; }
#endif

const std::vector<DeviceDesc> &list_devices() {
    static const std::vector<DeviceDesc> devices = [] {
        std::vector<DeviceDesc> d(1);
        d[0].name = "CPU";
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        d[0].memory = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
#if defined(KVFIT_WITH_CUDA)
        for (DeviceDesc &c : cuda_devices()) d.push_back(std::move(c));
#endif
#if defined(KVFIT_WITH_VULKAN)
        for (DeviceDesc &v : vulkan_devices()) d.push_back(std::move(v));
#endif
        return d;
    }();
    return devices;
}

std::unique_ptr<Backend> create_backend(kvfit_backend_kind kind, int device) {
    if (kind == KVFIT_BACKEND_AUTO) {
        if (const char *env = std::getenv("KVFIT_BACKEND"); env && *env) {
            if (!strcasecmp(env, "cpu")) kind = KVFIT_BACKEND_CPU;
            else if (!strcasecmp(env, "cuda")) kind = KVFIT_BACKEND_CUDA;
            else if (!strcasecmp(env, "vulkan")) kind = KVFIT_BACKEND_VULKAN;
            else if (strcasecmp(env, "auto"))
                fail(KVFIT_E_ARG, "KVFIT_BACKEND='%s' is not one of auto, cpu, cuda, vulkan", env);
        }
    }
    if (device < 0) device = device_from_env();
    switch (kind) {
        case KVFIT_BACKEND_AUTO: {
            // GPU backends in order of preference; any failure falls through to the CPU.
#if defined(KVFIT_WITH_CUDA)
            if (!cuda_devices().empty()) {
                try {
                    return create_cuda_backend(device);
                } catch (const Error &e) {
                    log(KVFIT_LOG_WARN, "not using the CUDA backend: %s", e.what());
                }
            }
#endif
#if defined(KVFIT_WITH_VULKAN)
            bool gpu = false;
            if (gpu_device_node_present())
                for (const DeviceDesc &d : vulkan_devices())
                    gpu |= d.type == KVFIT_DEVICE_DISCRETE_GPU || d.type == KVFIT_DEVICE_INTEGRATED_GPU;
            else
                log(KVFIT_LOG_DEBUG, "no GPU device node: Vulkan not probed");
            if (gpu) {
                try {
                    return create_vulkan_backend(device, false);
                } catch (const Error &e) {
                    log(KVFIT_LOG_WARN, "not using the Vulkan backend: %s", e.what());
                }
            }
#endif
            return create_cpu_backend();
        }
        case KVFIT_BACKEND_CPU:
            if (device > 0) fail(KVFIT_E_BACKEND_UNAVAILABLE, "the CPU backend has one device (0), not %d", device);
            return create_cpu_backend();
        case KVFIT_BACKEND_CUDA:
#if defined(KVFIT_WITH_CUDA)
            return create_cuda_backend(device);
#else
            fail(KVFIT_E_BACKEND_UNAVAILABLE, "the CUDA backend is not part of this build");
#endif
        case KVFIT_BACKEND_VULKAN:
#if defined(KVFIT_WITH_VULKAN)
            return create_vulkan_backend(device, true);
#else
            fail(KVFIT_E_BACKEND_UNAVAILABLE, "the Vulkan backend is not part of this build");
#endif
        default: fail(KVFIT_E_ARG, "unknown backend kind %d", int(kind));
    }
}

}  // namespace kvfit
