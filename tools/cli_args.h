/* Arguments the command-line programs share, so every program accepts the
 * same spellings: sizes ("8MiB", "512KiB", "1.5GiB", "123456"; K/M/G are the
 * same binary units) and KV codec names (auto, f16, q8, q4, q4h). */
#ifndef KVFIT_CLI_ARGS_H
#define KVFIT_CLI_ARGS_H

#include <stdint.h>
#include <string.h>

#include "kvfit.h"

/* Parses s into *out (bytes > 0); returns 0 on junk or overflow. A fraction
 * needs a unit and is rounded down to whole bytes. Parsed by hand because
 * strtod would also take "inf", "1e9" and hex. */
static inline int parse_size(const char *s, uint64_t *out) {
    uint64_t whole = 0, frac = 0, frac_scale = 1;
    const char *p = s;
    if (*p < '0' || *p > '9') return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (whole > (UINT64_MAX - 9) / 10) return 0;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    int has_frac = 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9') return 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (frac_scale < 1000000000u) { /* digits beyond 1e-9 cannot matter below 2^30 bytes */
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_scale *= 10;
            }
        }
        has_frac = 1;
    }
    uint64_t unit = 1;
    if (!*p) unit = 1;
    else if (!strcmp(p, "K") || !strcmp(p, "KiB")) unit = 1ull << 10;
    else if (!strcmp(p, "M") || !strcmp(p, "MiB")) unit = 1ull << 20;
    else if (!strcmp(p, "G") || !strcmp(p, "GiB")) unit = 1ull << 30;
    else return 0;
    if (has_frac && unit == 1) return 0;
    if (whole > UINT64_MAX / unit) return 0;
    uint64_t v = whole * unit + frac * unit / frac_scale; /* frac < 1e9, unit <= 2^30: no overflow */
    if (v < whole * unit || v == 0) return 0;
    *out = v;
    return 1;
}

/* A KV codec by name; returns 0 for an unknown name. */
static inline int parse_codec(const char *s, kvfit_kv_codec *out) {
    static const struct { const char *name; kvfit_kv_codec codec; } names[] = {
        {"auto", KVFIT_KV_AUTO}, {"f16", KVFIT_KV_F16}, {"q8", KVFIT_KV_Q8},
        {"q4", KVFIT_KV_Q4},     {"q4h", KVFIT_KV_Q4_HADAMARD}, {"q4c", KVFIT_KV_Q4_CHANNEL},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(s, names[i].name)) { *out = names[i].codec; return 1; }
    return 0;
}

static inline const char *codec_name(kvfit_kv_codec c) {
    switch (c) {
    case KVFIT_KV_AUTO: return "auto";
    case KVFIT_KV_F16: return "f16";
    case KVFIT_KV_Q8: return "q8";
    case KVFIT_KV_Q4: return "q4";
    case KVFIT_KV_Q4_HADAMARD: return "q4h";
    case KVFIT_KV_Q4_CHANNEL: return "q4c";
    case KVFIT_KV_F32: return "f32";
    case KVFIT_KV_BF16: return "bf16";
    default: return "?";
    }
}

#endif
