//! The CPU decode kernel: one fused pass per stream and layer over a factor cache kept in host
//! memory, laid out so that every per-token operation runs across [`LANES`] tokens at once.
//!
//! Tokens are stored in blocks of [`LANES`], each block feature-major (`[width][LANES]`), so the
//! score of a block of rank-ρ tokens is a few broadcast multiply-adds over contiguous lanes:
//! `u_h = B_K,r · q_h` (or, with TPA query factors, `B_K,r·B_Qᵀ` first and then `A_Q` — FlashTPA's
//! order), then `s_h += A_K,r[h] ⊙ u_h`. Keys and values are never materialised. Softmax uses a
//! vectorisable `exp` in FlashDecoding's online form (one pass over the cache), and values
//! accumulate per lane, reduced once per head and feature at the end.
//! The loops are plain Rust over fixed-size arrays; [`pulp::Arch::dispatch`] compiles them with the
//! widest instruction set the CPU has (AVX2/AVX-512), chosen at run time.
//!
//! The last block of a group is padded to [`LANES`] tokens with zeros; the padded lanes get no
//! attention weight. Bytes are reported for the tokens held, as the cost model counts them.

use burn::tensor::Tensor;

use crate::cost::CACHE_ELEMENT_BYTES;
use crate::error::{Error, Result};

/// A tensor's values in host memory (row-major).
pub fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().try_to_vec::<f32>().map_err(|e| Error::Input(format!("cannot read tensor data as f32: {e:?}")))
}

/// Tokens per block.
pub const LANES: usize = 64;

type Lane = [f32; LANES];

/// Score of a padded lane: `exp` maps it to exactly 0.
const PAD: f32 = f32::NEG_INFINITY;

/// Tokens stored in blocks of [`LANES`], each block feature-major.
#[derive(Clone, Debug)]
pub struct Tiles {
    width: usize,
    /// Lanes of the first block that were evicted from the front (`< LANES`).
    skip: usize,
    len: usize,
    data: Vec<f32>,
}

impl Tiles {
    /// No tokens of `width` features each.
    pub fn new(width: usize) -> Self {
        Self { width, skip: 0, len: 0, data: Vec::new() }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Features per token.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Append one token's features.
    pub fn push(&mut self, token: &[f32]) {
        assert_eq!(token.len(), self.width, "a token has {} features", self.width);
        let block = self.width * LANES;
        let end = self.skip + self.len;
        if end.is_multiple_of(LANES) {
            self.data.resize(self.data.len() + block, 0.0);
        }
        let base = (end / LANES) * block;
        let lane = end % LANES;
        for (f, &x) in token.iter().enumerate() {
            self.data[base + f * LANES + lane] = x;
        }
        self.len += 1;
    }

    /// Evict the `n` oldest tokens (a block is freed once all its lanes are gone).
    pub fn pop_front(&mut self, n: usize) {
        assert!(n <= self.len, "cannot evict {n} of {} tokens", self.len);
        self.len -= n;
        self.skip += n;
        let whole = self.skip / LANES;
        if whole > 0 {
            self.data.drain(..whole * self.width * LANES);
            self.skip %= LANES;
        }
        if self.len == 0 {
            self.data.clear();
            self.skip = 0;
        }
    }

    /// Evicted lanes at the front of the first block (the kernel masks them).
    pub fn skip(&self) -> usize {
        self.skip
    }

    /// The features of token `n` (for tests and inspection).
    pub fn token(&self, n: usize) -> Vec<f32> {
        assert!(n < self.len, "token {n} of {}", self.len);
        let n = n + self.skip;
        let base = (n / LANES) * self.width * LANES + n % LANES;
        (0..self.width).map(|f| self.data[base + f * LANES]).collect()
    }

    fn blocks(&self) -> std::slice::ChunksExact<'_, f32> {
        self.data.chunks_exact(self.width * LANES)
    }

    /// Bytes of the tokens held (the padding of the last block is not counted).
    pub fn bytes(&self) -> usize {
        self.len * self.width * CACHE_ELEMENT_BYTES
    }
}

/// What a host group holds per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Rank-ρ factors: per r `A_K,r [h]`, `B_K,r [d_h]` (rotated), then per r `A_V,r [h]`, `B_V,r [d_h]`.
    Factors {
        /// ρ.
        rank: usize,
    },
    /// Dense `K [h_kv, d_h]` (rotated) then `V [h_kv, d_h]`.
    Dense,
}

