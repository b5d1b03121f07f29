// The qwen2 architecture (Qwen2, Qwen2.5): the pre-norm decoder with NeoX RoPE
// and biases on the query, key and value projections.
#include "model/decoder.h"

namespace kvfit {

std::unique_ptr<Architecture> create_qwen2() {
    DecoderOptions o;
    o.rope_mode = RopeMode::Neox;
    o.qkv_bias = true;
    return create_decoder(o);
}

}  // namespace kvfit
