// The pre-norm decoder several architectures share (see decoder.cpp); each
// architecture's file says which variations it takes.
#pragma once

#include <memory>

#include "model/arch.h"

namespace kvfit {

struct DecoderOptions {
    // llama's converter permutes Q/K for pairwise rotation; Qwen's files keep
    // the halves (NeoX).
    RopeMode rope_mode = RopeMode::Norm;
    bool qkv_bias = false;  // attn_{q,k,v}.bias added after the projections (Qwen2)
    bool qk_norm = false;   // attn_{q,k}_norm: per-head RMSNorm of q and k before RoPE (Qwen3)
};

std::unique_ptr<Architecture> create_decoder(const DecoderOptions &options);

}  // namespace kvfit