/// The tokens of one layer of one stream that share one menu option, in host memory.
#[derive(Clone, Debug)]
pub struct HostGroup {
    /// The option's layout.
    pub kind: HostKind,
    /// The tokens.
    pub tiles: Tiles,
}

/// Head counts and sizes of one attention layer.
#[derive(Clone, Copy, Debug)]
pub struct HeadDims {
    /// Query heads h.
    pub heads: usize,
    /// K/V heads of the dense option.
    pub kv_heads: usize,
    /// d_h.
    pub head_dim: usize,
}

impl HeadDims {
    /// Offset of query head `head`'s K/V head inside a dense token's keys (or values): heads share
    /// K/V heads in groups of `h / h_kv` (GQA's `repeat_interleave`); a head past the last (a
    /// chunk's unused slot) maps to the last.
    #[inline(always)]
    pub fn kv_offset(&self, head: usize) -> usize {
        (head.min(self.heads - 1) / (self.heads / self.kv_heads)) * self.head_dim
    }

    /// Features per token of a group of `kind`.
    pub fn width(&self, kind: HostKind) -> usize {
        match kind {
            HostKind::Factors { rank } => 2 * rank * (self.heads + self.head_dim),
            HostKind::Dense => 2 * self.kv_heads * self.head_dim,
        }
    }
}

/// The new token of one stream, as the kernel reads it.
#[derive(Clone, Copy, Debug)]
pub struct StepQuery<'a> {
    /// Rows contracted with each cached `B_K` row, `[m, d_h]`, the softmax scale folded in: the
    /// materialised query (`m = h`) or TPA's `B_Q` (`m = R_Q`).
    pub rows: &'a [f32],
    /// With TPA's `B_Q` as `rows`: `A_Q / R_Q`, `[h, m]`.
    pub head_mix: Option<&'a [f32]>,
    /// The materialised query `[h, d_h]`, scale folded in (for dense keys and the token itself).
    pub query: &'a [f32],
    /// The token's exact key and value `[h, d_h]`.
    pub key: &'a [f32],
    /// See `key`.
    pub value: &'a [f32],
}

/// Attention of one stream's new token over its cached groups and itself.
///
/// Writes the output `[h, d_h]` into `out` and each head's log-sum-exp of its scores into `lse`
/// `[h]` (a key's weight is `exp(score − lse)`), and returns the statistics a rank policy
/// observes: attention entropy (nats) and maximum weight, both averaged over heads.
pub fn attend(dims: HeadDims, groups: &[&HostGroup], q: StepQuery<'_>, out: &mut [f32], lse: &mut [f32]) -> [f32; 2] {
    pulp::Arch::new().dispatch(Attend { dims, groups, q, out, lse })
}

/// [`attend`]'s arguments, so that [`pulp`] can compile the whole kernel (everything below is
/// `#[inline(always)]`) once per instruction set.
struct Attend<'g, 'q, 'o> {
    dims: HeadDims,
    groups: &'g [&'g HostGroup],
    q: StepQuery<'q>,
    out: &'o mut [f32],
    lse: &'o mut [f32],
}

impl pulp::WithSimd for Attend<'_, '_, '_> {
    type Output = [f32; 2];

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> [f32; 2] {
        attend_inner(self.dims, self.groups, self.q, self.out, self.lse)
    }
}

/// Running softmax of one head (FlashDecoding's online form): weights relative to the largest
/// score seen so far, rescaled when it grows.
struct Running {
    /// Largest score so far.
    max: f32,
    /// Σ e per lane, e = exp(s − max).
    z: Lane,
    /// Σ e·(s − max) per lane (for the entropy).
    zs: Lane,
    /// The weight of the token itself.
    own: f32,
    /// Its score.
    own_score: f32,
}

impl Running {
    /// Only the token itself, score `own`.
    fn new(own: f32) -> Self {
        Self { max: own, z: [0.0; LANES], zs: [0.0; LANES], own: 1.0, own_score: own }
    }

    /// Raise the reference to `max`, rescaling what is accumulated (values in `acc`).
    #[inline(always)]
    fn raise(&mut self, max: f32, acc: &mut [Lane]) {
        let (shift, alpha) = (self.max - max, exp_lane(self.max - max));
        for l in 0..LANES {
            // Σ e'·(s − max') = α·(Σ e·(s − max) + (max − max')·Σ e).
            self.zs[l] = alpha * (self.zs[l] + shift * self.z[l]);
            self.z[l] *= alpha;
        }
        self.own *= alpha;
        acc.iter_mut().flatten().for_each(|x| *x *= alpha);
        self.max = max;
    }
}

