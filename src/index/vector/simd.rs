//! The dot product every vector search is made of, with the widest SIMD the CPU has, chosen
//! once at run time: AVX-512F, else AVX2 with FMA and F16C, else a portable loop the
//! compiler vectorises for the build target (SSE2 on x86-64).
//!
//! Stored vectors are IEEE half precision (`u16` bits, [`to_f16`]/[`from_f16`], converted
//! by the `half` crate): half the memory and disk of f32, and for unit vectors of a few hundred dimensions the rounding
//! moves a cosine by about 1e-4, far below what separates neighbours (the index tests and
//! `bench_vector` measure recall against f32 brute force). Queries stay f32;
//! [`Kernel::dot_f16`] widens the stored half on the fly.
//!
//! This is the one module allowed `unsafe`: calling a `#[target_feature]` function is unsafe
//! unless the CPU is known to have the feature, and unaligned vector loads take raw
//! pointers. A [`Kernel`] can only be obtained from detection, so holding one is the proof
//! that its instructions exist on this CPU. Depends on nothing but `std` and `half`.
#![allow(unsafe_code)]

/// The nearest IEEE half of `x` (ties to even; overflow to infinity, NaN kept), as bits.
#[inline]
pub fn to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The f32 value of a half given as bits (exact).
#[inline]
pub fn from_f16(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}
use std::sync::LazyLock;

/// A dot-product implementation this CPU supports (see [`Kernel::best`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Isa);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

static BEST: LazyLock<Kernel> = LazyLock::new(|| {
    *Kernel::available()
        .last()
        .expect("BUG: the portable kernel is always available")
});

impl Kernel {
    /// The fastest kernel this CPU supports (detected once).
    pub fn best() -> Kernel {
        *BEST
    }

    /// Every kernel this CPU supports, slowest (the portable one) first.
    pub fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut out = vec![Kernel(Isa::Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                out.push(Kernel(Isa::Avx2));
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Kernel(Isa::Avx512));
            }
        }
        out
    }

    /// A short name for logs and benchmarks: `avx512`, `avx2` or `portable`.
    pub fn name(self) -> &'static str {
        match self.0 {
            Isa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
        }
    }

    /// Dot product of the common prefix of `a` and `b`.
    #[inline]
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        self.dot_any(a, b)
    }

    /// Dot product of the common prefix of an f32 query and a stored half-precision vector.
    #[inline]
    pub fn dot_f16(self, q: &[f32], v: &[u16]) -> f32 {
        self.dot_any(q, v)
    }

    /// Dot product of the common prefix of two stored half-precision vectors: what a graph
    /// insert's neighbour heuristic weighs, without first widening one of them to f32
    /// (the same products and sums as [`dot_f16`](Self::dot_f16) of the widened vector).
    #[inline]
    pub fn dot_halves(self, a: &[u16], b: &[u16]) -> f32 {
        self.dot_any(a, b)
    }

    /// The one dot product behind [`dot`](Self::dot), [`dot_f16`](Self::dot_f16) and
    /// [`dot_halves`](Self::dot_halves): the same loops for f32 and half-precision
    /// operands, which differ only in how a run of lanes is loaded ([`Lanes`]).
    #[inline]
    fn dot_any<A: Lanes, T: Lanes>(self, a: &[A], b: &[T]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        match self.0 {
            Isa::Portable => dot_portable(a, b),
            // SAFETY: a Kernel holding Avx2/Avx512 is only made by `available`, after the
            // CPU reported those features (F16C is part of the Avx2 kernel's detection;
            // AVX-512F converts halves itself).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::dot_avx2(a, b) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::dot_avx512(a, b) },
        }
    }
}

/// How a kernel reads an operand: f32 as it is, IEEE halves (`u16` bits) widened on load.
/// Everything else about a dot product is the same for both.
trait Lanes: Copy {
    /// One value as f32 (the portable loop and the tails).
    fn to_f32(self) -> f32;
    /// 8 values from `p` as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 8` must be readable and the CPU must have AVX and F16C; only called from
    /// kernels compiled for them, into which it is inlined.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// 16 values from `p` as f32 lanes.
    ///
    /// # Safety
    /// `p..p + 16` must be readable and the CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    /// The `rest.len()` (< 16) values of `rest` in the low lanes, zeros above.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16_tail(rest: &[Self]) -> std::arch::x86_64::__m512;
}

