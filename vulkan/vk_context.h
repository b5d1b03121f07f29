// The Vulkan plumbing under the backend: the loader opened at run time, the
// process-wide instance and its device list, and one logical device per
// backend with its memory, the registry that turns (buffer, offset) pairs
// into the opaque device addresses the Backend interface passes around, and
// the compute pipelines.
#pragma once

#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "kvfit.h"

namespace kvfit::vk {

// Every Vulkan function kvfit calls, loaded through vkGetInstanceProcAddr /
// vkGetDeviceProcAddr (the library links no Vulkan symbol).
#define KVFIT_VK_GLOBAL_FNS(X) \
    X(vkCreateInstance) X(vkEnumerateInstanceVersion) X(vkEnumerateInstanceLayerProperties) \
    X(vkEnumerateInstanceExtensionProperties)
#define KVFIT_VK_INSTANCE_FNS(X)                                                                                    \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)                             \
    X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures) X(vkGetPhysicalDeviceMemoryProperties)         \
    X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkCreateDevice) X(vkGetDeviceProcAddr)                            \
    X(vkCreateDebugUtilsMessengerEXT) X(vkDestroyDebugUtilsMessengerEXT)
#define KVFIT_VK_DEVICE_FNS(X)                                                                                      \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements)    \
    X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) X(vkMapMemory) X(vkUnmapMemory)                        \
    X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) \
    X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline)           \
    X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets)      \
    X(vkCreateCommandPool) X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) X(vkBeginCommandBuffer)              \
    X(vkEndCommandBuffer) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants) X(vkCmdDispatch)   \
    X(vkCmdCopyBuffer) X(vkCmdPipelineBarrier) X(vkCmdWriteTimestamp) X(vkCmdResetQueryPool) X(vkCreateQueryPool)  \
    X(vkDestroyQueryPool) X(vkGetQueryPoolResults) X(vkCreateFence) X(vkDestroyFence) X(vkResetFences)             \
    X(vkWaitForFences) X(vkQueueSubmit) X(vkDeviceWaitIdle)

#define KVFIT_VK_DECLARE(name) PFN_##name name = nullptr;
struct InstanceFns {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
    KVFIT_VK_GLOBAL_FNS(KVFIT_VK_DECLARE)
    KVFIT_VK_INSTANCE_FNS(KVFIT_VK_DECLARE)
};
struct DeviceFns {
    KVFIT_VK_DEVICE_FNS(KVFIT_VK_DECLARE)
};
#undef KVFIT_VK_DECLARE

// Throws kvfit::Error for a failed call: KVFIT_E_NOMEM when the device or
// host ran out of memory, KVFIT_E_BACKEND otherwise.
void check(VkResult r, const char *what);

struct PhysicalDevice {
    VkPhysicalDevice handle = VK_NULL_HANDLE;
    int index = 0;  // among the usable devices, as listed to the API
    std::string name;
    kvfit_device_type type = KVFIT_DEVICE_OTHER;
    uint64_t memory = 0;  // bytes of device-local heaps
    VkPhysicalDeviceProperties props{};
    VkPhysicalDeviceSubgroupProperties subgroup{};
    VkPhysicalDeviceMemoryProperties mem{};
    bool float64 = false;
    uint32_t family = 0;          // a queue family with compute
    uint32_t timestamp_bits = 0;  // of that family; 0 = no timestamps
};

// The process-wide instance, shared by every backend and released with the
// last of them. KVFIT_VULKAN_VALIDATION=1 in the environment enables
// VK_LAYER_KHRONOS_validation; its messages go to the log (errors at
// KVFIT_LOG_ERROR) and are counted.
class Instance {
public:
    // Throws KVFIT_E_BACKEND_UNAVAILABLE without a loader or a usable device.
    static std::shared_ptr<Instance> get();
    ~Instance();
    Instance(const Instance &) = delete;
    Instance &operator=(const Instance &) = delete;

    const InstanceFns &fn() const { return fn_; }
    VkInstance handle() const { return inst_; }
    bool validation() const { return validation_; }
    // Devices that can run kvfit (Vulkan 1.1, a compute queue), in the driver's order.
    const std::vector<PhysicalDevice> &devices() const { return devices_; }

private:
    Instance() = default;
    void create();
    InstanceFns fn_;
    VkInstance inst_ = VK_NULL_HANDLE;
    VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
    bool validation_ = false;
    std::vector<PhysicalDevice> devices_;
};

// Errors the validation layer reported since the process started.
uint64_t validation_errors();