/// Turn one block's scores `s[hh]` into weights (in place) and add them to the heads' sums;
/// `shifted` is scratch of the same shape. The `exp` runs as one loop over every head's lanes,
/// which the compiler vectorises.
#[inline(always)]
fn weigh(heads: &mut [Running], s: &mut [Lane], shifted: &mut [Lane]) {
    for ((run, sh), d) in heads.iter().zip(s.iter()).zip(shifted.iter_mut()) {
        for l in 0..LANES {
            d[l] = sh[l] - run.max;
        }
    }
    for (e, &x) in s.as_flattened_mut().iter_mut().zip(shifted.as_flattened()) {
        *e = exp_lane(x);
    }
    for ((run, e), d) in heads.iter_mut().zip(s.iter()).zip(shifted.iter()) {
        for l in 0..LANES {
            run.z[l] += e[l];
            // A padded lane (d = −∞, e = 0) contributes nothing, and not 0 · (−∞) = NaN.
            run.zs[l] += e[l] * d[l].max(-88.0);
        }
    }
}

#[inline(always)]
fn attend_inner(dims: HeadDims, groups: &[&HostGroup], q: StepQuery<'_>, out: &mut [f32], lse: &mut [f32]) -> [f32; 2] {
    let HeadDims { heads: h, head_dim: dh, .. } = dims;
    let mut heads: Vec<Running> =
        (0..h).map(|hh| Running::new(dot(&q.query[hh * dh..(hh + 1) * dh], &q.key[hh * dh..(hh + 1) * dh]))).collect();
    // Values accumulated per lane, acc[hh·d_h + i], reduced over the lanes at the end.
    let mut acc = vec![[0f32; LANES]; h * dh];
    let mut scores = vec![[0f32; LANES]; h];
    let mut shifted = vec![[0f32; LANES]; h];
    let (mut rows, mut mixed) = (vec![[0f32; LANES]; q.rows.len() / dh], vec![[0f32; LANES]; h]);
    for g in groups {
        let blocks = g.tiles.blocks().count();
        for (b, block) in g.tiles.blocks().enumerate() {
            score_block(dims, g.kind, block, &q, &mut scores, &mut rows, &mut mixed);
            if b + 1 == blocks {
                let valid = g.tiles.skip() + g.tiles.len() - b * LANES;
                scores.iter_mut().for_each(|s| s[valid..].fill(PAD));
            }
            if b == 0 && g.tiles.skip() > 0 {
                scores.iter_mut().for_each(|s| s[..g.tiles.skip()].fill(PAD));
            }
            for (hh, (run, s)) in heads.iter_mut().zip(&scores).enumerate() {
                let block_max = lanes_max(s);
                if block_max > run.max {
                    run.raise(block_max, &mut acc[hh * dh..(hh + 1) * dh]);
                }
            }
            weigh(&mut heads, &mut scores, &mut shifted);
            accumulate_block(dims, g.kind, block, &scores, &mut acc);
        }
    }
    let (mut entropy, mut max_weight) = (0.0, 0.0);
    for (hh, run) in heads.iter().enumerate() {
        let z = run.z.iter().sum::<f32>() + run.own;
        let zs = run.zs.iter().sum::<f32>() + run.own * (run.own_score - run.max);
        for i in 0..dh {
            let lanes: f32 = acc[hh * dh + i].iter().sum();
            out[hh * dh + i] = (lanes + run.own * q.value[hh * dh + i]) / z;
        }
        // H = log Z − Σ e·(s − max) / Z; the largest weight is e⁰ / Z.
        entropy += z.ln() - zs / z;
        lse[hh] = run.max + z.ln();
        max_weight += 1.0 / z;
    }
    [entropy / h as f32, max_weight / h as f32]
}

#[inline(always)]
fn lane(block: &[f32], feature: usize) -> &Lane {
    block[feature * LANES..(feature + 1) * LANES].try_into().expect("a block holds whole lanes")
}