impl Lanes for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's contract.
        unsafe { x86::load(p.cast::<[f32; 8]>()) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's contract.
        unsafe { x86::load(p.cast::<[f32; 16]>()) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16_tail(rest: &[f32]) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{__mmask16, _mm512_maskz_loadu_ps};
        let mask: __mmask16 = (1u16 << rest.len().min(15)) - 1;
        // SAFETY: the masked load reads only the `rest.len()` lanes inside `rest`.
        unsafe { _mm512_maskz_loadu_ps(mask, rest.as_ptr()) }
    }
}

impl Lanes for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        from_f16(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const u16) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's contract (8 halves are 16 bytes).
        unsafe { std::arch::x86_64::_mm256_cvtph_ps(x86::load(p.cast::<[u16; 8]>())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const u16) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's contract (16 halves are 32 bytes).
        unsafe { std::arch::x86_64::_mm512_cvtph_ps(x86::load(p.cast::<[u16; 16]>())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16_tail(rest: &[u16]) -> std::arch::x86_64::__m512 {
        // A masked 16-bit load needs AVX-512BW: the tail goes through a buffer.
        let mut buf = [0u16; 16];
        let n = rest.len().min(16);
        buf[..n].copy_from_slice(&rest[..n]);
        // SAFETY: `buf` holds 16 halves; the caller's contract for the CPU.
        unsafe { Self::load16(buf.as_ptr()) }
    }
}

/// `src` widened to f32 into `out` (replacing its contents), with the best kernel of
/// this CPU.
#[inline]
pub fn widen(src: &[u16], out: &mut Vec<f32>) {
    BEST.widen(src, out)
}

impl Kernel {
    /// `src` widened to f32 into `out` (replacing its contents). A graph insert widens a
    /// stored vector for every candidate its neighbour heuristic weighs: converting one
    /// half at a time (the `half` crate's per-value call) cost more than the dot products
    /// it prepared.
    pub fn widen(self, src: &[u16], out: &mut Vec<f32>) {
        out.clear();
        out.resize(src.len(), 0.0);
        match self.0 {
            Isa::Portable => {
                for (o, &h) in out.iter_mut().zip(src) {
                    *o = from_f16(h);
                }
            }
            // SAFETY: as in `dot`: the kernel exists only when the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::widen_f16c(src, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::widen_avx512(src, out) },
        }
    }
}

/// Asks the CPU to start loading `v` into cache (a hint: no effect on results, and a no-op
/// off x86-64). A graph walk calls it for the next vectors it will score, so their cache
/// misses overlap instead of following one another.
#[inline]
pub fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(v)).step_by(64) {
            // SAFETY: a prefetch never faults or changes memory, and `p + off` stays
            // inside `v`'s bytes. SSE is part of the x86-64 baseline.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Dot product with the best kernel of this CPU.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    BEST.dot(a, b)
}

/// Eight independent accumulators let the compiler vectorise without fast-math (a single
/// running sum forces sequential adds).
fn dot_portable<A: Lanes, T: Lanes>(a: &[A], b: &[T]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x.to_f32() * y.to_f32())
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += x.to_f32() * y.to_f32();
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// The bytes of `*p` as a SIMD register of the same size (an unaligned load). A plain
    /// read of an array instead of the `loadu` intrinsics: those go through
    /// `ptr::read_unaligned`, whose precondition checks are compiled in wherever debug
    /// assertions are on (the tests, and the benchmark builds of BENCHMARKS.md, which
    /// optimise this crate but keep them), and there cost more than the arithmetic: a
    /// 100k graph build took 1.6x the CPU time of the same code without them.
    ///
    /// # Safety
    /// `p` must be readable for `size_of::<A>()` bytes and aligned for `A`'s element;
    /// `A` and `V` must have the same size.
    #[inline(always)]
    pub(super) unsafe fn load<A: Copy, V: Copy>(p: *const A) -> V {
        union Bits<A: Copy, V: Copy> {
            a: A,
            v: V,
        }
        const { assert!(size_of::<A>() == size_of::<V>()) };
        // SAFETY: the caller's contract; the sizes are equal (checked above) and every
        // bit pattern is a valid SIMD register.
        unsafe { Bits { a: p.read() }.v }
    }

    /// Four 8-lane FMA accumulators (32 values per step) hide the FMA latency.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot_avx2<A: Lanes, T: Lanes>(a: &[A], b: &[T]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (every load below): `i + 8 <= n` (or `i + 32 <= n`) is checked first, so
        // each 8-value unaligned load stays inside both slices; this function has the
        // features `load8` needs.
        while i + 32 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * j;
                let (x, y) = unsafe { (A::load8(pa.add(o)), T::load8(pb.add(o))) };
                *acc = _mm256_fmadd_ps(x, y, *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            let (x, y) = unsafe { (A::load8(pa.add(i)), T::load8(pb.add(i))) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
        let tail: f32 = a[i..n]
            .iter()
            .zip(&b[i..n])
            .map(|(x, y)| x.to_f32() * y.to_f32())
            .sum();
        _mm_cvtss_f32(s) + tail
    }

    /// Four 16-lane FMA accumulators; the tail is one masked (or buffered) load, no
    /// scalar loop.
    #[target_feature(enable = "avx512f")]
    pub(super) fn dot_avx512<A: Lanes, T: Lanes>(a: &[A], b: &[T]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (every load below): bounds are checked before each load, and the masked
        // loads read only the `n - i` (< 16) lanes that are inside both slices.
        while i + 64 <= n {
            for (j, acc) in acc.iter_mut().enumerate() {
                let o = i + 16 * j;
                let (x, y) = unsafe { (A::load16(pa.add(o)), T::load16(pb.add(o))) };
                *acc = _mm512_fmadd_ps(x, y, *acc);
            }
            i += 64;
        }
        while i + 16 <= n {
            let (x, y) = unsafe { (A::load16(pa.add(i)), T::load16(pb.add(i))) };
            acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
            i += 16;
        }
        if i < n {
            let (x, y) = unsafe { (A::load16_tail(&a[i..n]), T::load16_tail(&b[i..n])) };
            acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
        }
        let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        _mm512_reduce_add_ps(s)
    }

    /// Halves to f32, 8 per instruction (F16C); `out` is as long as `src`.
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn widen_f16c(src: &[u16], out: &mut [f32]) {
        let n = src.len().min(out.len());
        let mut i = 0;
        // SAFETY: `i + 8 <= n` is checked first, so the 8-half load and the 8-float store
        // stay inside `src` and `out`.
        while i + 8 <= n {
            unsafe {
                let x = u16::load8(src.as_ptr().add(i));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), x);
            }
            i += 8;
        }
        for (o, &h) in out[i..n].iter_mut().zip(&src[i..n]) {
            *o = super::from_f16(h);
        }
    }

    /// Halves to f32, 16 per instruction; `out` is as long as `src`.
    #[target_feature(enable = "avx512f")]
    pub(super) fn widen_avx512(src: &[u16], out: &mut [f32]) {
        let n = src.len().min(out.len());
        let mut i = 0;
        // SAFETY: `i + 16 <= n` is checked first, so the 16-half load and the 16-float
        // store stay inside `src` and `out`.
        while i + 16 <= n {
            unsafe {
                let x = u16::load16(src.as_ptr().add(i));
                _mm512_storeu_ps(out.as_mut_ptr().add(i), x);
            }
            i += 16;
        }
        for (o, &h) in out[i..n].iter_mut().zip(&src[i..n]) {
            *o = super::from_f16(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_trip_and_round_to_nearest_even() {
        // What the stored vectors rely on, from the `half` crate: every finite half survives
        // f16 -> f32 -> f16 (the widening is exact), and rounding is to nearest, ties to even.
        for h in 0..=u16::MAX {
            let x = from_f16(h);
            if x.is_nan() {
                assert!(from_f16(to_f16(x)).is_nan());
            } else {
                assert_eq!(to_f16(x), h, "{h:#06x} = {x}");
            }
        }
        assert_eq!(to_f16(1.0), 0x3c00);
        assert_eq!(to_f16(-2.0), 0xc000);
        assert_eq!(to_f16(65504.0), 0x7bff);
        assert_eq!(to_f16(1e6), 0x7c00);
        assert_eq!(to_f16(1.0 + 1.0 / 2048.0), 0x3c00); // tie: down to even
        assert_eq!(to_f16(1.0 + 3.0 / 2048.0), 0x3c02); // tie: up to even
        assert_eq!(from_f16(0x0001), 2f32.powi(-24));
        assert_eq!(to_f16(2f32.powi(-25)), 0); // tie with 0: even
        assert_eq!(to_f16(1e-9), 0);
    }

    fn data(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
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
    fn every_kernel_agrees_with_a_plain_f64_sum_at_every_length() {
        let kernels = Kernel::available();
        assert_eq!(kernels[0].name(), "portable");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            assert!(kernels.iter().any(|k| k.name() == "avx2"));
        }
        assert_eq!(Kernel::best(), *kernels.last().unwrap());
        // Every tail length of every loop (32/64-float blocks, 8/16-float steps, remainders).
        for n in (0..=140).chain([383, 384, 385, 768, 1024, 1536]) {
            let (a, b) = (data(n as u64, n), data(1000 + n as u64, n));
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for k in &kernels {
                let got = k.dot(&a, &b) as f64;
                let scale: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (*x as f64 * *y as f64).abs())
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-5 * scale.max(1.0),
                    "{} at n={n}: {got} vs {want}",
                    k.name()
                );
            }
        }
    }

    #[test]
    fn unequal_lengths_use_the_common_prefix() {
        let a = data(1, 100);
        let b = data(2, 37);
        for k in Kernel::available() {
            let want = dot_portable(&a[..37], &b);
            assert!((k.dot(&a, &b) - want).abs() < 1e-5, "{}", k.name());
            assert!((k.dot(&b, &a) - want).abs() < 1e-5, "{}", k.name());
        }
    }

    #[test]
    fn every_half_kernel_agrees_with_a_plain_f64_sum_at_every_length() {
        for n in (0..=140).chain([383, 384, 385, 768, 1024]) {
            let q = data(n as u64, n);
            let v: Vec<u16> = data(1000 + n as u64, n).into_iter().map(to_f16).collect();
            let want: f64 = q
                .iter()
                .zip(&v)
                .map(|(x, &h)| *x as f64 * from_f16(h) as f64)
                .sum();
            for k in Kernel::available() {
                let got = k.dot_f16(&q, &v) as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (n as f64).max(1.0),
                    "{} at n={n}: {got} vs {want}",
                    k.name()
                );
                // Two stored vectors: the same bits as widening one first, so the graph
                // the heuristic builds does not depend on which of the two it does.
                let qh: Vec<u16> = q.iter().map(|&x| to_f16(x)).collect();
                let mut wide = Vec::new();
                k.widen(&qh, &mut wide);
                assert_eq!(
                    k.dot_halves(&qh, &v).to_bits(),
                    k.dot_f16(&wide, &v).to_bits(),
                    "{} at n={n}",
                    k.name()
                );
            }
        }
    }

    #[test]
    fn every_kernel_widens_halves_exactly_at_every_length() {
        for n in (0..=40).chain([383, 384, 385]) {
            let v: Vec<u16> = data(7 + n as u64, n).into_iter().map(to_f16).collect();
            let want: Vec<f32> = v.iter().map(|&h| from_f16(h)).collect();
            for k in Kernel::available() {
                let mut out = vec![1.0; 3];
                k.widen(&v, &mut out);
                assert_eq!(out, want, "{} at n={n}", k.name());
            }
        }
    }

    #[test]
    fn half_storage_moves_a_cosine_by_far_less_than_neighbours_differ() {
        // Unit vectors of 384 dimensions, as the embedding models give.
        let unit = |seed: u64| {
            let v = data(seed, 384);
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let mut worst = 0.0f32;
        for i in 0..200 {
            let (q, v) = (unit(i), unit(10_000 + i));
            let halves: Vec<u16> = v.iter().map(|&x| to_f16(x)).collect();
            worst = worst.max((dot(&q, &v) - Kernel::best().dot_f16(&q, &halves)).abs());
        }
        assert!(worst < 2e-4, "cosine moved by {worst}");
    }
}
