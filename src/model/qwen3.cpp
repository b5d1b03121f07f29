// The qwen3 architecture (dense Qwen3): the pre-norm decoder with NeoX RoPE
// and a per-head RMSNorm of queries and keys before the rotation.
#include "model/decoder.h"

namespace kvfit {

std::unique_ptr<Architecture> create_qwen3() {
    DecoderOptions o;
    o.rope_mode = RopeMode::Neox;
    o.qk_norm = true;
    return create_decoder(o);
}

}  // namespace kvfit