/// The largest of the lanes, by halving (a tree, not a chain of 16 comparisons).
#[inline(always)]
fn lanes_max(s: &Lane) -> f32 {
    let mut m = *s;
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            m[l] = m[l].max(m[l + half]);
        }
        half /= 2;
    }
    m[0]
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `acc += a · x` over the lanes.
#[inline(always)]
fn axpy(acc: &mut Lane, a: f32, x: &Lane) {
    for l in 0..LANES {
        acc[l] += a * x[l];
    }
}

/// Heads (or query ranks) handled together: their accumulators stay in registers.
const CHUNK: usize = 4;

/// Run `$f::<N>(args…)` with `N = $n ≤ CHUNK` a constant.
macro_rules! with_chunk {
    ($n:expr, $f:ident($($arg:expr),*)) => {
        match $n {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            _ => $f::<4>($($arg),*),
        }
    };
}

/// `dst[c] = Σ_i rows[c][i] · lane(block, feats[c] + i)` for N rows of `dh` coefficients, with
/// two accumulators per row (even and odd i) so the additions do not wait on each other.
#[inline(always)]
fn contract<const N: usize>(block: &[f32], rows: &[f32], feats: [usize; CHUNK], dh: usize, dst: &mut [Lane]) {
    let mut even = [[0f32; LANES]; N];
    let mut odd = [[0f32; LANES]; N];
    let mut i = 0;
    while i + 1 < dh {
        for c in 0..N {
            axpy(&mut even[c], rows[c * dh + i], lane(block, feats[c] + i));
            axpy(&mut odd[c], rows[c * dh + i + 1], lane(block, feats[c] + i + 1));
        }
        i += 2;
    }
    if i < dh {
        for c in 0..N {
            axpy(&mut even[c], rows[c * dh + i], lane(block, feats[c] + i));
        }
    }
    for c in 0..N {
        for l in 0..LANES {
            dst[c][l] = even[c][l] + odd[c][l];
        }
    }
}

/// Scores `s[hh]` of one block for every head; `u` (one lane per query row) and `mixed` (one per
/// head) are scratch.
#[inline(always)]
fn score_block(
    dims: HeadDims,
    kind: HostKind,
    block: &[f32],
    q: &StepQuery<'_>,
    s: &mut [Lane],
    u: &mut [Lane],
    mixed: &mut [Lane],
) {
    let HeadDims { heads: h, head_dim: dh, .. } = dims;
    match kind {
        HostKind::Dense => {
            for c0 in (0..h).step_by(CHUNK) {
                let feats = std::array::from_fn(|c| dims.kv_offset(c0 + c));
                with_chunk!(CHUNK.min(h - c0), contract(block, &q.query[c0 * dh..], feats, dh, &mut s[c0..]));
            }
        }
        HostKind::Factors { rank } => {
            let stride = h + dh;
            s.iter_mut().for_each(|x| *x = [0.0; LANES]);
            // u_h = B_K,r · q_h, or FlashTPA's order: t_j = B_K,r · B_Q,j, then u_h = Σ_j A_Q[h, j] t_j.
            let m = q.rows.len() / dh;
            for r in 0..rank {
                let feats = [r * stride + h; CHUNK];
                for j0 in (0..m).step_by(CHUNK) {
                    with_chunk!(CHUNK.min(m - j0), contract(block, &q.rows[j0 * dh..], feats, dh, &mut u[j0..]));
                }
                let u: &[Lane] = match q.head_mix {
                    Some(mix) => {
                        for (hh, x) in mixed.iter_mut().enumerate() {
                            *x = [0.0; LANES];
                            (0..m).for_each(|j| axpy(x, mix[hh * m + j], &u[j]));
                        }
                        mixed
                    }
                    None => u,
                };
                // s_h += A_K,r[h] ⊙ u_h.
                for (hh, sh) in s.iter_mut().enumerate() {
                    let a = lane(block, r * stride + hh);
                    for l in 0..LANES {
                        sh[l] += a[l] * u[hh][l];
                    }
                }
            }
            let inv_rank = 1.0 / rank as f32;
            s.iter_mut().flatten().for_each(|x| *x *= inv_rank);
        }
    }
}

