#include "vk_context.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "alloc_hook.h"
#include "common.h"
#include "vk_shaders.h"

namespace kvfit::vk {

namespace {

const char *result_name(VkResult r) {
    switch (r) {
        case VK_NOT_READY: return "VK_NOT_READY";
        case VK_TIMEOUT: return "VK_TIMEOUT";
        case VK_INCOMPLETE: return "VK_INCOMPLETE";
        case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
        case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
        case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
        case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
        case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
        case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
        case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
        case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
        case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
        case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
        case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
        case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
        case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
        case VK_ERROR_INVALID_SHADER_NV: return "VK_ERROR_INVALID_SHADER_NV";
        default: return "VK_ERROR_UNKNOWN";
    }
}

std::atomic<uint64_t> g_validation_errors{0};

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                             VkDebugUtilsMessageTypeFlagsEXT, const VkDebugUtilsMessengerCallbackDataEXT *d,
                                             void *) {
    const char *msg = d && d->pMessage ? d->pMessage : "";
    if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        g_validation_errors++;
        log(KVFIT_LOG_ERROR, "Vulkan validation: %s", msg);
    } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
        log(KVFIT_LOG_WARN, "Vulkan validation: %s", msg);
    }
    return VK_FALSE;
}

bool env_flag(const char *name) {
    const char *v = std::getenv(name);
    return v && *v && std::strcmp(v, "0") != 0;
}

// The loader, opened once and kept: drivers it loads may register exit
// handlers, so it is never closed.
PFN_vkGetInstanceProcAddr open_loader() {
    static PFN_vkGetInstanceProcAddr gipa = [] {
        void *lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!lib) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
        return lib ? reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr")) : nullptr;
    }();
    if (!gipa) fail(KVFIT_E_BACKEND_UNAVAILABLE, "the Vulkan loader (libvulkan.so.1) is not installed");
    return gipa;
}

kvfit_device_type device_type(VkPhysicalDeviceType t) {
    switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return KVFIT_DEVICE_INTEGRATED_GPU;
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return KVFIT_DEVICE_DISCRETE_GPU;
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return KVFIT_DEVICE_VIRTUAL_GPU;
        case VK_PHYSICAL_DEVICE_TYPE_CPU: return KVFIT_DEVICE_CPU;
        default: return KVFIT_DEVICE_OTHER;
    }
}

std::mutex g_instance_mutex;
std::weak_ptr<Instance> g_instance;

// Addresses: (entry index + 1) << 40 | byte offset, so every allocation can
// span 1 TiB and no address is null.
constexpr int kAddrShift = 40;
constexpr uint64_t kAddrMask = (uint64_t(1) << kAddrShift) - 1;
constexpr size_t kMaxEntries = size_t(1) << 23;

}  // namespace

void check(VkResult r, const char *what) {
    if (r == VK_SUCCESS) return;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
        fail(KVFIT_E_NOMEM, "Vulkan: %s failed: %s", what, result_name(r));
    fail(KVFIT_E_BACKEND, "Vulkan: %s failed: %s", what, result_name(r));
}

uint64_t validation_errors() { return g_validation_errors.load(); }

// ---------------------------------------------------------------------------
// Instance

std::shared_ptr<Instance> Instance::get() {
    std::lock_guard<std::mutex> lock(g_instance_mutex);
    if (auto inst = g_instance.lock()) return inst;
    std::shared_ptr<Instance> inst(new Instance());
    inst->create();
    g_instance = inst;
    return inst;
}

