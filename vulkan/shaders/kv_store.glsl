// Writing encoded KV bytes (codecs as in src/kv/codec.h) into the uint
// buffer `dst` the including shader declares. Encoded rows are not 4-byte
// aligned, so bytes go out through store_bytes(): whole words plainly, words
// shared with a neighbouring row or group with atomics.

void store_bytes(uint off, uint n, uint bytes[36]) {
    for (uint wd = off >> 2; wd <= (off + n - 1u) >> 2; wd++) {
        uint val = 0u, mask = 0u;
        for (uint e = 0; e < 4u; e++) {
            const uint bo = 4u * wd + e;
            if (bo >= off && bo < off + n) {
                val |= bytes[bo - off] << (8u * e);
                mask |= 0xffu << (8u * e);
            }
        }
        if (mask == 0xffffffffu) {
            dst[wd] = val;
        } else {
            atomicAnd(dst[wd], ~mask);
            atomicOr(dst[wd], val);
        }
    }
}

// Smallest half >= v (v >= 0), capped at 65504: scales round up.
uint half_up(float f) {
    if (!(f > 0.0)) return 0u;
    if (f >= 65504.0) return 0x7bffu;
    uint h = float_to_half(f);
    if (half_to_float(h) < f) h++;
    return h;
}

// Largest half <= v, clamped to +-65504: minima round down.
uint half_down(float f) {
    if (f >= 65504.0) return 0x7bffu;
    if (f <= -65504.0) return 0xfbffu;
    uint h = float_to_half(f);
    if (half_to_float(h) > f) {
        if ((h & 0x7fffu) == 0u) h = 0x8001u;
        else if ((h & 0x8000u) != 0u) h++;
        else h--;
    }
    return h;
}

int round_clamp(float f, float lo, float hi) {
    if (!(f < hi)) f = hi;
    if (f < lo) f = lo;
    return int(roundEven(f));
}

// One Q4 group of 32 values: fp16 d (rounded up), fp16 m (rounded down), 16
// bytes of nibbles (byte j: value j low, value j + 16 high), at byte off.
void encode_q4_group(float grp[32], uint off) {
    float mn = grp[0], mx = grp[0];
    for (uint i = 1; i < 32u; i++) {
        mn = min(mn, grp[i]);
        mx = max(mx, grp[i]);
    }
    // m first, then d from the m actually stored, as the CPU does
    const uint mh = half_down(mn);
    const float m = half_to_float(mh);
    precise float range = mx - m;
    const uint dh = half_up(div_rn(range, 15.0));
    const float d = half_to_float(dh);
    uint bytes[36];
    bytes[0] = dh & 0xffu;
    bytes[1] = dh >> 8;
    bytes[2] = mh & 0xffu;
    bytes[3] = mh >> 8;
    uint q[32];
    for (uint i = 0; i < 32u; i++) {
        precise float c = grp[i] - m;
        q[i] = d > 0.0 ? uint(round_clamp(div_rn(c, d), 0.0, 15.0)) : 0u;
    }
    for (uint j = 0; j < 16u; j++) bytes[4u + j] = q[j] | (q[j + 16u] << 4);
    store_bytes(off, 20u, bytes);
}