/// `acc[hh][i] += Σ_lanes w_h ⊙ V[h, i]` for one block, `w` its unnormalised weights.
#[inline(always)]
fn accumulate_block(dims: HeadDims, kind: HostKind, block: &[f32], w: &[Lane], acc: &mut [Lane]) {
    let HeadDims { heads: h, kv_heads: kvh, head_dim: dh } = dims;
    match kind {
        HostKind::Factors { rank } => {
            let stride = h + dh;
            let values = rank * stride;
            let inv_rank = 1.0 / rank as f32;
            for r in 0..rank {
                let (av, bv) = (values + r * stride, values + r * stride + h);
                for c0 in (0..h).step_by(CHUNK) {
                    let n = CHUNK.min(h - c0);
                    // w'_h = w_h ⊙ A_V,r[h] / ρ, then acc[h][i] += w'_h ⊙ B_V,r[i].
                    let mut wr = [[0f32; LANES]; CHUNK];
                    for c in 0..n {
                        let a = lane(block, av + c0 + c);
                        for l in 0..LANES {
                            wr[c][l] = w[c0 + c][l] * a[l] * inv_rank;
                        }
                    }
                    with_chunk!(n, spread(block, &wr, [bv; CHUNK], dh, &mut acc[c0 * dh..]));
                }
            }
        }
        HostKind::Dense => {
            let values = kvh * dh;
            for c0 in (0..h).step_by(CHUNK) {
                let n = CHUNK.min(h - c0);
                let wc: [Lane; CHUNK] = std::array::from_fn(|c| w[(c0 + c).min(h - 1)]);
                let feats = std::array::from_fn(|c| values + dims.kv_offset(c0 + c));
                with_chunk!(n, spread(block, &wc, feats, dh, &mut acc[c0 * dh..]));
            }
        }
    }
}

/// `acc[c][i] += w[c] ⊙ lane(block, feats[c] + i)` for heads c < N.
#[inline(always)]
fn spread<const N: usize>(block: &[f32], w: &[Lane; CHUNK], feats: [usize; CHUNK], dh: usize, acc: &mut [Lane]) {
    for i in 0..dh {
        for c in 0..N {
            let x = lane(block, feats[c] + i);
            let dst = &mut acc[c * dh + i];
            for l in 0..LANES {
                dst[l] += w[c][l] * x[l];
            }
        }
    }
}

/// `exp(x)` for `x ≤ 0` (Cephes' range reduction and degree-5 polynomial, relative error below
/// 2·10⁻⁷), exactly 0 below −87 and for −∞; branch-free so the lanes vectorise.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round x·log2(e) to the nearest integer n by adding 1.5·2²³ (n then sits in the low mantissa
    // bits), which needs no rounding instruction.
    const SHIFT: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let shifted = xc * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((shifted.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127)) << 23);
    // × 0 below the range (and for −∞ or NaN), as a multiply so that no lane branches.
    y * scale * f32::from(u8::from(x >= -87.0))
}

/// What [`masked_attention`] reads: the parallel forward's per-token tensors in host memory.
pub struct MaskedInputs<'a> {
    /// `[B, T, h, d_h]`.
    pub dims: [usize; 4],
    /// Queries with the softmax scale folded in, `[B, T, h, d_h]`.
    pub q: Vec<f32>,
    /// Exact keys and values (each query sees its own token exactly), `[B, T, h, d_h]`.
    pub k_exact: Vec<f32>,
    /// See `k_exact`.
    pub v_exact: Vec<f32>,
    /// Stored (first-form) keys and values, `[B, T, h, d_h]`.
    pub k_stored: Vec<f32>,
    /// See `k_stored`.
    pub v_stored: Vec<f32>,
    /// Visibility of key `u` to later queries: `[B, T]` or, with `keep_per_query`, `[B, T, T]`
    /// (query × key).
    pub keep: Vec<f32>,
    /// Whether `keep` is per (query, key).
    pub keep_per_query: bool,
    /// Demoted tokens' later keys and values (`[B, T, h, d_h]`) and the `[B, T, T]` mask of where
    /// a query sees a key in its later form.
    pub late: Option<(&'a [f32], &'a [f32], &'a [f32])>,
    /// Lowest exponent the softmax evaluates (the tensor path's clamp).
    pub min_exponent: f32,
}

/// The parallel forward's attention (`Attention::forward`) for every stream, head and query in
/// one pass over its visible keys: query `s` scores each visible earlier key in the form it has at
/// `s` (stored, or later where the mask says so) and itself exactly; softmax with exponents
/// clamped to `[min_exponent, 0]`; values weighted alike, its own value exact. Returns
/// `[B, T, h · d_h]`. Memory is O(T) per query instead of the tensor path's `[B, h, T, T]` maps;
/// keys and values are laid out feature-major per head, so every inner loop runs over
/// contiguous keys (compiled by [`pulp`] for the widest instruction set the CPU has).
pub fn masked_attention(x: &MaskedInputs<'_>) -> Vec<f32> {
    pulp::Arch::new().dispatch(Masked(x))
}