// A buffer with its own memory.
struct Buffer {
    VkBuffer buf = VK_NULL_HANDLE;
    VkDeviceMemory mem = VK_NULL_HANDLE;
    VkDeviceSize size = 0;
    VkDeviceSize allocated = 0;  // bytes of device memory behind it (the driver's requirement)
    void *mapped = nullptr;  // host-visible buffers stay mapped
};

enum class MemKind { Device, DeviceMapped, Upload, Readback };

// The part of a buffer one shader argument sees: a descriptor (buffer,
// offset, range) and where the argument starts inside it (rel bytes).
struct Span {
    VkBuffer buf = VK_NULL_HANDLE;
    VkDeviceSize desc_off = 0, desc_range = 0;
    VkDeviceSize rel = 0;    // argument start, relative to desc_off
    VkDeviceSize begin = 0;  // argument bytes [begin, end) in the buffer (hazard tracking)
    VkDeviceSize end = 0;
};

struct Pipeline {
    VkPipeline pipeline = VK_NULL_HANDLE;
    VkPipelineLayout layout = VK_NULL_HANDLE;
    VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
    uint32_t n_bindings = 0;
};

constexpr uint32_t kPushBytes = 128;  // the push-constant block every pipeline declares (the guaranteed minimum)

// One logical device: what a backend and its streams share. Thread-safe.
class Device {
public:
    Device(std::shared_ptr<Instance> inst, const PhysicalDevice &pd);
    ~Device();
    Device(const Device &) = delete;
    Device &operator=(const Device &) = delete;

    const DeviceFns &fn() const { return fn_; }
    VkDevice handle() const { return dev_; }
    const PhysicalDevice &physical() const { return pd_; }
    const VkPhysicalDeviceLimits &limits() const { return pd_.props.limits; }
    bool use_subgroup() const { return use_subgroup_; }
    bool use_fp64() const { return use_fp64_; }
    // Whether the shaders' fma() rounds once on this device (set once, before
    // the pipelines that use it; they see it as specialization constant 30).
    bool fma_fused() const { return fma_fused_; }
    void set_fma_fused(bool fused) { fma_fused_ = fused; }
    bool unified_memory() const { return uma_; }
    uint32_t subgroup_size() const { return pd_.subgroup.subgroupSize; }
    VkDeviceSize max_range() const { return max_range_; }
    VkDeviceSize offset_align() const { return offset_align_; }

    Buffer create_buffer(VkDeviceSize size, MemKind kind);
    void destroy(Buffer &b);

    // Opaque device addresses: bytes [offset, offset + size) of buf get an
    // address whose arithmetic works like a pointer's within that range.
    void *map_address(VkBuffer buf, VkDeviceSize offset, size_t size);
    void unmap_address(void *addr);
    // The span of `bytes` bytes at address p (throws KVFIT_E_INTERNAL for an
    // address that is not the device's or a range past its allocation). Only
    // a span bound to a shader (bind) must fit the device's binding range.
    Span span(const void *p, size_t bytes, bool bind = true) const;
    // Bytes from p to the end of its allocation.
    size_t bytes_after(const void *p) const;

    // The pipeline of a shader variant with these specialization constants
    // (ids 0, 1, ...; 0 is the workgroup size); created on first use.
    const Pipeline &pipeline(const std::string &shader, uint32_t n_bindings, const std::vector<uint32_t> &spec);

    // Queue submission is serialised across the streams sharing the queue.
    VkResult submit(const VkSubmitInfo &info, VkFence fence);
    VkQueue queue() const { return queue_; }

private:
    struct Entry {
        VkBuffer buf = VK_NULL_HANDLE;
        VkDeviceSize offset = 0;
        size_t size = 0;
    };
    const Entry &entry_of(const void *p, uint64_t *rel) const;
    uint32_t memory_type(uint32_t bits, MemKind kind) const;

    std::shared_ptr<Instance> inst_;
    const PhysicalDevice &pd_;
    DeviceFns fn_;
    VkDevice dev_ = VK_NULL_HANDLE;
    VkQueue queue_ = VK_NULL_HANDLE;
    std::mutex queue_mutex_;
    bool use_subgroup_ = false, use_fp64_ = false, uma_ = false, fma_fused_ = false;
    VkDeviceSize max_range_ = 0, offset_align_ = 16;

    mutable std::shared_mutex reg_mutex_;
    std::vector<Entry> entries_;
    std::vector<uint32_t> free_entries_;

    std::mutex pipe_mutex_;
    std::map<uint32_t, std::pair<VkDescriptorSetLayout, VkPipelineLayout>> layouts_;
    std::map<std::string, VkShaderModule> modules_;
    std::map<std::pair<std::string, std::vector<uint32_t>>, std::unique_ptr<Pipeline>> pipelines_;
};

}  // namespace kvfit::vk
