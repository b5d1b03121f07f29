// kvfit-plan-qwen35: per-session bytes of a Qwen3.5 configuration by layer
// kind, against a dense cache, and the planner's plans at some budgets,
// computed from the hyper-parameters alone (no weights needed): the layers
// are described exactly as src/model/qwen35.cpp describes them to the
// planner (recurrent: the conv's last kernel - 1 inputs and one head_dim x
// head_dim F32 state per value head; attention: sinks + window cache).
//
//   kvfit-plan-qwen35 [n_layer n_embd n_head n_head_kv head_dim interval conv_kernel k_heads v_heads state n_ctx]
//
// Defaults: Qwen3.5-0.8B (24 layers, hidden 1024, 8 query / 2 KV heads of
// 256, every 4th layer attention; DeltaNet: 16 key / 16 value heads of 128,
// conv kernel 4; 262144 tokens of training context).
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "common.h"
#include "kv/memory.h"

using namespace kvfit;

namespace {

std::string mib(uint64_t b) {
    char s[64];
    if (b >= (uint64_t(1) << 30)) snprintf(s, sizeof s, "%.2f GiB", double(b) / double(uint64_t(1) << 30));
    else snprintf(s, sizeof s, "%.2f MiB", double(b) / double(1 << 20));
    return s;
}

const char *kind_name(kvfit_layer_kind k) {
    switch (k) {
    case KVFIT_LAYER_DENSE: return "dense";
    case KVFIT_LAYER_STREAMING: return "sinks + window";
    case KVFIT_LAYER_WINDOW: return "native window";
    case KVFIT_LAYER_RECURRENT: return "recurrent";
    default: return "?";
    }
}

const char *codec_name(kvfit_kv_codec c) {
    switch (c) {
    case KVFIT_KV_F16: return "F16";
    case KVFIT_KV_Q8: return "Q8";
    case KVFIT_KV_Q4: return "Q4";
    case KVFIT_KV_Q4_CHANNEL: return "Q4_CHANNEL";
    case KVFIT_KV_F32: return "F32";
    case KVFIT_KV_BF16: return "BF16";
    default: return "?";
    }
}

}  // namespace

int main(int argc, char **argv) {
    int v[11] = {24, 1024, 8, 2, 256, 4, 4, 16, 16, 128, 262144};
    if (argc == 12)
        for (int i = 0; i < 11; i++) v[i] = atoi(argv[i + 1]);
    else if (argc != 1) {
        fprintf(stderr, "usage: %s [n_layer n_embd n_head n_head_kv head_dim interval conv_kernel k_heads v_heads state n_ctx]\n", argv[0]);
        return 2;
    }
    const int n_layer = v[0], n_head = v[2], n_head_kv = v[3], head_dim = v[4], interval = v[5], kernel = v[6],
              hk = v[7], hv = v[8], dk = v[9];
    const uint32_t n_ctx = uint32_t(v[10]);
    const uint64_t conv_dim = uint64_t(2) * hk * dk + uint64_t(hv) * dk;

    std::vector<LayerSpec> specs;
    RopeParams rope;
    rope.mode = RopeMode::Neox;
    rope.n_dims = head_dim / 4;
    rope.freq_base = 1e7f;
    int n_attn = 0;
    for (int l = 0; l < n_layer; l++) {
        if ((l + 1) % interval != 0) {
            specs.push_back(recurrent_layer({uint64_t(kernel - 1) * conv_dim * 4, uint64_t(hv) * dk * dk * 4}));
            specs.back().narrow_part = 1;  // as qwen35 declares it: the delta-rule state
        } else {
            LayerSpec s;
            s.n_head = n_head;
            s.n_head_kv = n_head_kv;
            s.head_dim = head_dim;
            s.rope = rope;
            specs.push_back(s);
            n_attn++;
        }
    }
    const uint64_t per_recurrent = recurrent_state_bytes(specs[0]);
    const uint64_t recurrent_total = per_recurrent * uint64_t(n_layer - n_attn);
    const uint64_t kv_per_token = uint64_t(2) * n_head_kv * head_dim * 2;  // K and V, F16

    printf("Recurrent layer state: conv %" PRIu64 " B + delta rule %" PRIu64 " B = %s per layer; %d recurrent layers = %s\n\n",
           uint64_t(kernel - 1) * conv_dim * 4, uint64_t(hv) * dk * dk * 4, mib(per_recurrent).c_str(), n_layer - n_attn,
           mib(recurrent_total).c_str());
    printf("| context | recurrent states (%d layers) | attention KV, dense F16 (%d layers) | session total | all %d layers as dense F16 attention |\n",
           n_layer - n_attn, n_attn, n_layer);
    printf("|---:|---:|---:|---:|---:|\n");
    for (uint64_t ctx : {uint64_t(1024), uint64_t(32768), uint64_t(1) << 20}) {
        const uint64_t attn = kv_per_token * uint64_t(n_attn) * ctx, all = kv_per_token * uint64_t(n_layer) * ctx;
        printf("| %" PRIu64 "K | %s | %s | %s | %s |\n", ctx / 1024, mib(recurrent_total).c_str(), mib(attn).c_str(),
               mib(recurrent_total + attn).c_str(), mib(all).c_str());
    }
    printf("\n");
    for (uint64_t budget_mib : {16, 64, 256}) {
        kvfit_session_params p;
        kvfit_session_params_init(&p);
        p.n_ctx = n_ctx;
        p.kv_budget_bytes = budget_mib << 20;
        try {
            const MemoryPlan plan = plan_memory(specs, p, n_ctx, true);  // the CPU backend's planner
            uint64_t rec = 0, att = 0;
            const LayerPlan *a = nullptr;
            for (size_t l = 0; l < plan.layers.size(); l++) {
                if (plan.layers[l].kind == KVFIT_LAYER_RECURRENT) rec += plan.layers[l].bytes;
                else {
                    att += plan.layers[l].bytes;
                    a = &plan.layers[l];
                }
            }
            printf("budget %" PRIu64 " MiB: %s total (recurrent %s in %s, attention %s", budget_mib,
                   mib(plan.total_bytes).c_str(), mib(rec).c_str(), codec_name(layer_codec(plan.layers[0])),
                   mib(att).c_str());
            if (a)
                printf("; attention layers: %s, %s, %u sinks + %u window", kind_name(a->kind), codec_name(layer_codec(*a)),
                       a->n_sink, a->n_window);
            printf(")\n");
        } catch (const std::exception &e) {
            printf("budget %" PRIu64 " MiB: KVFIT_E_BUDGET: %s\n", budget_mib, e.what());
        }
    }
    return 0;
}