/// [`masked_attention`]'s argument, for [`pulp`]'s dispatch.
struct Masked<'a, 'b>(&'a MaskedInputs<'b>);

impl pulp::WithSimd for Masked<'_, '_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<f32> {
        masked_inner(self.0)
    }
}

/// Eight independent partial sums (a reduction the compiler can keep in vector registers).
const ACC: usize = 8;

#[inline(always)]
fn masked_inner(x: &MaskedInputs<'_>) -> Vec<f32> {
    let [b_n, t_n, h_n, dh] = x.dims;
    let at = |b: usize, t: usize, h: usize| ((b * t_n + t) * h_n + h) * dh;
    // One head's keys or values feature-major: `[d_h][T]`.
    let gather = |src: &[f32], b: usize, h: usize, dst: &mut Vec<f32>| {
        dst.resize(dh * t_n, 0.0);
        for t in 0..t_n {
            let row = &src[at(b, t, h)..at(b, t, h) + dh];
            for (d, v) in row.iter().enumerate() {
                dst[d * t_n + t] = *v;
            }
        }
    };
    let mut out = vec![0f32; b_n * t_n * h_n * dh];
    let (mut ks, mut vs, mut kl, mut vl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut w, mut wl, mut later) = (vec![0f32; t_n], vec![0f32; t_n], vec![0f32; t_n]);
    let lo = x.min_exponent;
    for b in 0..b_n {
        for h in 0..h_n {
            gather(&x.k_stored, b, h, &mut ks);
            gather(&x.v_stored, b, h, &mut vs);
            if let Some((k_late, v_late, _)) = x.late {
                gather(k_late, b, h, &mut kl);
                gather(v_late, b, h, &mut vl);
            }
            for s in 0..t_n {
                let q = &x.q[at(b, s, h)..at(b, s, h) + dh];
                let own = dot(q, &x.k_exact[at(b, s, h)..at(b, s, h) + dh]);
                let keep = match x.keep_per_query {
                    true => &x.keep[(b * t_n + s) * t_n..(b * t_n + s) * t_n + s],
                    false => &x.keep[b * t_n..b * t_n + s],
                };
                let mask = x.late.map(|(_, _, m)| &m[(b * t_n + s) * t_n..(b * t_n + s + 1) * t_n]);
                // Scores of the earlier keys in their stored form, blended with the later form.
                let scores = &mut w[..s];
                scores.fill(0.0);
                for (d, &qd) in q.iter().enumerate() {
                    axpy_slice(scores, qd, &ks[d * t_n..d * t_n + s]);
                }
                if let Some(m) = mask {
                    let late = &mut later[..s];
                    late.fill(0.0);
                    for (d, &qd) in q.iter().enumerate() {
                        axpy_slice(late, qd, &kl[d * t_n..d * t_n + s]);
                    }
                    for ((sc, la), m) in scores.iter_mut().zip(late.iter()).zip(&m[..s]) {
                        *sc = *sc * (1.0 - m) + la * m;
                    }
                }
                // Softmax over the visible keys and the token itself.
                let max = visible_max(scores, keep, own);
                let w_own = exp_lane((own - max).clamp(lo, 0.0));
                let total = exp_weights(scores, keep, max, lo) + w_own;
                // Values: the weight of a key seen in its later form goes to its later value.
                let weights = &mut w[..s];
                let m_own = mask.map_or(0.0, |m| m[s]);
                if let Some(m) = mask {
                    for ((wv, wlv), m) in weights.iter_mut().zip(wl[..s].iter_mut()).zip(&m[..s]) {
                        *wlv = *wv * m;
                        *wv *= 1.0 - m;
                    }
                }
                let v_own = &x.v_exact[at(b, s, h)..at(b, s, h) + dh];
                let dst = &mut out[at(b, s, h)..at(b, s, h) + dh];
                for d in 0..dh {
                    let mut acc = dot_slice(weights, &vs[d * t_n..d * t_n + s]);
                    if mask.is_some() {
                        acc += dot_slice(&wl[..s], &vl[d * t_n..d * t_n + s]);
                    }
                    // Its own token: the tensor path adds its stored/later value with the diagonal
                    // weight, then moves that weight over to the exact value.
                    let stored = vs[d * t_n + s];
                    let own_form = if m_own != 0.0 { stored * (1.0 - m_own) + vl[d * t_n + s] * m_own } else { stored };
                    dst[d] = (acc + w_own * own_form + w_own * (v_own[d] - stored)) / total;
                }
            }
        }
    }
    out
}

