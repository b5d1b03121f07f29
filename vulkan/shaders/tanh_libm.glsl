// tanh as the CPU reference's C library computes it (glibc's tanhf, the
// fdlibm algorithm in float: 1 - 2 / (expm1(2|x|) + 2) for |x| >= 1,
// -t / (t + 2) with t = expm1(-2|x|) below), operation for operation, so that
// the shaders give its bits. Every operation is `precise` (no contraction);
// the divisions are div_rn (correctly rounded with doubles, as the CPU's).
// A C transcription of this code gave glibc 2.36's tanhf bits on every
// non-NaN float; test_vulkan_ops checks the shader against the CPU on every
// 1021st float bit pattern. Requires common.glsl.

// expm1(x) for the arguments tanh gives it: +-2|x| with 2^-55 <= |x| < 22.
float expm1_fdlibm(float x) {
    const uint ux = floatBitsToUint(x);
    const bool neg = (ux >> 31) != 0u;
    const uint hx = ux & 0x7fffffffu;
    if (hx >= 0x4195b844u && neg) return -1.0;  // x <= -27 ln2
    const float ln2_hi = uintBitsToFloat(0x3f317180u), ln2_lo = uintBitsToFloat(0x3717f7d1u);
    precise float hi, lo, c = 0.0, t, e, hxs, hfx, r1, y, xr = x;
    int k;
    if (hx > 0x3eb17218u) {  // |x| > ln2 / 2: x = k ln2 + (hi - lo)
        if (hx < 0x3f851592u) {
            if (!neg) {
                hi = x - ln2_hi;
                lo = ln2_lo;
                k = 1;
            } else {
                hi = x + ln2_hi;
                lo = -ln2_lo;
                k = -1;
            }
        } else {
            precise float kf = uintBitsToFloat(0x3fb8aa3bu) * x + (neg ? -0.5 : 0.5);
            k = int(kf);  // truncation, as C's conversion
            t = float(k);
            hi = x - t * ln2_hi;
            lo = t * ln2_lo;
        }
        xr = hi - lo;
        c = (hi - xr) - lo;
    } else if (hx < 0x33000000u) {
        return x;
    } else {
        k = 0;
    }
    hfx = 0.5 * xr;
    hxs = xr * hfx;
    r1 = 1.0 + hxs * (uintBitsToFloat(0xbd088889u) +
                      hxs * (uintBitsToFloat(0x3ad00d01u) +
                             hxs * (uintBitsToFloat(0xb8a670cdu) +
                                    hxs * (uintBitsToFloat(0x36867e54u) + hxs * uintBitsToFloat(0xb457edbbu)))));
    t = 3.0 - r1 * hfx;
    precise float num = r1 - t, den = 6.0 - xr * t;
    e = hxs * div_rn(num, den);
    if (k == 0) {
        y = xr - (xr * e - hxs);
        return y;
    }
    e = xr * (e - c) - c;
    e -= hxs;
    if (k == -1) {
        y = 0.5 * (xr - e) - 0.5;
        return y;
    }
    if (k == 1) {
        if (xr < -0.25) {
            y = -2.0 * (e - (xr + 0.5));
        } else {
            y = 1.0 + 2.0 * (xr - e);
        }
        return y;
    }
    if (k <= -2 || k > 56) {
        y = 1.0 - (e - xr);
        y = uintBitsToFloat(floatBitsToUint(y) + (uint(k) << 23));
        y = y - 1.0;
        return y;
    }
    if (k < 23) {
        t = uintBitsToFloat(0x3f800000u - (0x1000000u >> uint(k)));  // 1 - 2^-k
        y = t - (e - xr);
    } else {
        t = uintBitsToFloat(uint(0x7f - k) << 23);  // 2^-k
        y = xr - (e + t);
        y += 1.0;
    }
    y = uintBitsToFloat(floatBitsToUint(y) + (uint(k) << 23));
    return y;
}

float tanh_libm(float x) {
    const uint jx = floatBitsToUint(x), ix = jx & 0x7fffffffu;
    const bool neg = (jx >> 31) != 0u;
    if (ix >= 0x7f800000u) {
        if (ix > 0x7f800000u) return x;  // NaN
        return neg ? -1.0 : 1.0;
    }
    precise float z;
    if (ix < 0x41b00000u) {  // |x| < 22
        if (ix == 0u) return x;
        if (ix < 0x24000000u) {  // |x| < 2^-55
            z = x * (1.0 + x);
            return z;
        }
        const float ax = abs(x);
        if (ix >= 0x3f800000u) {  // |x| >= 1
            precise float t = expm1_fdlibm(2.0 * ax);
            precise float den = t + 2.0;
            precise float q = div_rn(2.0, den);
            z = 1.0 - q;
        } else {
            precise float t = expm1_fdlibm(-2.0 * ax);
            precise float den = t + 2.0;
            z = div_rn(-t, den);
        }
    } else {
        z = 1.0;
    }
    return neg ? -z : z;
}
