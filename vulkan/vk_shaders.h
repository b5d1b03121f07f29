// SPIR-V of the compute shaders, embedded at build time (vulkan/embed_spirv.cmake).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvfit::vk {

struct ShaderCode {
    const char *name;  // variant name, e.g. "matmul_q_sg"
    const uint32_t *words;
    size_t n_words;
};

// Every variant, ended by an entry whose name is null.
extern const ShaderCode kShaders[];

}  // namespace kvfit::vk