/// The largest score among the visible keys (`keep ≠ 0`) and `init`.
#[inline(always)]
fn visible_max(scores: &[f32], keep: &[f32], init: f32) -> f32 {
    let mut max = [init; ACC];
    let (sc, sr) = scores.as_chunks::<ACC>();
    let (kc, kr) = keep.as_chunks::<ACC>();
    for (s, k) in sc.iter().zip(kc) {
        for i in 0..ACC {
            max[i] = max[i].max(if k[i] != 0.0 { s[i] } else { f32::NEG_INFINITY });
        }
    }
    let tail = sr.iter().zip(kr).filter(|(_, k)| **k != 0.0).fold(init, |m, (s, _)| m.max(*s));
    max.iter().fold(tail, |a, b| a.max(*b))
}

/// Scores → weights `exp(clamp(s − max, lo, 0)) · keep`, in place; returns their sum.
#[inline(always)]
fn exp_weights(scores: &mut [f32], keep: &[f32], max: f32, lo: f32) -> f32 {
    let mut total = [0f32; ACC];
    let (sc, sr) = scores.as_chunks_mut::<ACC>();
    let (kc, kr) = keep.as_chunks::<ACC>();
    for (s, k) in sc.iter_mut().zip(kc) {
        for i in 0..ACC {
            s[i] = exp_lane((s[i] - max).clamp(lo, 0.0)) * k[i];
            total[i] += s[i];
        }
    }
    let mut tail = 0.0;
    for (s, k) in sr.iter_mut().zip(kr) {
        *s = exp_lane((*s - max).clamp(lo, 0.0)) * k;
        tail += *s;
    }
    total.iter().sum::<f32>() + tail
}

/// `dst += a · x`.
#[inline(always)]
fn axpy_slice(dst: &mut [f32], a: f32, x: &[f32]) {
    for (d, v) in dst.iter_mut().zip(x) {
        *d += a * v;
    }
}

/// `Σ a·b` in [`ACC`] partial sums.
#[inline(always)]
fn dot_slice(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; ACC];
    let (ac, ar) = a.as_chunks::<ACC>();
    let (bc, br) = b.as_chunks::<ACC>();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..ACC {
            acc[i] += x[i] * y[i];
        }
    }
    ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>() + acc.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_over_the_softmax_range() {
        for i in 0..=20_000 {
            let x = -87.0 * i as f32 / 20_000.0;
            let (got, want) = (exp_lane(x), x.exp());
            assert!((got - want).abs() <= 3e-7 * want, "exp({x}) = {got}, want {want}");
        }
        assert_eq!(exp_lane(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_lane(-100.0), 0.0);
        assert_eq!(exp_lane(0.0), 1.0);
    }

    #[test]
    fn tiles_round_trip_tokens_across_blocks() {
        let mut t = Tiles::new(3);
        for n in 0..37 {
            t.push(&[n as f32, -(n as f32), 0.5 * n as f32]);
        }
        assert_eq!(t.len(), 37);
        assert_eq!(t.bytes(), 37 * 3 * CACHE_ELEMENT_BYTES);
        for n in [0, 15, 16, 36] {
            assert_eq!(t.token(n), vec![n as f32, -(n as f32), 0.5 * n as f32]);
        }
        // Evicting from the front keeps the rest in order, within and across blocks.
        let mut t = Tiles::new(2);
        for n in 0..150 {
            t.push(&[n as f32, 1.0]);
        }
        for (n, first) in [(3, 3), (62, 65), (2, 67)] {
            t.pop_front(n);
            assert_eq!((t.len(), t.token(0)[0]), (150 - first, first as f32));
        }
        assert_eq!(t.skip(), 3);
        assert_eq!(t.token(82), vec![149.0, 1.0]);
        t.push(&[150.0, 1.0]);
        assert_eq!(t.token(83), vec![150.0, 1.0]);
        assert_eq!(t.bytes(), 84 * 2 * CACHE_ELEMENT_BYTES);
        t.pop_front(84);
        assert!(t.is_empty());
    }
}
