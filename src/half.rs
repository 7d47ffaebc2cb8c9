//! IEEE 754 half precision (binary16) as `u16` bits, converted to and from f32 in software:
//! stable Rust has no `f16` type yet. Embedding vectors are stored this way (the vector
//! index in memory and on disk, chunk records in the store): half the bytes of f32, and a
//! cosine of unit vectors moves by ~1e-4, far less than what separates neighbours.
//! Depends on nothing.

/// The nearest half-precision value of `x` (ties to even; overflow to infinity, NaN kept).
pub fn to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        // Infinity, or NaN with a mantissa bit kept set.
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): shift the mantissa with its implicit bit in.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rest = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let up = rest > mid || (rest == mid && half & 1 == 1);
        return sign | (half + u32::from(up)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    let up = rest > 0x1000 || (rest == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa bumps the exponent, up to infinity: still correct.
    sign | (half + u32::from(up)) as u16
}

/// The f32 value of a half-precision number (exact).
pub fn from_f16(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise it into an f32 exponent.
            // `lz` shifts the top set bit to bit 10, the implicit one, which is dropped.
            let lz = m.leading_zeros() - 21;
            let m = (m << lz) & 0x3ff;
            sign | ((127 - 15 + 1 - lz) << 23) | (m << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize) -> Vec<f32> {
        let mut s = 7u64;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn halves_round_trip_and_round_to_nearest() {
        // Every finite half survives f16 -> f32 -> f16 (the widening is exact).
        for h in 0..=u16::MAX {
            let x = from_f16(h);
            if x.is_nan() {
                assert!(from_f16(to_f16(x)).is_nan());
            } else {
                assert_eq!(to_f16(x), h, "{h:#06x} = {x}");
            }
        }
        // Known values, ties to even, overflow, the subnormal range and underflow.
        assert_eq!(to_f16(1.0), 0x3c00);
        assert_eq!(to_f16(-2.0), 0xc000);
        assert_eq!(to_f16(65504.0), 0x7bff);
        assert_eq!(to_f16(1e6), 0x7c00);
        assert_eq!(to_f16(1.0 + 1.0 / 2048.0), 0x3c00); // tie: down to even
        assert_eq!(to_f16(1.0 + 3.0 / 2048.0), 0x3c02); // tie: up to even
        assert_eq!(from_f16(0x0001), 2f32.powi(-24));
        assert_eq!(to_f16(2f32.powi(-25)), 0); // tie with 0: even
        assert_eq!(to_f16(1e-9), 0);
        // Anything else lands on one of its two neighbouring halves, the nearer one.
        for x in noise(20_000) {
            let x = x * 3.0;
            let h = to_f16(x);
            let err = (from_f16(h) - x).abs();
            for other in [h.wrapping_add(1), h.wrapping_sub(1)] {
                let o = from_f16(other);
                assert!(o.is_nan() || err <= (o - x).abs(), "{x}: {h:#06x}");
            }
        }
    }
}