void Instance::create() {
    fn_.vkGetInstanceProcAddr = open_loader();
#define KVFIT_VK_LOAD(name) fn_.name = reinterpret_cast<PFN_##name>(fn_.vkGetInstanceProcAddr(nullptr, #name));
    KVFIT_VK_GLOBAL_FNS(KVFIT_VK_LOAD)
#undef KVFIT_VK_LOAD
    uint32_t version = VK_API_VERSION_1_0;
    if (!fn_.vkCreateInstance || !fn_.vkEnumerateInstanceVersion ||
        fn_.vkEnumerateInstanceVersion(&version) != VK_SUCCESS || version < VK_API_VERSION_1_1)
        fail(KVFIT_E_BACKEND_UNAVAILABLE, "the Vulkan loader does not support Vulkan 1.1");

    std::vector<const char *> layers, exts;
    if (env_flag("KVFIT_VULKAN_VALIDATION")) {
        uint32_t n = 0;
        fn_.vkEnumerateInstanceLayerProperties(&n, nullptr);
        std::vector<VkLayerProperties> lp(n);
        fn_.vkEnumerateInstanceLayerProperties(&n, lp.data());
        bool has_layer = false;
        for (const VkLayerProperties &l : lp) has_layer |= !std::strcmp(l.layerName, "VK_LAYER_KHRONOS_validation");
        uint32_t ne = 0;
        fn_.vkEnumerateInstanceExtensionProperties(nullptr, &ne, nullptr);
        std::vector<VkExtensionProperties> ep(ne);
        fn_.vkEnumerateInstanceExtensionProperties(nullptr, &ne, ep.data());
        bool has_utils = false;
        for (const VkExtensionProperties &e : ep) has_utils |= !std::strcmp(e.extensionName, VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
        if (!has_layer || !has_utils) {
            log(KVFIT_LOG_WARN, "KVFIT_VULKAN_VALIDATION is set but VK_LAYER_KHRONOS_validation%s is not installed",
                has_utils ? "" : " (or VK_EXT_debug_utils)");
        } else {
            layers.push_back("VK_LAYER_KHRONOS_validation");
            exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
            validation_ = true;
        }
    }
    VkDebugUtilsMessengerCreateInfoEXT mi{};
    mi.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT;
    mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
    mi.pfnUserCallback = on_validation;

    VkApplicationInfo app{};
    app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
    app.pApplicationName = "kvfit";
    app.pEngineName = "kvfit";
    app.apiVersion = VK_API_VERSION_1_1;
    VkInstanceCreateInfo ci{};
    ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
    ci.pNext = validation_ ? &mi : nullptr;  // also reports problems in instance creation itself
    ci.pApplicationInfo = &app;
    ci.enabledLayerCount = uint32_t(layers.size());
    ci.ppEnabledLayerNames = layers.data();
    ci.enabledExtensionCount = uint32_t(exts.size());
    ci.ppEnabledExtensionNames = exts.data();
    VkResult r = fn_.vkCreateInstance(&ci, nullptr, &inst_);
    if (r != VK_SUCCESS) fail(KVFIT_E_BACKEND_UNAVAILABLE, "Vulkan: vkCreateInstance failed: %s", result_name(r));

#define KVFIT_VK_LOAD(name) fn_.name = reinterpret_cast<PFN_##name>(fn_.vkGetInstanceProcAddr(inst_, #name));
    KVFIT_VK_INSTANCE_FNS(KVFIT_VK_LOAD)
#undef KVFIT_VK_LOAD
    if (validation_ && fn_.vkCreateDebugUtilsMessengerEXT)
        fn_.vkCreateDebugUtilsMessengerEXT(inst_, &mi, nullptr, &messenger_);

    uint32_t n = 0;
    fn_.vkEnumeratePhysicalDevices(inst_, &n, nullptr);
    std::vector<VkPhysicalDevice> pds(n);
    if (n) fn_.vkEnumeratePhysicalDevices(inst_, &n, pds.data());
    for (VkPhysicalDevice h : pds) {
        PhysicalDevice d;
        d.handle = h;
        fn_.vkGetPhysicalDeviceProperties(h, &d.props);
        if (d.props.apiVersion < VK_API_VERSION_1_1) continue;  // subgroup queries and SPIR-V 1.3 need 1.1
        d.subgroup.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
        VkPhysicalDeviceProperties2 p2{};
        p2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
        p2.pNext = &d.subgroup;
        fn_.vkGetPhysicalDeviceProperties2(h, &p2);
        VkPhysicalDeviceFeatures f{};
        fn_.vkGetPhysicalDeviceFeatures(h, &f);
        d.float64 = f.shaderFloat64;
        fn_.vkGetPhysicalDeviceMemoryProperties(h, &d.mem);
        for (uint32_t i = 0; i < d.mem.memoryHeapCount; i++)
            if (d.mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) d.memory += d.mem.memoryHeaps[i].size;
        uint32_t nq = 0;
        fn_.vkGetPhysicalDeviceQueueFamilyProperties(h, &nq, nullptr);
        std::vector<VkQueueFamilyProperties> qf(nq);
        fn_.vkGetPhysicalDeviceQueueFamilyProperties(h, &nq, qf.data());
        int family = -1;
        for (uint32_t i = 0; i < nq; i++) {
            if (!(qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || qf[i].queueCount == 0) continue;
            // a compute-only family first: it does not share the GPU with graphics work
            if (family < 0 || !(qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) family = int(i);
        }
        if (family < 0) continue;
        d.family = uint32_t(family);
        d.timestamp_bits = d.props.limits.timestampComputeAndGraphics ? qf[size_t(family)].timestampValidBits : 0;
        d.name = d.props.deviceName;
        d.type = device_type(d.props.deviceType);
        d.index = int(devices_.size());
        devices_.push_back(d);
    }
}

Instance::~Instance() {
    if (!inst_) return;
    if (messenger_ && fn_.vkDestroyDebugUtilsMessengerEXT) fn_.vkDestroyDebugUtilsMessengerEXT(inst_, messenger_, nullptr);
    fn_.vkDestroyInstance(inst_, nullptr);
}

// ---------------------------------------------------------------------------
// Device

Device::Device(std::shared_ptr<Instance> inst, const PhysicalDevice &pd) : inst_(std::move(inst)), pd_(pd) {
    const float prio = 1.0f;
    VkDeviceQueueCreateInfo qi{};
    qi.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
    qi.queueFamilyIndex = pd.family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    VkPhysicalDeviceFeatures feats{};
    use_fp64_ = pd.float64 && !env_flag("KVFIT_VULKAN_NO_FP64");
    feats.shaderFloat64 = use_fp64_;
    VkDeviceCreateInfo ci{};
    ci.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
    ci.queueCreateInfoCount = 1;
    ci.pQueueCreateInfos = &qi;
    ci.pEnabledFeatures = &feats;
    const InstanceFns &ifn = inst_->fn();
    check(ifn.vkCreateDevice(pd.handle, &ci, nullptr, &dev_), "vkCreateDevice");
#define KVFIT_VK_LOAD(name) fn_.name = reinterpret_cast<PFN_##name>(ifn.vkGetDeviceProcAddr(dev_, #name));
    KVFIT_VK_DEVICE_FNS(KVFIT_VK_LOAD)
#undef KVFIT_VK_LOAD
    fn_.vkGetDeviceQueue(dev_, pd.family, 0, &queue_);

    const VkSubgroupFeatureFlags need = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    // Workgroups of 64 must hold whole subgroups.
    use_subgroup_ = (pd.subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                    (pd.subgroup.supportedOperations & need) == need && pd.subgroup.subgroupSize >= 4 &&
                    pd.subgroup.subgroupSize <= 64 && !env_flag("KVFIT_VULKAN_NO_SUBGROUP");
    // KVFIT_VULKAN_NO_UMA makes such a device load weights through staging
    // as a discrete GPU does (so tests on lavapipe reach that path).
    uma_ = (pd.type == KVFIT_DEVICE_INTEGRATED_GPU || pd.type == KVFIT_DEVICE_CPU) && !env_flag("KVFIT_VULKAN_NO_UMA");
    offset_align_ = std::max<VkDeviceSize>(16, pd.props.limits.minStorageBufferOffsetAlignment);
    max_range_ = std::min<VkDeviceSize>(pd.props.limits.maxStorageBufferRange, VkDeviceSize(1) << 31);
    // KVFIT_VULKAN_MAX_RANGE caps it further, so tests reach the path that
    // binds large weights in pieces on devices with a large range.
    if (const char *cap = std::getenv("KVFIT_VULKAN_MAX_RANGE"); cap && std::atoll(cap) > 0)
        max_range_ = std::min<VkDeviceSize>(max_range_, VkDeviceSize(std::atoll(cap)));
    max_range_ &= ~VkDeviceSize(255);
    const VkPhysicalDeviceLimits &l = pd.props.limits;
    if (l.maxPerStageDescriptorStorageBuffers < 10 || l.maxComputeWorkGroupInvocations < 128 ||
        l.maxComputeSharedMemorySize < 16384 || max_range_ < 4 * offset_align_) {
        fn_.vkDestroyDevice(dev_, nullptr);
        dev_ = VK_NULL_HANDLE;
        fail(KVFIT_E_UNSUPPORTED, "Vulkan device %s lacks what kvfit's shaders need (10 storage buffers per stage, "
             "128 invocations and 16 KiB of shared memory per workgroup)", pd.name.c_str());
    }
}

Device::~Device() {
    if (!dev_) return;
    fn_.vkDeviceWaitIdle(dev_);
    for (auto &p : pipelines_) fn_.vkDestroyPipeline(dev_, p.second->pipeline, nullptr);
    for (auto &m : modules_) fn_.vkDestroyShaderModule(dev_, m.second, nullptr);
    for (auto &l : layouts_) {
        fn_.vkDestroyPipelineLayout(dev_, l.second.second, nullptr);
        fn_.vkDestroyDescriptorSetLayout(dev_, l.second.first, nullptr);
    }
    fn_.vkDestroyDevice(dev_, nullptr);
}

uint32_t Device::memory_type(uint32_t bits, MemKind kind) const {
    const VkMemoryPropertyFlags HV = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    std::vector<VkMemoryPropertyFlags> prefs;
    switch (kind) {
        case MemKind::Device: prefs = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0}; break;
        case MemKind::DeviceMapped: prefs = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | HV, HV}; break;
        case MemKind::Upload: prefs = {HV}; break;
        case MemKind::Readback: prefs = {HV | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, HV}; break;
    }
    for (VkMemoryPropertyFlags want : prefs)
        for (uint32_t i = 0; i < pd_.mem.memoryTypeCount; i++)
            if ((bits & (1u << i)) && (pd_.mem.memoryTypes[i].propertyFlags & want) == want) return i;
    fail(KVFIT_E_BACKEND, "Vulkan: no suitable memory type on %s", pd_.name.c_str());
}

Buffer Device::create_buffer(VkDeviceSize size, MemKind kind) {
    Buffer b;
    b.size = std::max<VkDeviceSize>((size + 15) & ~VkDeviceSize(15), 16);
    VkBufferCreateInfo bi{};
    bi.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
    bi.size = b.size;
    bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    try {
        check_alloc(size_t(b.size), "a Vulkan buffer");
        check(fn_.vkCreateBuffer(dev_, &bi, nullptr, &b.buf), "vkCreateBuffer");
        VkMemoryRequirements req;
        fn_.vkGetBufferMemoryRequirements(dev_, b.buf, &req);
        VkMemoryAllocateInfo ai{};
        ai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
        ai.allocationSize = req.size;
        ai.memoryTypeIndex = memory_type(req.memoryTypeBits, kind);
        VkResult r = fn_.vkAllocateMemory(dev_, &ai, nullptr, &b.mem);
        if (r != VK_SUCCESS)
            fail(r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY ? KVFIT_E_NOMEM : KVFIT_E_BACKEND,
                 "Vulkan: cannot allocate %llu bytes on %s: %s", (unsigned long long)req.size, pd_.name.c_str(),
                 result_name(r));
        b.allocated = req.size;
        check(fn_.vkBindBufferMemory(dev_, b.buf, b.mem, 0), "vkBindBufferMemory");
        if (kind != MemKind::Device) check(fn_.vkMapMemory(dev_, b.mem, 0, VK_WHOLE_SIZE, 0, &b.mapped), "vkMapMemory");
    } catch (...) {
        destroy(b);
        throw;
    }
    return b;
}

void Device::destroy(Buffer &b) {
    if (b.buf) fn_.vkDestroyBuffer(dev_, b.buf, nullptr);
    if (b.mem) fn_.vkFreeMemory(dev_, b.mem, nullptr);  // unmaps too
    b = Buffer();
}

void *Device::map_address(VkBuffer buf, VkDeviceSize offset, size_t size) {
    std::unique_lock<std::shared_mutex> lock(reg_mutex_);
    uint32_t idx;
    if (!free_entries_.empty()) {
        idx = free_entries_.back();
        free_entries_.pop_back();
    } else {
        if (entries_.size() >= kMaxEntries) fail(KVFIT_E_NOMEM, "Vulkan: too many device allocations");
        idx = uint32_t(entries_.size());
        entries_.emplace_back();
    }
    entries_[idx] = Entry{buf, offset, size};
    return reinterpret_cast<void *>((uint64_t(idx) + 1) << kAddrShift);
}

void Device::unmap_address(void *addr) {
    std::unique_lock<std::shared_mutex> lock(reg_mutex_);
    const uint64_t idx = (reinterpret_cast<uint64_t>(addr) >> kAddrShift) - 1;
    if (idx < entries_.size()) {
        entries_[idx] = Entry();
        free_entries_.push_back(uint32_t(idx));
    }
}

const Device::Entry &Device::entry_of(const void *p, uint64_t *rel) const {
    const uint64_t a = reinterpret_cast<uint64_t>(p);
    const uint64_t idx = (a >> kAddrShift) - 1;
    if ((a >> kAddrShift) == 0 || idx >= entries_.size() || !entries_[idx].buf)
        fail(KVFIT_E_INTERNAL, "Vulkan: %p is not a device address of this backend", p);
    *rel = a & kAddrMask;
    return entries_[idx];
}

Span Device::span(const void *p, size_t bytes, bool bind) const {
    std::shared_lock<std::shared_mutex> lock(reg_mutex_);
    uint64_t rel;
    const Entry &e = entry_of(p, &rel);
    if (rel + bytes > e.size)
        fail(KVFIT_E_INTERNAL, "Vulkan: %zu bytes at offset %llu run past an allocation of %zu bytes", bytes,
             (unsigned long long)rel, e.size);
    Span s;
    s.buf = e.buf;
    s.begin = e.offset + rel;
    s.end = s.begin + bytes;
    if (e.size <= max_range_ || !bind) {
        // the whole allocation: one descriptor however the pointer moves inside it
        s.desc_off = e.offset;
        s.desc_range = e.size;
    } else {
        s.desc_off = s.begin & ~(offset_align_ - 1);
        s.desc_range = std::min<VkDeviceSize>(max_range_, e.offset + e.size - s.desc_off);
        if (s.end > s.desc_off + s.desc_range)
            fail(KVFIT_E_UNSUPPORTED, "Vulkan: an operand of %zu bytes exceeds this device's storage-buffer range", bytes);
    }
    s.rel = s.begin - s.desc_off;
    return s;
}

size_t Device::bytes_after(const void *p) const {
    std::shared_lock<std::shared_mutex> lock(reg_mutex_);
    uint64_t rel;
    const Entry &e = entry_of(p, &rel);
    return rel <= e.size ? e.size - rel : 0;
}

// A copy of a SPIR-V module in which every GLSL.std.450 Fma result carries
// NoContraction. glslang decorates the arithmetic of `precise` expressions
// but not the fma() calls in them, and a driver may then split an fma into a
// multiply and an add (Mesa does where the CPU lacks a fast fma, and lavapipe
// does regardless), which changes its rounding: the shaders that reproduce
// the CPU's arithmetic rely on fma being fused.
static std::vector<uint32_t> fma_not_contractible(const uint32_t *w, size_t n) {
    constexpr uint32_t kExtInstImport = 11, kExtInst = 12, kDecorate = 71, kNoContraction = 42, kFma = 50;
    std::vector<uint32_t> out(w, w + n);
    if (n < 5) return out;
    uint32_t glsl = 0;
    size_t first_decoration = 0, first_function = 0;
    std::vector<uint32_t> ids;
    for (size_t i = 5; i < n;) {
        const uint32_t op = w[i] & 0xffffu, len = w[i] >> 16;
        if (len == 0 || i + len > n) return out;  // malformed: leave it to the driver's validation
        if (op == kExtInstImport && len >= 3 && std::strncmp(reinterpret_cast<const char *>(w + i + 2), "GLSL.std.450", (len - 2) * 4) == 0)
            glsl = w[i + 1];
        if (op == kDecorate && !first_decoration) first_decoration = i;
        if (op == 54 && !first_function) first_function = i;  // OpFunction
        if (op == kExtInst && len >= 5 && w[i + 3] == glsl && w[i + 4] == kFma) ids.push_back(w[i + 2]);
        i += len;
    }
    if (ids.empty() || !first_decoration || first_decoration > first_function) return out;
    std::vector<uint32_t> add;
    for (uint32_t id : ids) add.insert(add.end(), {(3u << 16) | kDecorate, id, kNoContraction});
    out.insert(out.begin() + std::ptrdiff_t(first_decoration), add.begin(), add.end());
    return out;
}

const Pipeline &Device::pipeline(const std::string &shader, uint32_t n_bindings, const std::vector<uint32_t> &spec) {
    std::lock_guard<std::mutex> lock(pipe_mutex_);
    std::vector<uint32_t> keyspec = spec;
    keyspec.push_back(fma_fused_);
    auto key = std::make_pair(shader, keyspec);
    auto it = pipelines_.find(key);
    if (it != pipelines_.end()) return *it->second;

    auto &lay = layouts_[n_bindings];
    if (!lay.first) {
        std::vector<VkDescriptorSetLayoutBinding> b(n_bindings);
        for (uint32_t i = 0; i < n_bindings; i++) {
            b[i].binding = i;
            b[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
            b[i].descriptorCount = 1;
            b[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
        }
        VkDescriptorSetLayoutCreateInfo li{};
        li.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
        li.bindingCount = n_bindings;
        li.pBindings = b.data();
        check(fn_.vkCreateDescriptorSetLayout(dev_, &li, nullptr, &lay.first), "vkCreateDescriptorSetLayout");
        VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, kPushBytes};
        VkPipelineLayoutCreateInfo pi{};
        pi.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
        pi.setLayoutCount = 1;
        pi.pSetLayouts = &lay.first;
        pi.pushConstantRangeCount = 1;
        pi.pPushConstantRanges = &pr;
        check(fn_.vkCreatePipelineLayout(dev_, &pi, nullptr, &lay.second), "vkCreatePipelineLayout");
    }
    VkShaderModule &mod = modules_[shader];
    if (!mod) {
        const ShaderCode *code = kShaders;
        while (code->name && shader != code->name) code++;
        if (!code->name) fail(KVFIT_E_INTERNAL, "Vulkan: no shader named %s", shader.c_str());
        const std::vector<uint32_t> words = fma_not_contractible(code->words, code->n_words);
        VkShaderModuleCreateInfo mi{};
        mi.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
        mi.codeSize = words.size() * 4;
        mi.pCode = words.data();
        check(fn_.vkCreateShaderModule(dev_, &mi, nullptr, &mod), "vkCreateShaderModule");
    }
    // the shader's constants 0, 1, ..., then FMA_FUSED (id 30, common.glsl)
    std::vector<uint32_t> values = spec;
    values.push_back(fma_fused_ ? VK_TRUE : VK_FALSE);
    std::vector<VkSpecializationMapEntry> entries(values.size());
    for (size_t i = 0; i < spec.size(); i++) entries[i] = {uint32_t(i), uint32_t(i * 4), 4};
    entries.back() = {30, uint32_t(spec.size() * 4), 4};
    VkSpecializationInfo si{};
    si.mapEntryCount = uint32_t(entries.size());
    si.pMapEntries = entries.data();
    si.dataSize = values.size() * 4;
    si.pData = values.data();
    VkComputePipelineCreateInfo ci{};
    ci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = mod;
    ci.stage.pName = "main";
    ci.stage.pSpecializationInfo = &si;
    ci.layout = lay.second;
    auto pl = std::make_unique<Pipeline>();
    check(fn_.vkCreateComputePipelines(dev_, VK_NULL_HANDLE, 1, &ci, nullptr, &pl->pipeline), "vkCreateComputePipelines");
    pl->layout = lay.second;
    pl->set_layout = lay.first;
    pl->n_bindings = n_bindings;
    return *(pipelines_[key] = std::move(pl));
}

VkResult Device::submit(const VkSubmitInfo &info, VkFence fence) {
    std::lock_guard<std::mutex> lock(queue_mutex_);
    return fn_.vkQueueSubmit(queue_, 1, &info, fence);
}

}  // namespace kvfit::vk
