// The llama architecture (SmolLM2, Llama 2/3, TinyLlama, Mistral): the
// pre-norm decoder with pairwise RoPE, no biases, optional rope_freqs.
#include "model/decoder.h"

namespace kvfit {

std::unique_ptr<Architecture> create_llama() { return create_decoder(DecoderOptions{}); }

}  // namespace kvfit
