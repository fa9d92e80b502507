//! The CPU decode kernel: one fused pass per stream and layer over a factor cache kept in host
//! memory, laid out so that every per-token operation runs across [`LANES`] tokens at once.
//!
//! Tokens are stored in blocks of [`LANES`], each block feature-major (`[width][LANES]`), so the
//! score of a block of rank-ρ tokens is a few broadcast multiply-adds over contiguous lanes:
//! `u_h = B_K,r · q_h` (or, with TPA query factors, `B_K,r·B_Qᵀ` first and then `A_Q` — FlashTPA's
//! order), then `s_h += A_K,r[h] ⊙ u_h`. Keys and values are never materialised. Softmax uses a
//! vectorisable `exp` in FlashDecoding's online form (one pass over the cache), and values
//! accumulate in [`FOLD`] partial sums per head and feature, reduced once at the end.
//! The kernel is written over [`pulp`]'s vectors, generic in their width: [`pulp::Arch::dispatch`]
//! compiles it for the widest instruction set the CPU has (AVX2/AVX-512), chosen at run time, and
//! every width computes the same bits. A chunk of up to three heads keeps its scores, weights and
//! softmax sums in registers for a whole pass over the cache; the common head sizes (16, 32) are
//! compiled as constants so that the loops over them unroll.
//!
//! While a block is computed, the next one is prefetched in parts spread over the work (`Ahead`).
//!
//! The last block of a group is padded to [`LANES`] tokens with zeros; the padded lanes get no
//! attention weight. Bytes are reported for the tokens held, as the cost model counts them.

use burn::tensor::{Device, Tensor};

use crate::cost::CACHE_ELEMENT_BYTES;
use crate::error::{Error, Result};

/// A tensor's values in host memory (row-major).
pub fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data().try_to_vec::<f32>().map_err(|e| Error::Input(format!("cannot read tensor data as f32: {e:?}")))
}

/// `f` applied in host memory to a copy of `x`'s values where `x` lives on burn's CPU backend
/// (with or without autodiff) as `f32`; `None` elsewhere, where the caller uses burn's own function.
/// For element-wise functions computed faster than burn's with its bits ([`crate::expf`]).
pub fn map_on_host<const D: usize>(x: &Tensor<D>, f: impl FnOnce(&mut [f32])) -> Option<Vec<f32>> {
    if x.device().inner() != Device::flex() {
        return None;
    }
    let mut values = x.to_data().try_into_vec::<f32>().ok()?;
    f(&mut values);
    Some(values)
}

/// Tokens per block.
pub const LANES: usize = 64;

/// Lanes of a value accumulator: a block's [`LANES`] weighted values fold into this many partial
/// sums (one AVX-512 register, two AVX2 ones), so the accumulators stay a quarter of a block's
/// size and each block loads and stores them once per head and feature, not once per lane group.
const FOLD: usize = 16;

type Folded = [f32; FOLD];

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

    /// Remove the `index`-th token (oldest first): the newer ones move one place towards the
    /// front in place (nothing is allocated; a block is freed once its last lane is gone), so a
    /// rule evicting a recent token pays for the tokens after it only.
    pub fn remove(&mut self, index: usize) {
        assert!(index < self.len, "cannot remove token {index} of {}", self.len);
        if index == 0 {
            return self.pop_front(1);
        }
        let (width, block) = (self.width, self.width * LANES);
        let at = |n: usize| (n / LANES) * block + n % LANES;
        let end = self.skip + self.len - 1;
        for n in self.skip + index..end {
            let (dst, src) = (at(n), at(n + 1));
            for f in 0..width {
                self.data[dst + f * LANES] = self.data[src + f * LANES];
            }
        }
        // The freed lane reads as padding again (zeros, as `push` leaves it).
        let last = at(end);
        (0..width).for_each(|f| self.data[last + f * LANES] = 0.0);
        self.len -= 1;
        if end.is_multiple_of(LANES) {
            self.data.truncate((end / LANES) * block);
        }
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

    /// Block `b`'s values, feature-major.
    fn block(&self, b: usize) -> &[f32] {
        let width = self.width * LANES;
        &self.data[b * width..(b + 1) * width]
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

/// Cached blocks per partial softmax state: [`attend`] splits a stream's cache into pieces of this
/// many blocks (4096 tokens), computes each piece's state on its own (side by side on several
/// threads when asked) and merges them in order, so the result does not depend on the threads.
pub const SPLIT_BLOCKS: usize = 64;

/// Cache bytes of a stream's layer from which each pass prefetches the next block while computing
/// one (`Ahead`): half a MiB, more than an L2 share keeps from one step to the next. Smaller
/// caches (PPO rollouts at L ≤ 2048, short requests) come from L2 or L3, where the hardware
/// prefetchers suffice and the extra instructions cost: with prefetching at any size, rollouts at
/// L = 128–2048 were 2–10 % slower (2026-12-04, exploratory runs).
pub const PREFETCH_BYTES: usize = 1 << 19;

/// Runs `f` on a worker thread of the decode pool (rayon's, built once with a thread per core), so
/// that the kernel's parallel parts — a long cache split across cores at batch 1, streams side by
/// side — start on the worker's own thread and the others steal from it, instead of each call
/// handing its work from an outside thread to the pool and sleeping until it is done (measured on
/// the 2-vCPU box: 10–20 µs per hand-off, against ~30 µs for a 16k-token `rank:1` layer split over
/// both cores). A decode loop — `ahr bench decode`, `generate` — calls this once around all its
/// steps; from inside a rayon worker, `f` runs where it is.
pub fn on_workers<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    match rayon::current_thread_index() {
        Some(_) => f(),
        None => match POOL
            .get_or_init(|| rayon::ThreadPoolBuilder::new().thread_name(|i| format!("ahr-decode-{i}")).build().ok())
        {
            Some(pool) => pool.install(f),
            None => f(),
        },
    }
}

/// Whether [`attend`] with `parallel` runs a stream holding `groups` on more than one thread (its
/// cache spans more than [`SPLIT_BLOCKS`] blocks).
pub fn splits(groups: &[&HostGroup]) -> bool {
    groups.iter().map(|g| g.tiles.blocks().count()).sum::<usize>() > SPLIT_BLOCKS
}

/// Attention of one stream's new token over its cached groups and itself.
///
/// Writes the output `[h, d_h]` into `out` and each head's log-sum-exp of its scores into `lse`
/// `[h]` (a key's weight is `exp(score − lse)`), and returns the statistics a rank policy
/// observes: attention entropy (nats) and maximum weight, both averaged over heads. With
/// `parallel`, the pieces of a long cache ([`SPLIT_BLOCKS`]) run on rayon's threads (one stream
/// across every core); the result is the same either way.
pub fn attend(
    dims: HeadDims,
    groups: &[&HostGroup],
    q: StepQuery<'_>,
    out: &mut [f32],
    lse: &mut [f32],
    parallel: bool,
) -> [f32; 2] {
    use rayon::prelude::*;
    let pieces: Vec<Piece> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| (0..group.tiles.blocks().count()).map(move |b| (g, b)))
        .collect();
    let prefetch = groups.iter().map(|g| g.tiles.bytes()).sum::<usize>() >= PREFETCH_BYTES;
    let chunks: Vec<&[Piece]> = match pieces.is_empty() {
        true => vec![&[]],
        false => pieces.chunks(SPLIT_BLOCKS).collect(),
    };
    let part = |(i, chunk): (usize, &&[Piece])| {
        pulp::Arch::new().dispatch(Attend {
            dims,
            groups,
            pieces: chunk,
            q,
            own: i == 0,
            prefetch,
            span_bytes: SPAN_BYTES,
        })
    };
    let parts: Vec<Partial> = match parallel && splits(groups) {
        true => chunks.par_iter().enumerate().map(part).collect(),
        false => chunks.iter().enumerate().map(part).collect(),
    };
    finish(dims, parts, q, out, lse)
}

/// [`attend`] for one stream with its row of policy statistics `stats` `[3 + h]`: attention
/// entropy, maximum weight and the L2 norm of the token's exact key (written only `with_stats`),
/// then each head's log-sum-exp (always) — the row both decode steps report per stream and layer.
pub fn attend_stream(
    dims: HeadDims,
    groups: &[&HostGroup],
    q: StepQuery<'_>,
    out: &mut [f32],
    stats: &mut [f32],
    with_stats: bool,
    parallel: bool,
) {
    let (head, lse) = stats.split_at_mut(3);
    let [entropy, max_weight] = attend(dims, groups, q, out, lse, parallel);
    if with_stats {
        let key_norm = q.key.iter().map(|x| x * x).sum::<f32>().sqrt();
        head.copy_from_slice(&[entropy, max_weight, key_norm]);
    }
}

/// A block of a group: (group index, block index).
type Piece = (usize, usize);

/// [`attend`]'s arguments for one piece of the cache, so that [`pulp`] can compile the whole
/// kernel (everything below is `#[inline(always)]`) once per instruction set.
#[derive(Clone, Copy)]
struct Attend<'g, 'q> {
    dims: HeadDims,
    groups: &'g [&'g HostGroup],
    pieces: &'g [Piece],
    q: StepQuery<'q>,
    /// Whether this piece holds the token itself (the first one does).
    own: bool,
    /// Whether to prefetch each next block ([`PREFETCH_BYTES`]).
    prefetch: bool,
    /// Bytes of a span of blocks that all passes read before the next ([`SPAN_BYTES`]).
    span_bytes: usize,
}

impl pulp::WithSimd for Attend<'_, '_> {
    type Output = Partial;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Partial {
        // The common head sizes as constants, so that the compiler unrolls the loops over them.
        let dims = self.dims;
        match dims.head_dim {
            16 => piece_for_width(simd, Attend { dims: HeadDims { head_dim: 16, ..dims }, ..self }),
            32 => piece_for_width(simd, Attend { dims: HeadDims { head_dim: 32, ..dims }, ..self }),
            _ => piece_for_width(simd, self),
        }
    }
}

/// [`attend_piece`] with a block's lanes as N vectors of the instruction set's width and a folded
/// accumulator as FV.
#[inline(always)]
fn piece_for_width<S: pulp::Simd>(simd: S, piece: Attend<'_, '_>) -> Partial {
    match S::F32_LANES {
        16 => attend_piece::<S, 4, 1>(simd, piece),
        8 => attend_piece::<S, 8, 2>(simd, piece),
        4 => attend_piece::<S, 16, 4>(simd, piece),
        _ => attend_piece::<S, 64, 16>(simd, piece),
    }
}

/// Running softmax of one head (FlashDecoding's online form): weights relative to the largest
/// score seen so far, rescaled when it grows; the sums folded to [`FOLD`] lanes like the values.
struct Running {
    /// Largest score so far.
    max: f32,
    /// Σ e per folded lane, e = exp(s − max).
    z: Folded,
    /// Σ e·(s − max) per folded lane (for the entropy).
    zs: Folded,
    /// The weight of the token itself (0 in every piece but the first).
    own: f32,
    /// Its score.
    own_score: f32,
}

impl Running {
    /// The token itself (score `own`), counted with weight `present` (1 or 0): every piece starts
    /// from the same finite reference, so merging never meets −∞.
    fn new(own: f32, present: bool) -> Self {
        Self { max: own, z: [0.0; FOLD], zs: [0.0; FOLD], own: f32::from(u8::from(present)), own_score: own }
    }

    /// Raise the reference to `max`, rescaling what is accumulated (values in `acc`).
    fn raise(&mut self, max: f32, acc: &mut [Folded]) {
        let (shift, alpha) = (self.max - max, exp_lane(self.max - max));
        for l in 0..FOLD {
            // Σ e'·(s − max') = α·(Σ e·(s − max) + (max − max')·Σ e).
            self.zs[l] = alpha * (self.zs[l] + shift * self.z[l]);
            self.z[l] *= alpha;
        }
        self.own *= alpha;
        acc.iter_mut().flatten().for_each(|x| *x *= alpha);
        self.max = max;
    }
}

/// The softmax state of one piece of the cache: per head its running sums, and the values
/// accumulated `acc[hh·d_h + i]` in [`FOLD`] partial sums.
struct Partial {
    heads: Vec<Running>,
    acc: Vec<Folded>,
}

/// One block's [`LANES`] as `N` vectors of the instruction set `S`.
type Vecs<S, const N: usize> = [<S as pulp::Simd>::f32s; N];

/// Heads handled together in one pass over the cache, at most: their scores, softmax sums and
/// weights stay in registers (three with 16-lane vectors, one with narrower ones).
const CHUNK: usize = 3;

/// The softmax state of the blocks `pieces` (and, with `own`, the token itself), one chunk of
/// heads at a time ([`heads_pass`]). The per-lane arithmetic — and so every bit of the result —
/// is the same for every vector width.
#[inline(always)]
fn attend_piece<S: pulp::Simd, const N: usize, const FV: usize>(simd: S, piece: Attend<'_, '_>) -> Partial {
    let Attend { dims, groups, pieces, q, own, prefetch, span_bytes } = piece;
    assert!(N * S::F32_LANES == LANES && FV * S::F32_LANES == FOLD, "{} lanes per vector", S::F32_LANES);
    let HeadDims { heads: h, head_dim: dh, .. } = dims;
    let mut heads: Vec<Running> = (0..h)
        .map(|hh| Running::new(dot(&q.query[hh * dh..(hh + 1) * dh], &q.key[hh * dh..(hh + 1) * dh]), own))
        .collect();
    let mut acc = vec![[0f32; FOLD]; h * dh];
    // Equal chunks of at most CHUNK heads. With factor groups, one pass reads a block's shared
    // factor rows once for all of them (a pass per head read them once per head: on a core whose
    // L2 feeds L1 32 bytes a cycle, that traffic bounded a rank-1 cache more than arithmetic).
    // Dense heads read rows of their own, so a pass per head costs no extra traffic: there the
    // chunk is what the registers hold.
    let shared = pieces.iter().any(|&(g, _)| matches!(groups[g].kind, HostKind::Factors { .. }));
    let most = if shared { CHUNK } else { (12 / N).clamp(1, CHUNK) };
    let chunk = h.div_ceil(h.div_ceil(most));
    // With factor blocks and more than one pass, every pass reads every block's shared rows: the
    // passes take the piece a span at a time, so that the later ones find the span in L2 (a whole
    // piece of a realistic model's factors — 8 heads × 64 at rank 2, 4.7 MB — is read from memory
    // again by each pass otherwise). Each head still meets the blocks in order: the same bits.
    let span_bytes = if shared && chunk < h { span_bytes } else { usize::MAX };
    let spans = spans(groups, pieces, span_bytes);
    // With TPA's query factors, a factor block's keys are first contracted with the m rows of
    // `B_Q` (FlashTPA's order): the first pass over a span keeps what it contracted, one row of
    // vectors per (block, rank, m), and the later passes read it back instead of contracting
    // again (which tripled the keys' multiply-adds at 8 heads). One pass keeps one block's.
    let rows = match q.head_mix {
        Some(_) => q.rows.len() / dh,
        None => 0,
    };
    let contracted_rows = |span: &std::ops::Range<usize>| -> usize {
        let rank = |&(g, _): &Piece| match groups[g].kind {
            HostKind::Factors { rank } => rank,
            HostKind::Dense => 0,
        };
        match chunk < h {
            true => pieces[span.clone()].iter().map(rank).sum::<usize>() * rows,
            false => pieces[span.clone()].iter().map(rank).max().unwrap_or(0) * rows,
        }
    };
    let most_rows = spans.iter().map(contracted_rows).max().unwrap_or(0);
    let mut contracted: Vec<Vecs<S, N>> = vec![[simd.splat_f32s(0.0); N]; most_rows];
    for span in spans {
        for c0 in (0..h).step_by(chunk) {
            let pass = Pass { dims, groups, pieces, span: span.clone(), q: &q, c0, prefetch, keep: chunk < h };
            let (heads, acc, t) = (&mut heads[c0..], &mut acc[c0 * dh..], &mut contracted[..]);
            // Without query factors the pass compiles without the bookkeeping of `contracted`.
            match (chunk.min(h - c0), rows > 0) {
                (1, false) => heads_pass::<S, N, FV, 1, false>(simd, pass, t, heads, acc),
                (2, false) => heads_pass::<S, N, FV, 2, false>(simd, pass, t, heads, acc),
                (_, false) => heads_pass::<S, N, FV, 3, false>(simd, pass, t, heads, acc),
                (1, true) => heads_pass::<S, N, FV, 1, true>(simd, pass, t, heads, acc),
                (2, true) => heads_pass::<S, N, FV, 2, true>(simd, pass, t, heads, acc),
                (_, true) => heads_pass::<S, N, FV, 3, true>(simd, pass, t, heads, acc),
            }
        }
    }
    Partial { heads, acc }
}

/// Cache bytes of a span of blocks that every pass over a piece reads before the next span
/// ([`attend_piece`]): a quarter of a 1 MiB L2, so the span stays there between passes.
const SPAN_BYTES: usize = 1 << 18;

/// `pieces` cut into runs of consecutive blocks of at most `most` bytes (at least one block each).
fn spans(groups: &[&HostGroup], pieces: &[Piece], most: usize) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (j, &(g, _)) in pieces.iter().enumerate() {
        let block = groups[g].tiles.width() * LANES * size_of::<f32>();
        if j > start && bytes + block > most {
            spans.push(start..j);
            (start, bytes) = (j, 0);
        }
        bytes += block;
    }
    spans.push(start..pieces.len());
    spans
}

/// What one pass over a span of a piece reads: the cache, the query, the first head of the chunk.
#[derive(Clone)]
struct Pass<'a, 'q> {
    dims: HeadDims,
    groups: &'a [&'a HostGroup],
    pieces: &'a [Piece],
    /// The blocks of `pieces` this pass computes (the block after the last one is prefetched).
    span: std::ops::Range<usize>,
    q: &'a StepQuery<'q>,
    c0: usize,
    prefetch: bool,
    /// Whether the passes over the span share what the first one contracted with `B_Q`'s rows
    /// (one block after another in `contracted`), or each block overwrites the last.
    keep: bool,
}

/// Heads `c0 .. c0 + C` over every block of the piece: per block the scores `s_h`, the running
/// softmax (raised to the block's largest score when it grows) and `acc[h][i] += Σ_lanes e_h ⊙
/// V[h, i]` folded to [`FOLD`] partial sums. The softmax state lives in registers for the whole
/// pass; `heads` and `acc` start at head `c0`, `contracted` holds the factor keys contracted with
/// TPA's query rows (written by the span's first pass, read by the others: [`Pass::keep`]).
#[inline(always)]
fn heads_pass<S: pulp::Simd, const N: usize, const FV: usize, const C: usize, const MIX: bool>(
    simd: S,
    pass: Pass<'_, '_>,
    contracted: &mut [Vecs<S, N>],
    heads: &mut [Running],
    acc: &mut [Folded],
) {
    let Pass { dims, groups, pieces, span, q, c0, prefetch, keep } = pass;
    let m = q.head_mix.map_or(0, |_| q.rows.len() / dims.head_dim);
    let mut t0 = 0;
    let HeadDims { heads: h, kv_heads: kvh, head_dim: dh } = dims;
    let (guard, cap) = (simd.splat_f32s(-88.0), simd.splat_f32s(-87.0));
    let mut max: [f32; C] = std::array::from_fn(|c| heads[c].max);
    let mut own: [f32; C] = std::array::from_fn(|c| heads[c].own);
    // The sums so far (zero before a piece's first span).
    let (mut z, mut zs) = ([[simd.splat_f32s(0.0); FV]; C], [[simd.splat_f32s(0.0); FV]; C]);
    for c in 0..C {
        z[c].copy_from_slice(pulp::bytemuck::cast_slice(&heads[c].z));
        zs[c].copy_from_slice(pulp::bytemuck::cast_slice(&heads[c].zs));
    }
    // Prefetch slots of a block: one per exp vector step (the first run of what the pass reads of
    // the next block), then one per value row (the second).
    let exp_steps = C * N.div_ceil(FV);
    for j in span {
        let (g, b) = pieces[j];
        // What this pass will read of the piece's next block, fetched into L1 while this one is
        // computed (below).
        let next = match pieces.get(j + 1) {
            Some(&(g, b)) if prefetch => pass_rows(dims, groups[g], b, c0, C),
            _ => [&[][..]; 2],
        };
        let next = Ahead::new(next, [exp_steps, dh]);
        let g = groups[g];
        // The block as one row of N vectors per feature.
        let data: &[Vecs<S, N>] = pulp::bytemuck::cast_slice(g.tiles.block(b));
        let mut s = match g.kind {
            HostKind::Factors { rank } if MIX => {
                let t = &mut contracted[t0..t0 + rank * m];
                t0 += if keep { rank * m } else { 0 };
                scores::<S, N, C>(simd, dims, g.kind, data, q, c0, t)
            }
            _ => scores::<S, N, C>(simd, dims, g.kind, data, q, c0, &mut []),
        };
        // Lanes holding no token: evicted ones at the front of the first block, padding at the
        // end of the last.
        let lo = if b == 0 { g.tiles.skip() } else { 0 };
        let hi = (g.tiles.skip() + g.tiles.len() - b * LANES).min(LANES);
        if (lo, hi) != (0, LANES) {
            mask_lanes(simd, &mut s, (lo, hi));
        }
        // The running softmax: raise each head's reference to the block's largest score, then
        // turn the scores into weights e = exp(s − max) and add them to the sums.
        for c in 0..C {
            let mut top = s[c][0];
            for k in 1..N {
                top = simd.max_f32s(top, s[c][k]);
            }
            let top = simd.reduce_max_f32s(top);
            if top > max[c] {
                let (shift, alpha) = (max[c] - top, exp_lane(max[c] - top));
                let (shift, a) = (simd.splat_f32s(shift), simd.splat_f32s(alpha));
                for f in 0..FV {
                    // Σ e'·(s − max') = α·(Σ e·(s − max) + (max − max')·Σ e).
                    zs[c][f] = simd.mul_f32s(a, simd.add_f32s(zs[c][f], simd.mul_f32s(shift, z[c][f])));
                    z[c][f] = simd.mul_f32s(z[c][f], a);
                }
                for slot in &mut acc[c * dh..(c + 1) * dh] {
                    let slot: &mut [S::f32s] = pulp::bytemuck::cast_slice_mut(slot);
                    for x in slot {
                        *x = simd.mul_f32s(*x, a);
                    }
                }
                own[c] *= alpha;
                max[c] = top;
            }
            let m = simd.splat_f32s(max[c]);
            // Outer steps of FV vectors, so that each fold lane's sums stay in a register (with
            // `k % FV` over a loop the compiler does not unroll, they went through the stack).
            for k0 in (0..N).step_by(FV) {
                next.fetch(0, c * N.div_ceil(FV) + k0 / FV);
                for f in 0..FV {
                    let k = k0 + f;
                    let d = simd.sub_f32s(s[c][k], m);
                    let e = exp_vec(simd, d, cap);
                    z[c][f] = simd.add_f32s(z[c][f], e);
                    // A padded lane (d = −∞, e = 0) contributes nothing, and not 0 · (−∞) = NaN.
                    zs[c][f] = simd.mul_add_f32s(e, simd.max_f32s(d, guard), zs[c][f]);
                    s[c][k] = e;
                }
            }
        }
        // Values: acc[h][i] += Σ_lanes w_h ⊙ V[h, i].
        match g.kind {
            HostKind::Factors { rank } => {
                let stride = h + dh;
                let values = rank * stride;
                let inv_rank = simd.splat_f32s(1.0 / rank as f32);
                for r in 0..rank {
                    // w_h = e_h ⊙ A_V,r[h] (/ ρ), then acc[h][i] += w_h ⊙ B_V,r[i].
                    let mut w = s;
                    for (c, w) in w.iter_mut().enumerate() {
                        let a = &data[values + r * stride + c0 + c];
                        for k in 0..N {
                            w[k] = simd.mul_f32s(w[k], a[k]);
                            if rank > 1 {
                                w[k] = simd.mul_f32s(w[k], inv_rank);
                            }
                        }
                    }
                    for i in 0..dh {
                        if r == 0 {
                            next.fetch(1, i);
                        }
                        let x = &data[values + r * stride + h + i];
                        spread_shared::<S, N, FV, C>(simd, &w, x, acc, i, dh);
                    }
                }
            }
            HostKind::Dense => {
                for i in 0..dh {
                    next.fetch(1, i);
                    for (c, w) in s.iter().enumerate() {
                        let x = &data[kvh * dh + dims.kv_offset(c0 + c) + i];
                        spread::<S, N, FV>(simd, w, x, &mut acc[c * dh + i]);
                    }
                }
            }
        }
    }
    for c in 0..C {
        let run = &mut heads[c];
        run.max = max[c];
        run.own = own[c];
        pulp::bytemuck::cast_slice_mut::<f32, S::f32s>(&mut run.z).copy_from_slice(&z[c]);
        pulp::bytemuck::cast_slice_mut::<f32, S::f32s>(&mut run.zs).copy_from_slice(&zs[c]);
    }
}

/// What a pass reads of the block after the one being computed, prefetched in even parts spread
/// over the block's work: its first run over the exp steps, its second over the value rows.
///
/// Streamed from memory, with the hardware prefetchers alone a `rank:1` cache was read at about
/// half the bandwidth a dense one was (measured on the 2-vCPU AMD box: 15 against 25–31 GB/s; they
/// run little ahead of a loop that does as much arithmetic per cache line as a factor block does);
/// fetching the whole next block in one burst at the start of each block fixed that but made
/// caches held in L3 up to twice as slow (the burst fills the miss queue). A part at each exp step
/// and each value row keeps a block ahead without the burst; each part is one slice, so a slot
/// costs a few instructions besides its prefetches. Only a hint: the results are the same bits
/// with or without it (x86-64 only; elsewhere nothing is prefetched).
#[derive(Clone, Copy)]
struct Ahead<'a> {
    /// The two runs to fetch …
    runs: [&'a [f32]; 2],
    /// … each in parts of this many values (whole cache lines).
    part: [usize; 2],
}

impl<'a> Ahead<'a> {
    const LINE: usize = 64 / size_of::<f32>();

    /// Run `k` of `runs` in `parts[k]` parts (the last ones may be empty).
    #[inline(always)]
    fn new(runs: [&'a [f32]; 2], parts: [usize; 2]) -> Self {
        let part = |k: usize| runs[k].len().div_ceil(Self::LINE).div_ceil(parts[k].max(1)) * Self::LINE;
        Self { runs, part: [part(0), part(1)] }
    }

    /// Prefetch the cache lines of part `i` of run `k`.
    #[inline(always)]
    fn fetch(self, k: usize, i: usize) {
        self.lines(k, i).iter().step_by(Self::LINE).for_each(prefetch_line);
    }

    /// Part `i` of run `k`: the values whose cache lines it fetches (empty past the run's end).
    #[inline(always)]
    fn lines(self, k: usize, i: usize) -> &'a [f32] {
        let (run, part) = (self.runs[k], self.part[k]);
        let from = (i * part).min(run.len());
        &run[from..(from + part).min(run.len())]
    }
}

/// The rows of block `b` of `group` that a pass over heads `c0 .. c0 + chunk` reads, as two runs: a
/// dense block's keys and values of those heads; the two halves of a factor block in the first
/// pass (its `B` rows are every head's), nothing in later ones (the first pass read it a span
/// ago: in L2).
#[inline(always)]
fn pass_rows(dims: HeadDims, group: &HostGroup, b: usize, c0: usize, chunk: usize) -> [&[f32]; 2] {
    let block = group.tiles.block(b);
    match group.kind {
        HostKind::Factors { .. } if c0 == 0 => {
            let half = (block.len() / 2).next_multiple_of(Ahead::LINE).min(block.len());
            let (first, second) = block.split_at(half);
            [first, second]
        }
        HostKind::Factors { .. } => [&[]; 2],
        HostKind::Dense => {
            let heads = (dims.kv_offset(c0) * LANES)..((dims.kv_offset(c0 + chunk - 1) + dims.head_dim) * LANES);
            let values = dims.kv_heads * dims.head_dim * LANES;
            [&block[heads.clone()], &block[values + heads.start..values + heads.end]]
        }
    }
}

/// A hint to bring the cache line holding `x` into L1.
#[inline(always)]
fn prefetch_line(x: &f32) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: a prefetch is only a hint: it reads nothing into the program, never faults, and
    // `x` is a valid reference anyway; SSE, which it needs, is part of every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const f32).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Scores `s_h` of one block for heads `c0 .. c0 + C`: `q_h · K_h` for dense keys; for rank-ρ
/// factors `Σ_r A_K,r[h] ⊙ (B_K,r · q_h) / ρ`, or with TPA query factors FlashTPA's order
/// (`t_j = B_K,r · B_Q,j` once, then `Σ_j A_Q[h, j] t_j`): the pass over heads 0.. computes the
/// `t` into `contracted` `[ρ·m]`, later passes read them from there.
#[inline(always)]
fn scores<S: pulp::Simd, const N: usize, const C: usize>(
    simd: S,
    dims: HeadDims,
    kind: HostKind,
    data: &[Vecs<S, N>],
    q: &StepQuery<'_>,
    c0: usize,
    contracted: &mut [Vecs<S, N>],
) -> [Vecs<S, N>; C] {
    let HeadDims { heads: h, head_dim: dh, .. } = dims;
    let zero = simd.splat_f32s(0.0);
    match kind {
        HostKind::Dense => {
            let feats = std::array::from_fn(|c| dims.kv_offset(c0 + c));
            contract_each::<S, N, C>(simd, data, head_rows(q.query, c0, dh), feats, dh)
        }
        HostKind::Factors { rank } => {
            let stride = h + dh;
            let mut s = [[zero; N]; C];
            for r in 0..rank {
                let keys = r * stride + h;
                let u: [Vecs<S, N>; C] = match q.head_mix {
                    None => contract_each::<S, N, C>(simd, data, head_rows(q.rows, c0, dh), [keys; C], dh),
                    Some(mix) => {
                        let m = contracted.len() / rank;
                        let contracted = &mut contracted[r * m..(r + 1) * m];
                        if c0 == 0 {
                            for (j, t) in contracted.iter_mut().enumerate() {
                                [*t] =
                                    contract_each::<S, N, 1>(simd, data, [&q.rows[j * dh..(j + 1) * dh]], [keys], dh);
                            }
                        }
                        let mut u = [[zero; N]; C];
                        for (c, u) in u.iter_mut().enumerate() {
                            for (j, t) in contracted.iter().enumerate() {
                                let a = simd.splat_f32s(mix[(c0 + c) * m + j]);
                                for k in 0..N {
                                    u[k] = simd.mul_add_f32s(a, t[k], u[k]);
                                }
                            }
                        }
                        u
                    }
                };
                for c in 0..C {
                    let a = &data[r * stride + c0 + c];
                    for k in 0..N {
                        s[c][k] = simd.mul_add_f32s(a[k], u[c][k], s[c][k]);
                    }
                }
            }
            if rank > 1 {
                let inv_rank = simd.splat_f32s(1.0 / rank as f32);
                for x in s.iter_mut().flatten() {
                    *x = simd.mul_f32s(*x, inv_rank);
                }
            }
            s
        }
    }
}

/// Whether C heads' sums over a block (`C·N` vectors) fit the registers with room to spare.
#[inline(always)]
const fn in_registers<const N: usize, const C: usize>() -> bool {
    N * C <= 12
}

/// Rows `c0 .. c0 + C` of `dh` coefficients each.
#[inline(always)]
fn head_rows<const C: usize>(rows: &[f32], c0: usize, dh: usize) -> [&[f32]; C] {
    std::array::from_fn(|c| &rows[(c0 + c) * dh..(c0 + c + 1) * dh])
}

/// `dst[c] = Σ_i rows[c][i] · block[feats[c] + i]`: each row with its own block rows (dense keys),
/// or every row with the same ones (`feats` all equal: factor keys, each block row read once).
#[inline(always)]
fn contract_each<S: pulp::Simd, const N: usize, const C: usize>(
    simd: S,
    block: &[Vecs<S, N>],
    rows: [&[f32]; C],
    feats: [usize; C],
    dh: usize,
) -> [Vecs<S, N>; C] {
    let mut dst = [[simd.splat_f32s(0.0); N]; C];
    if in_registers::<N, C>() {
        for i in 0..dh {
            for c in 0..C {
                let (a, x) = (simd.splat_f32s(rows[c][i]), &block[feats[c] + i]);
                for k in 0..N {
                    dst[c][k] = simd.mul_add_f32s(a, x[k], dst[c][k]);
                }
            }
        }
    } else {
        for k in 0..N {
            let mut d = [simd.splat_f32s(0.0); C];
            for i in 0..dh {
                for c in 0..C {
                    d[c] = simd.mul_add_f32s(simd.splat_f32s(rows[c][i]), block[feats[c] + i][k], d[c]);
                }
            }
            (0..C).for_each(|c| dst[c][k] = d[c]);
        }
    }
    dst
}

/// [`spread`] of C heads' weights `w` over the same block row `x` (a factor row every head
/// reads), into `acc[c·d_h + i]`: the row is loaded once per vector for all heads, and each
/// head's sums stay in registers across the row.
#[inline(always)]
fn spread_shared<S: pulp::Simd, const N: usize, const FV: usize, const C: usize>(
    simd: S,
    w: &[Vecs<S, N>; C],
    x: &Vecs<S, N>,
    acc: &mut [Folded],
    i: usize,
    dh: usize,
) {
    let mut sum: [[S::f32s; FV]; C] = std::array::from_fn(|c| {
        let acc: &[S::f32s] = pulp::bytemuck::cast_slice(&acc[c * dh + i]);
        acc.try_into().expect("a folded accumulator is FV vectors")
    });
    for k in 0..N {
        let x = x[k];
        for c in 0..C {
            sum[c][k % FV] = simd.mul_add_f32s(w[c][k], x, sum[c][k % FV]);
        }
    }
    for c in 0..C {
        pulp::bytemuck::cast_slice_mut::<f32, S::f32s>(&mut acc[c * dh + i]).copy_from_slice(&sum[c]);
    }
}

/// `acc += Σ_lanes w ⊙ x`, the lanes folded to [`FOLD`] partial sums (lane l of the fold sums
/// lanes l, l + FOLD, … in that order, whatever the vector width).
#[inline(always)]
fn spread<S: pulp::Simd, const N: usize, const FV: usize>(simd: S, w: &Vecs<S, N>, x: &Vecs<S, N>, acc: &mut Folded) {
    let acc: &mut [S::f32s] = pulp::bytemuck::cast_slice_mut(acc);
    let mut sum: [S::f32s; FV] = acc.try_into().expect("a folded accumulator is FV vectors");
    for k in 0..N {
        sum[k % FV] = simd.mul_add_f32s(w[k], x[k], sum[k % FV]);
    }
    acc.copy_from_slice(&sum);
}

/// Scores of the lanes outside `lo..hi` set to [`PAD`] (a block with evicted or padded lanes).
#[inline(always)]
fn mask_lanes<S: pulp::Simd, const N: usize, const C: usize>(
    simd: S,
    s: &mut [Vecs<S, N>; C],
    (lo, hi): (usize, usize),
) {
    let (lo, hi, pad) = (simd.splat_f32s(lo as f32), simd.splat_f32s(hi as f32), simd.splat_f32s(PAD));
    let index: Vecs<S, N> = pulp::bytemuck::pod_read_unaligned(pulp::bytemuck::cast_slice(&LANE_INDEX));
    for k in 0..N {
        let keep = simd.and_m32s(simd.greater_than_or_equal_f32s(index[k], lo), simd.less_than_f32s(index[k], hi));
        for s in s.iter_mut() {
            s[k] = simd.select_f32s(keep, s[k], pad);
        }
    }
}

/// Each lane's index in its block.
const LANE_INDEX: [f32; LANES] = {
    let mut index = [0.0; LANES];
    let mut l = 0;
    while l < LANES {
        index[l] = l as f32;
        l += 1;
    }
    index
};

/// Merge the pieces' states in order (each raised to the common largest score) and write the
/// output, the log-sum-exps and the statistics [`attend`] returns.
fn finish(dims: HeadDims, mut parts: Vec<Partial>, q: StepQuery<'_>, out: &mut [f32], lse: &mut [f32]) -> [f32; 2] {
    let HeadDims { heads: h, head_dim: dh, .. } = dims;
    let (mut entropy, mut max_weight) = (0.0, 0.0);
    for hh in 0..h {
        let top = parts.iter().map(|p| p.heads[hh].max).fold(f32::NEG_INFINITY, f32::max);
        let (mut z, mut zs, mut own) = (0.0, 0.0, 0.0);
        let mut values = vec![0f32; dh];
        for part in &mut parts {
            let run = &mut part.heads[hh];
            let acc = &mut part.acc[hh * dh..(hh + 1) * dh];
            if run.max < top {
                run.raise(top, acc);
            }
            z += run.z.iter().sum::<f32>();
            zs += run.zs.iter().sum::<f32>();
            own += run.own;
            for (v, a) in values.iter_mut().zip(acc.iter()) {
                *v += a.iter().sum::<f32>();
            }
        }
        let own_score = parts[0].heads[hh].own_score;
        let (z, zs) = (z + own, zs + own * (own_score - top));
        for i in 0..dh {
            out[hh * dh + i] = (values[i] + own * q.value[hh * dh + i]) / z;
        }
        // H = log Z − Σ e·(s − max) / Z; the largest weight is e⁰ / Z.
        entropy += z.ln() - zs / z;
        lse[hh] = top + z.ln();
        max_weight += 1.0 / z;
    }
    [entropy / h as f32, max_weight / h as f32]
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// [`exp_lane`] on a vector, operation for operation (so the bits agree with it); `cap` is −87.
#[inline(always)]
fn exp_vec<S: pulp::Simd>(simd: S, x: S::f32s, cap: S::f32s) -> S::f32s {
    // No closures here: pulp compiles only inlined functions with the instruction set.
    let xc = simd.max_f32s(x, cap);
    let shifted = simd.add_f32s(simd.mul_f32s(xc, simd.splat_f32s(EXP_LOG2E)), simd.splat_f32s(EXP_SHIFT));
    let n = simd.sub_f32s(shifted, simd.splat_f32s(EXP_SHIFT));
    let r = simd.sub_f32s(
        simd.sub_f32s(xc, simd.mul_f32s(n, simd.splat_f32s(EXP_LN2_HI))),
        simd.mul_f32s(n, simd.splat_f32s(EXP_LN2_LO)),
    );
    let mut p = simd.splat_f32s(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = simd.add_f32s(simd.mul_f32s(p, r), simd.splat_f32s(c));
    }
    let y = simd.add_f32s(simd.add_f32s(simd.mul_f32s(simd.mul_f32s(p, r), r), r), simd.splat_f32s(1.0));
    let bits = simd.sub_u32s(simd.transmute_u32s_f32s(shifted), simd.splat_u32s(EXP_SHIFT.to_bits()));
    let bits = simd.add_u32s(bits, simd.splat_u32s(127));
    let scale = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(bits, simd.splat_u32s(23)));
    simd.select_f32s(simd.greater_than_or_equal_f32s(x, cap), simd.mul_f32s(y, scale), simd.splat_f32s(0.0))
}

/// `exp(x)` for `x ≤ 0` (Cephes' range reduction and degree-5 polynomial, relative error below
/// 2·10⁻⁷), exactly 0 below −87 and for −∞; branch-free so the lanes vectorise.
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let xc = x.max(-87.0);
    let shifted = xc * EXP_LOG2E + EXP_SHIFT;
    let n = shifted - EXP_SHIFT;
    let r = xc - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |p, &c| p * r + c);
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((shifted.to_bits().wrapping_sub(EXP_SHIFT.to_bits()).wrapping_add(127)) << 23);
    // × 0 below the range (and for −∞ or NaN), as a multiply so that no lane branches.
    y * scale * f32::from(u8::from(x >= -87.0))
}

const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · EXP_LN2_HI` is exact.
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// Rounds `x·log2(e)` to the nearest integer n when added (1.5·2²³: n then sits in the low
/// mantissa bits), which needs no rounding instruction.
const EXP_SHIFT: f32 = 12_582_912.0;
/// The polynomial's coefficients, highest degree first (Horner).
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// What a decode step's next-token distribution says, per stream: the log-sum-exp of its logits
/// (a token's log-probability is `logit − lse`), the entropy of the softmax (nats) and the most
/// likely token (the first of equal logits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Predictive {
    /// `log Σ exp(logit)`.
    pub lse: f32,
    /// `−Σ p log p`.
    pub entropy: f32,
    /// `argmax logit`.
    pub argmax: usize,
}

/// [`Predictive`] of each row of `logits` `[n, vocab]`, with the vectorised `exp` of the decode
/// kernel (a rollout step used to spend a third of its time in the scalar `exp` of a tensor
/// log-softmax over the vocabulary, twice).
pub fn predictive(logits: &[f32], vocab: usize) -> Vec<Predictive> {
    pulp::Arch::new().dispatch(Softmaxes { logits, vocab })
}

/// [`predictive`]'s arguments, for [`pulp`]'s dispatch.
struct Softmaxes<'a> {
    logits: &'a [f32],
    vocab: usize,
}

impl pulp::WithSimd for Softmaxes<'_> {
    type Output = Vec<Predictive>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<Predictive> {
        // A loop, not `.map(predictive_row)`: a function passed by name is compiled on its own,
        // without this function's instruction set.
        let mut out = Vec::with_capacity(self.logits.len() / self.vocab.max(1));
        for row in self.logits.chunks(self.vocab) {
            out.push(predictive_row(row));
        }
        out
    }
}

#[inline(always)]
fn predictive_row(row: &[f32]) -> Predictive {
    let (chunks, tail) = row.as_chunks::<ACC>();
    let mut top = [f32::NEG_INFINITY; ACC];
    for c in chunks {
        for i in 0..ACC {
            top[i] = top[i].max(c[i]);
        }
    }
    let max = tail.iter().chain(&top).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let argmax = row.iter().position(|&x| x == max).unwrap_or(0);
    // Σ e and Σ e·(x − max), e = exp(x − max): H = log Z − Σ e·(x − max) / Z.
    let (mut z, mut zs) = ([0f32; ACC], [0f32; ACC]);
    for c in chunks {
        for i in 0..ACC {
            let d = c[i] - max;
            let e = exp_lane(d);
            z[i] += e;
            zs[i] += e * d.max(-88.0);
        }
    }
    let (mut z_tail, mut zs_tail) = (0f32, 0f32);
    for &x in tail {
        let d = x - max;
        let e = exp_lane(d);
        z_tail += e;
        zs_tail += e * d.max(-88.0);
    }
    let z = z.iter().sum::<f32>() + z_tail;
    let zs = zs.iter().sum::<f32>() + zs_tail;
    Predictive { lse: max + z.ln(), entropy: z.ln() - zs / z, argmax }
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
    /// `[B, T]`: 1 for keys stored (visible to later queries until `until`).
    pub stored: &'a [f32],
    /// `[B, T]`: the first query that no longer sees each key; `None`: none leaves.
    pub until: Option<&'a [usize]>,
    /// Demoted tokens' later keys and values (`[B, T, h, d_h]`) and per key `[B, T]` the first
    /// query that sees it in its later form.
    pub late: Option<(&'a [f32], &'a [f32], &'a [usize])>,
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
///
/// Blocks of [`KEYS`] earlier keys that no key of is visible to a query are skipped: their scores,
/// weights and values would add exact zeros to sums that are nonzero or +0 already, so the result is
/// the same bits with or without the skipping (a test holds them together). Where a cache keeps a
/// few percent of the tokens — short windows and a few long-kept ones, as the judge's fits and the
/// policies on long text do — most blocks hold no visible key.
pub fn masked_attention(x: &MaskedInputs<'_>) -> Vec<f32> {
    pulp::Arch::new().dispatch(Masked(x, true))
}

/// [`masked_attention`]'s argument, for [`pulp`]'s dispatch, and whether to skip blocks without
/// visible keys.
struct Masked<'a, 'b>(&'a MaskedInputs<'b>, bool);

impl pulp::WithSimd for Masked<'_, '_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
        masked_inner(simd, self.0, self.1)
    }
}

/// Eight independent partial sums (a reduction the compiler can keep in vector registers).
const ACC: usize = 8;

#[inline(always)]
fn masked_inner<S: pulp::Simd>(simd: S, x: &MaskedInputs<'_>, skip: bool) -> Vec<f32> {
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
    // One head's values chunk-major, `[⌈T / ACC⌉][d_h][ACC]` (see [`weighted_values`]).
    let gather_values = |src: &[f32], b: usize, h: usize, dst: &mut Vec<f32>| {
        dst.clear();
        dst.resize(t_n.div_ceil(ACC) * dh * ACC, 0.0);
        for t in 0..t_n {
            let row = &src[at(b, t, h)..at(b, t, h) + dh];
            for (d, v) in row.iter().enumerate() {
                dst[value_index(dh, t, d)] = *v;
            }
        }
    };
    let mut out = vec![0f32; b_n * t_n * h_n * dh];
    let (mut ks, mut vs, mut kl, mut vl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut sum_v, mut sum_l, mut wide) = (vec![0f32; dh], vec![0f32; dh], Vec::new());
    let (mut w, mut wl, mut later) = (vec![0f32; t_n], vec![0f32; t_n], vec![0f32; t_n]);
    // One query's row of visibility and of later forms, kept up to date from query to query: a
    // key joins the row when it becomes an earlier key, leaves it at its `until`, turns to its
    // later form at its `from` — the values a row built afresh for each query would hold.
    let (mut keep_row, mut mask_row) = (vec![0f32; t_n], vec![0f32; t_n]);
    // Visible keys per block of KEYS, and the earlier keys the query computes (`live_runs`).
    let (mut visible, mut runs) = (vec![0u32; t_n.div_ceil(KEYS)], Vec::new());
    let lo = x.min_exponent;
    for b in 0..b_n {
        let stored = &x.stored[b * t_n..(b + 1) * t_n];
        let until = x.until.map(|u| &u[b * t_n..(b + 1) * t_n]);
        let from = x.late.map(|(_, _, f)| &f[b * t_n..(b + 1) * t_n]);
        // The keys whose `until` (`from`) is query s, for every s.
        let (leave, turn) = (Events::new(until, t_n), Events::new(from, t_n));
        for h in 0..h_n {
            keep_row.fill(0.0);
            mask_row.fill(0.0);
            visible.fill(0);
            // Whole blocks (`j < s / KEYS`) without a visible key: none, and every block is computed.
            let mut empty = 0;
            gather(&x.k_stored, b, h, &mut ks);
            gather_values(&x.v_stored, b, h, &mut vs);
            if let Some((k_late, v_late, _)) = x.late {
                gather(k_late, b, h, &mut kl);
                gather_values(v_late, b, h, &mut vl);
            }
            for s in 0..t_n {
                let q = &x.q[at(b, s, h)..at(b, s, h) + dh];
                let own = dot(q, &x.k_exact[at(b, s, h)..at(b, s, h) + dh]);
                if skip {
                    // Key s − 1 joins the earlier keys, visible while s < until; keys whose until
                    // is s leave; keys whose from is s turn to their later form.
                    if let Some(k) = s.checked_sub(1) {
                        keep_row[k] = if until.is_none_or(|u| s < u[k]) { stored[k] } else { 0.0 };
                        visible[k / KEYS] += u32::from(keep_row[k] != 0.0);
                    }
                    if s > 0 && s % KEYS == 0 && visible[s / KEYS - 1] == 0 {
                        empty += 1;
                    }
                    for &k in leave.at(s) {
                        if k < s && keep_row[k] != 0.0 {
                            keep_row[k] = 0.0;
                            visible[k / KEYS] -= 1;
                            empty += usize::from(visible[k / KEYS] == 0 && k / KEYS < s / KEYS);
                        }
                    }
                    if let Some(from) = from {
                        mask_row[s] = if s >= from[s] { 1.0 } else { 0.0 };
                        for &k in turn.at(s).iter().filter(|&&k| k < s) {
                            mask_row[k] = 1.0;
                        }
                    }
                } else {
                    // Without skipping, the rows built afresh for each query, every block live:
                    // the reference a test holds the kept rows and the skipping to.
                    for k in 0..s {
                        keep_row[k] = if until.is_none_or(|u| s < u[k]) { stored[k] } else { 0.0 };
                    }
                    if let Some(from) = from {
                        for k in 0..=s {
                            mask_row[k] = if s >= from[k] { 1.0 } else { 0.0 };
                        }
                    }
                }
                let keep = &keep_row[..s];
                let mask: Option<&[f32]> = from.map(|_| &mask_row[..s + 1]);
                live_runs(&visible, s, skip && empty > 0, &mut runs);
                // Scores of the earlier keys in their stored form, blended with the later form.
                let scores = &mut w[..s];
                contract_keys(simd, scores, q, &ks, t_n, &runs);
                if let Some(m) = mask {
                    let late = &mut later[..s];
                    contract_keys(simd, late, q, &kl, t_n, &runs);
                    for ((sc, la), m) in scores.iter_mut().zip(late.iter()).zip(&m[..s]) {
                        *sc = *sc * (1.0 - m) + la * m;
                    }
                }
                // Softmax over the visible keys and the token itself.
                let max = visible_max(simd, scores, keep, own, &runs);
                let w_own = exp_lane((own - max).clamp(lo, 0.0));
                let total = exp_weights(simd, scores, keep, max, lo, &runs) + w_own;
                // Values: the weight of a key seen in its later form goes to its later value.
                let weights = &mut w[..s];
                let m_own = mask.map_or(0.0, |m| m[s]);
                if let Some(m) = mask {
                    for r in &runs {
                        for ((wv, wlv), m) in weights[r.clone()].iter_mut().zip(&mut wl[r.clone()]).zip(&m[r.clone()]) {
                            *wlv = *wv * m;
                            *wv *= 1.0 - m;
                        }
                    }
                }
                let v_own = &x.v_exact[at(b, s, h)..at(b, s, h) + dh];
                let dst = &mut out[at(b, s, h)..at(b, s, h) + dh];
                weighted_values(simd, weights, &vs, &runs, &mut wide, &mut sum_v);
                if mask.is_some() {
                    weighted_values(simd, &wl[..s], &vl, &runs, &mut wide, &mut sum_l);
                }
                for d in 0..dh {
                    let mut acc = sum_v[d];
                    if mask.is_some() {
                        acc += sum_l[d];
                    }
                    // Its own token: the tensor path adds its stored/later value with the diagonal
                    // weight, then moves that weight over to the exact value.
                    let stored = vs[value_index(dh, s, d)];
                    let own_form =
                        if m_own != 0.0 { stored * (1.0 - m_own) + vl[value_index(dh, s, d)] * m_own } else { stored };
                    dst[d] = (acc + w_own * own_form + w_own * (v_own[d] - stored)) / total;
                }
            }
        }
    }
    out
}

/// The keys a query must compute, as ranges over its earlier keys `0..n`: the blocks of [`KEYS`]
/// holding a visible key (`visible[j] > 0`; every block without `skip`), consecutive ones merged,
/// then the keys past the last whole block. Every range starts at a multiple of [`KEYS`], so chunks
/// of [`ACC`] and vectors of any width inside it sit where they sit in `0..n`: the partial sums
/// get the same terms in the same order, less the exact zeros of the skipped keys.
fn live_runs(visible: &[u32], n: usize, skip: bool, runs: &mut Vec<std::ops::Range<usize>>) {
    runs.clear();
    if !skip {
        runs.extend((n > 0).then_some(0..n));
        return;
    }
    let mut push = |r: std::ops::Range<usize>| match runs.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => runs.push(r),
    };
    for (j, &count) in visible[..n / KEYS].iter().enumerate() {
        if count > 0 {
            push(j * KEYS..(j + 1) * KEYS);
        }
    }
    let whole = n / KEYS * KEYS;
    if whole < n {
        push(whole..n);
    }
}

/// Keys by the query at which something happens to them (their `until` or `from`), for
/// [`masked_inner`]'s rows: `at(s)` lists the keys whose threshold is `s` (none without
/// thresholds; thresholds past the sequence never come).
struct Events {
    /// `keys[first[s]..first[s + 1]]` are query s's.
    first: Vec<usize>,
    keys: Vec<usize>,
}

impl Events {
    fn new(thresholds: Option<&[usize]>, t_n: usize) -> Self {
        let Some(thresholds) = thresholds else {
            return Self { first: vec![0; t_n + 1], keys: Vec::new() };
        };
        let mut first = vec![0; t_n + 1];
        for &s in thresholds.iter().filter(|&&s| s < t_n) {
            first[s + 1] += 1;
        }
        for s in 0..t_n {
            first[s + 1] += first[s];
        }
        let mut keys = vec![0; first[t_n]];
        let mut next = first.clone();
        for (k, &s) in thresholds.iter().enumerate().filter(|&(_, &s)| s < t_n) {
            keys[next[s]] = k;
            next[s] += 1;
        }
        Self { first, keys }
    }

    fn at(&self, s: usize) -> &[usize] {
        &self.keys[self.first[s]..self.first[s + 1]]
    }
}

/// The parts of `runs` made of whole chunks of [`ACC`] in `0..n` (the keys past the last whole
/// chunk are every pass's tail), as ranges of keys.
#[inline(always)]
fn whole_chunks(runs: &[std::ops::Range<usize>], n: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let whole = n / ACC * ACC;
    runs.iter().map(move |r| r.start..r.end.min(whole)).filter(|r| !r.is_empty())
}

/// The largest score among the visible keys (`keep ≠ 0`) in `runs` and `init`, in vectors of the
/// instruction set (a maximum is exact: any grouping gives the same value). The last run always
/// reaches `scores.len()` ([`live_runs`]), so the keys past the last whole vector are in it.
#[inline(always)]
fn visible_max<S: pulp::Simd>(
    simd: S,
    scores: &[f32],
    keep: &[f32],
    init: f32,
    runs: &[std::ops::Range<usize>],
) -> f32 {
    let (n, lanes) = (scores.len(), S::F32_LANES);
    let whole = n / lanes * lanes;
    let (sv, kv) = (S::as_simd_f32s(&scores[..whole]).0, S::as_simd_f32s(&keep[..whole]).0);
    let (zero, hidden) = (simd.splat_f32s(0.0), simd.splat_f32s(f32::NEG_INFINITY));
    let mut max = [simd.splat_f32s(init); 2];
    for r in runs {
        let vectors = r.start / lanes..r.end.min(whole) / lanes;
        for (i, (s, k)) in sv[vectors.clone()].iter().zip(&kv[vectors]).enumerate() {
            let m = &mut max[i % 2];
            *m = simd.max_f32s(*m, simd.select_f32s(simd.equal_f32s(*k, zero), hidden, *s));
        }
    }
    let mut out = [0f32; 64];
    let out = &mut out[..2 * lanes];
    S::as_mut_simd_f32s(out).0.copy_from_slice(&max);
    let tail = (whole..n).filter(|&u| keep[u] != 0.0).fold(init, |m, u| m.max(scores[u]));
    out.iter().fold(tail, |a, b| a.max(*b))
}

/// Scores in `runs` → weights `exp(clamp(s − max, lo, 0)) · keep`, in place; returns their sum in
/// [`ACC`] partial sums. The `exp` runs on vectors of the instruction set ([`exp_vec`] gives
/// [`exp_lane`]'s bits), the sums in plain chunks of [`ACC`], so the result is the same for
/// every vector width. Scores outside `runs` are left as they are: nothing reads them.
#[inline(always)]
fn exp_weights<S: pulp::Simd>(
    simd: S,
    scores: &mut [f32],
    keep: &[f32],
    max: f32,
    lo: f32,
    runs: &[std::ops::Range<usize>],
) -> f32 {
    let (lo_v, max_v, zero, cap) =
        (simd.splat_f32s(lo), simd.splat_f32s(max), simd.splat_f32s(0.0), simd.splat_f32s(-87.0));
    let n = scores.len();
    let lanes = S::F32_LANES;
    let whole = n / lanes * lanes;
    {
        let (sv, st) = S::as_mut_simd_f32s(scores);
        let (kv, kt) = S::as_simd_f32s(keep);
        for r in runs {
            let vectors = r.start / lanes..r.end.min(whole) / lanes;
            for (s, k) in sv[vectors.clone()].iter_mut().zip(&kv[vectors]) {
                let d = simd.min_f32s(simd.max_f32s(simd.sub_f32s(*s, max_v), lo_v), zero);
                *s = simd.mul_f32s(exp_vec(simd, d, cap), *k);
            }
        }
        for (s, k) in st.iter_mut().zip(kt) {
            *s = exp_lane((*s - max).clamp(lo, 0.0)) * k;
        }
    }
    let mut total = [0f32; ACC];
    for r in whole_chunks(runs, n) {
        for s in scores[r].as_chunks::<ACC>().0 {
            for i in 0..ACC {
                total[i] += s[i];
            }
        }
    }
    total.iter().sum::<f32>() + scores.as_chunks::<ACC>().1.iter().sum::<f32>()
}

/// Keys scored per block of this many, the sums in registers over the features.
const KEYS: usize = 32;

/// `dst[u] = Σ_d q[d] · keys[d·stride + u]` for the keys `u` in `runs` (of `0..dst.len()`) of a
/// feature-major `[d_h][stride]` layout, summed in feature order from 0 (`0 + q₀k₀ + q₁k₁ + …`,
/// unfused, as a feature-by-feature `dst += q_d · row_d` would), a block of [`KEYS`] keys at a
/// time. Other keys are left as they are.
#[inline(always)]
fn contract_keys<S: pulp::Simd>(
    simd: S,
    dst: &mut [f32],
    q: &[f32],
    keys: &[f32],
    stride: usize,
    runs: &[std::ops::Range<usize>],
) {
    let n = dst.len();
    let whole = n / KEYS;
    let (blocks, tail) = dst.as_chunks_mut::<KEYS>();
    for r in runs {
        // Several blocks at a time where the run has them (eight vectors of sums in flight, where
        // one block's one or two wait on each other's latency), then one at a time.
        let (mut j, end) = (r.start / KEYS, (r.end / KEYS).min(whole));
        let step = 8 * S::F32_LANES / KEYS;
        if step > 1 && (8 * S::F32_LANES).is_multiple_of(KEYS) {
            while j + step <= end {
                key_vectors(simd, q, keys, stride, j * KEYS, blocks[j..j + step].as_flattened_mut());
                j += step;
            }
        }
        for j in j..end {
            blocks[j] = key_block(q, keys, stride, j * KEYS);
        }
    }
    let start = n - tail.len();
    if !tail.is_empty() && start + KEYS <= stride {
        // The last keys as a whole block, read on into the row's later keys (the same sums per
        // key, instead of a scalar loop); only the first ones are kept.
        let kept = tail.len();
        tail.copy_from_slice(&key_block(q, keys, stride, start)[..kept]);
        return;
    }
    tail.fill(0.0);
    for (d, &qd) in q.iter().enumerate() {
        for (x, k) in tail.iter_mut().zip(&keys[d * stride + start..d * stride + n]) {
            *x += qd * k;
        }
    }
}

/// [`key_block`]'s sums for the `8 · lanes` keys from `first` on, into `dst`, in eight vectors of
/// the instruction set (each key's sum formed alike: `0 + q₀k₀ + q₁k₁ + …`, unfused).
#[inline(always)]
fn key_vectors<S: pulp::Simd>(simd: S, q: &[f32], keys: &[f32], stride: usize, first: usize, dst: &mut [f32]) {
    let lanes = S::F32_LANES;
    let mut acc = [simd.splat_f32s(0.0); 8];
    for (d, &qd) in q.iter().enumerate() {
        let qv = simd.splat_f32s(qd);
        let rows = S::as_simd_f32s(&keys[d * stride + first..][..8 * lanes]).0;
        for (a, k) in acc.iter_mut().zip(rows) {
            *a = simd.add_f32s(*a, simd.mul_f32s(qv, *k));
        }
    }
    S::as_mut_simd_f32s(&mut dst[..8 * lanes]).0.copy_from_slice(&acc);
}

/// [`contract_keys`] for the [`KEYS`] keys from `first` on, the sums in registers (a function, not
/// a closure: [`pulp`] compiles only inlined functions with the instruction set).
#[inline(always)]
fn key_block(q: &[f32], keys: &[f32], stride: usize, first: usize) -> [f32; KEYS] {
    let mut acc = [0f32; KEYS];
    for (d, &qd) in q.iter().enumerate() {
        let row: &[f32; KEYS] = keys[d * stride + first..][..KEYS].try_into().expect("a block of keys");
        for i in 0..KEYS {
            acc[i] += qd * row[i];
        }
    }
    acc
}

/// Where [`weighted_values`]' chunk-major layout `[⌈T / ACC⌉][d_h][ACC]` keeps value `u`'s feature `d`.
#[inline(always)]
fn value_index(dh: usize, u: usize, d: usize) -> usize {
    ((u / ACC) * dh + d) * ACC + u % ACC
}

/// `out[d] = Σ_u w[u] · v_u[d]` over the keys `u` in `runs` (of `0..w.len()`) for every feature
/// `d` of values laid out chunk-major ([`value_index`]), each feature's sum formed as
/// [`dot_slice`] forms it over a feature-major row — [`ACC`] partial sums over the whole chunks,
/// then the keys past the last whole chunk, then the partial sums in order — so the same bits, in
/// one pass over the weights for every feature instead of one pass per feature. On vectors of
/// `k·ACC` lanes one vector holds the partial sums of `k` features, updated with the chunk's
/// weights `k` times over (`wide`, written here).
#[inline(always)]
fn weighted_values<S: pulp::Simd>(
    simd: S,
    w: &[f32],
    vals: &[f32],
    runs: &[std::ops::Range<usize>],
    wide: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (lanes, dh) = (S::F32_LANES, out.len());
    if lanes.is_multiple_of(ACC) && (dh * ACC).is_multiple_of(lanes) {
        match dh * ACC / lanes {
            8 => return weighted_values_vec::<S, 8>(simd, w, vals, runs, wide, out),
            16 => return weighted_values_vec::<S, 16>(simd, w, vals, runs, wide, out),
            _ => {}
        }
    }
    weighted_values_scalar(w, vals, runs, out);
}

/// [`weighted_values`] with `N` vectors of partial sums held in registers across the keys.
#[inline(always)]
fn weighted_values_vec<S: pulp::Simd, const N: usize>(
    simd: S,
    w: &[f32],
    vals: &[f32],
    runs: &[std::ops::Range<usize>],
    wide: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (lanes, dh) = (S::F32_LANES, out.len());
    let copies = lanes / ACC;
    let n = w.len();
    let chunks = n / ACC;
    wide.resize(chunks * lanes, 0.0);
    for r in whole_chunks(runs, n) {
        for c in r.start / ACC..r.end / ACC {
            for k in 0..copies {
                wide[(c * copies + k) * ACC..][..ACC].copy_from_slice(&w[c * ACC..(c + 1) * ACC]);
            }
        }
    }
    let (wv, _) = S::as_simd_f32s(&wide[..chunks * lanes]);
    let (vv, _) = S::as_simd_f32s(&vals[..chunks * dh * ACC]);
    let mut acc = [simd.splat_f32s(0.0); N];
    for r in whole_chunks(runs, n) {
        for c in r.start / ACC..r.end / ACC {
            let (wc, v) = (wv[c], &vv[c * N..(c + 1) * N]);
            for i in 0..N {
                acc[i] = simd.add_f32s(acc[i], simd.mul_f32s(wc, v[i]));
            }
        }
    }
    let mut sums = [0f32; 32 * ACC];
    let sums = &mut sums[..dh * ACC];
    for (dst, a) in S::as_mut_simd_f32s(sums).0.iter_mut().zip(&acc) {
        *dst = *a;
    }
    for (d, o) in out.iter_mut().enumerate() {
        *o = value_tail(w, vals, dh, d) + sums[d * ACC..(d + 1) * ACC].iter().sum::<f32>();
    }
}

/// [`weighted_values`] in plain chunks of [`ACC`], one feature at a time.
#[inline(always)]
fn weighted_values_scalar(w: &[f32], vals: &[f32], runs: &[std::ops::Range<usize>], out: &mut [f32]) {
    let dh = out.len();
    for (d, o) in out.iter_mut().enumerate() {
        let mut acc = [0f32; ACC];
        for r in whole_chunks(runs, w.len()) {
            for c in r.start / ACC..r.end / ACC {
                let v = &vals[value_index(dh, c * ACC, d)..][..ACC];
                for i in 0..ACC {
                    acc[i] += w[c * ACC + i] * v[i];
                }
            }
        }
        *o = value_tail(w, vals, dh, d) + acc.iter().sum::<f32>();
    }
}

/// Feature `d`'s sum over the keys past the last whole chunk of `0..w.len()` (as [`dot_slice`]'s).
#[inline(always)]
fn value_tail(w: &[f32], vals: &[f32], dh: usize, d: usize) -> f32 {
    let whole = w.len() / ACC * ACC;
    (whole..w.len()).map(|u| w[u] * vals[value_index(dh, u, d)]).sum::<f32>()
}

/// `Σ a·b` over the keys in `runs` (of `0..a.len()`), in [`ACC`] partial sums: the reference
/// [`weighted_values`] is held to (the kernel's form, one feature at a time, before it did all
/// features at once).
#[cfg(test)]
fn dot_slice(a: &[f32], b: &[f32], runs: &[std::ops::Range<usize>]) -> f32 {
    let mut acc = [0f32; ACC];
    for r in whole_chunks(runs, a.len()) {
        for (x, y) in a[r.clone()].as_chunks::<ACC>().0.iter().zip(b[r].as_chunks::<ACC>().0) {
            for i in 0..ACC {
                acc[i] += x[i] * y[i];
            }
        }
    }
    let (ar, br) = (a.as_chunks::<ACC>().1, b[..a.len()].as_chunks::<ACC>().1);
    ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>() + acc.iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check(simd, name)` with the scalar fallback and, where the CPU has them, AVX2 and
    /// AVX-512.
    macro_rules! every_simd {
        ($check:expr) => {{
            $check(pulp::Scalar::new(), "scalar");
            #[cfg(target_arch = "x86_64")]
            {
                if let Some(simd) = pulp::x86::V3::try_new() {
                    $check(simd, "AVX2");
                }
                if let Some(simd) = pulp::x86::V4::try_new() {
                    $check(simd, "AVX-512");
                }
            }
        }};
    }

    /// Fixed draws in `[-w, w)` from a linear congruential generator seeded with `seed`.
    fn uniform(mut seed: u32, w: f32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * (2.0 * w) - w
        }
    }

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

    /// The kernel computes the same bits for every vector width it may be compiled for (scalar,
    /// AVX2, AVX-512 where the CPU has them): dense and factor groups with evicted and padded lanes,
    /// materialised and TPA-factored queries, head counts that split into chunks.
    #[test]
    fn every_vector_width_computes_the_same_bits() {
        let mut rnd = uniform(11, 2.0);
        for (heads, kv_heads, head_dim) in [(3, 3, 16), (5, 5, 7), (4, 2, 32)] {
            let dims = HeadDims { heads, kv_heads, head_dim };
            let mut groups = Vec::new();
            for (kind, n) in
                [(HostKind::Dense, 200), (HostKind::Factors { rank: 1 }, 130), (HostKind::Factors { rank: 2 }, 70)]
            {
                let mut tiles = Tiles::new(dims.width(kind));
                for _ in 0..n {
                    let t: Vec<f32> = (0..tiles.width()).map(|_| rnd()).collect();
                    tiles.push(&t);
                }
                tiles.pop_front(n / 20);
                groups.push(HostGroup { kind, tiles });
            }
            let groups: Vec<&HostGroup> = groups.iter().collect();
            let pieces: Vec<Piece> = groups
                .iter()
                .enumerate()
                .flat_map(|(g, x)| (0..x.tiles.blocks().count()).map(move |b| (g, b)))
                .collect();
            let v = |n: usize, rnd: &mut dyn FnMut() -> f32| (0..n).map(|_| rnd()).collect::<Vec<f32>>();
            let (query, key, value) =
                (v(heads * head_dim, &mut rnd), v(heads * head_dim, &mut rnd), v(heads * head_dim, &mut rnd));
            let (rows, mix) = (v(2 * head_dim, &mut rnd), v(heads * 2, &mut rnd));
            for factored in [false, true] {
                let q = StepQuery {
                    rows: if factored { &rows } else { &query },
                    head_mix: factored.then_some(&mix[..]),
                    query: &query,
                    key: &key,
                    value: &value,
                };
                let attend = |prefetch, span_bytes| Attend {
                    dims,
                    groups: &groups,
                    pieces: &pieces,
                    q,
                    own: true,
                    prefetch,
                    span_bytes,
                };
                let bits = |part: Partial| {
                    let (mut out, mut lse) = (vec![0f32; heads * head_dim], vec![0f32; heads]);
                    let stats = finish(dims, vec![part], q, &mut out, &mut lse);
                    out.iter().chain(&lse).chain(&stats).map(|x| x.to_bits()).collect::<Vec<u32>>()
                };
                let scalar = bits(pulp::WithSimd::with_simd(attend(false, usize::MAX), pulp::Scalar::new()));
                // Prefetching (a hint) changes nothing either, nor do the passes taking the piece
                // a block at a time (more than three heads: several passes over factor blocks).
                for (prefetch, span_bytes) in [(false, usize::MAX), (true, usize::MAX), (true, 1), (false, SPAN_BYTES)]
                {
                    let attend = attend(prefetch, span_bytes);
                    every_simd!(|simd, name| {
                        assert_eq!(bits(pulp::WithSimd::with_simd(attend, simd)), scalar, "{name}, {dims:?}");
                    });
                }
            }
        }
    }

    /// Each key's score is `0 + q₀k₀ + q₁k₁ + …` in feature order, unfused, whether its block is
    /// scored alone or with others in vectors, on every instruction set.
    #[test]
    #[allow(clippy::single_range_in_vec_init)] // runs of one range are what most queries have
    fn contract_keys_sums_each_key_in_feature_order() {
        let (dh, stride) = (5, 400);
        let q: Vec<f32> = (0..dh).map(|d| 0.37 * d as f32 - 0.6).collect();
        let keys: Vec<f32> = (0..dh * stride).map(|i| ((i * 29) % 31) as f32 / 7.0 - 2.1).collect();
        // Whole blocks only, a tail read on as a block, a tail at the row's end (scalar), runs
        // that skip the middle block, and runs long enough for several blocks at a time.
        let cases = [
            (64, vec![0..64]),
            (45, vec![0..45]),
            (70, vec![0..70]),
            (70, vec![0..32, 64..70]),
            (400, vec![0..400]),
            (390, vec![0..96, 160..390]),
        ];
        struct Check<'a>(&'a [f32], &'a [f32], usize, usize, &'a [std::ops::Range<usize>]);
        impl pulp::WithSimd for Check<'_> {
            type Output = Vec<f32>;
            fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
                let Check(q, keys, stride, n, runs) = self;
                let mut dst = vec![f32::NAN; n];
                contract_keys(simd, &mut dst, q, keys, stride, runs);
                dst
            }
        }
        for (n, runs) in cases {
            every_simd!(|simd, name| {
                let dst = pulp::WithSimd::with_simd(Check(&q, &keys, stride, n, &runs), simd);
                for u in runs.iter().flat_map(|r| r.clone()) {
                    let want = (0..dh).fold(0.0f32, |a, d| a + q[d] * keys[d * stride + u]);
                    assert_eq!(dst[u].to_bits(), want.to_bits(), "{name}, n {n}, key {u}");
                }
            });
        }
    }

    /// The weighted values of every feature in one pass, on every instruction set, are the bits of
    /// [`dot_slice`] over feature-major rows (the kernel's form before); the visible maximum is
    /// the maximum over the visible keys in the runs.
    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn weighted_values_and_maximum_match_their_references() {
        struct Check<'a>(&'a [f32], &'a [f32], &'a [f32], &'a [std::ops::Range<usize>], usize);
        impl pulp::WithSimd for Check<'_> {
            type Output = (Vec<f32>, f32);
            fn with_simd<S: pulp::Simd>(self, simd: S) -> (Vec<f32>, f32) {
                let Check(w, vals, keep, runs, dh) = self;
                let (mut out, mut wide) = (vec![f32::NAN; dh], Vec::new());
                weighted_values(simd, w, vals, runs, &mut wide, &mut out);
                let scores: Vec<f32> = w.iter().map(|x| x - 1.0).collect();
                (out, visible_max(simd, &scores, &keep[..w.len()], -1.5, runs))
            }
        }
        let mut rnd = uniform(11, 3.0);
        let t_n: usize = 300;
        for dh in [5, 16, 32] {
            let rows: Vec<f32> = (0..dh * t_n).map(|_| rnd()).collect(); // feature-major [d_h][T]
            let mut chunked = vec![0f32; t_n.div_ceil(ACC) * dh * ACC];
            for d in 0..dh {
                for u in 0..t_n {
                    chunked[value_index(dh, u, d)] = rows[d * t_n + u];
                }
            }
            let w: Vec<f32> = (0..t_n).map(|_| rnd().abs()).collect();
            let keep: Vec<f32> = (0..t_n).map(|u| f32::from(u8::from(u % 7 != 2))).collect();
            // The last run reaches the end, as `live_runs` makes it.
            for (n, runs) in [(300, vec![0..300]), (293, vec![0..64, 128..293]), (37, vec![32..37]), (5, vec![0..5])] {
                let want: Vec<u32> =
                    (0..dh).map(|d| dot_slice(&w[..n], &rows[d * t_n..d * t_n + n], &runs).to_bits()).collect();
                let visible = runs.iter().flat_map(|r| r.clone()).filter(|&u| keep[u] != 0.0);
                let max = visible.fold(-1.5f32, |m, u| m.max(w[u] - 1.0));
                every_simd!(|simd, name| {
                    let (got, got_max) = pulp::WithSimd::with_simd(Check(&w[..n], &chunked, &keep, &runs, dh), simd);
                    let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(got, want, "{name}, d_h {dh}, n {n}");
                    assert_eq!(got_max.to_bits(), max.to_bits(), "{name}, d_h {dh}, n {n}");
                });
            }
            let mut out = vec![0f32; dh];
            weighted_values_scalar(&w, &chunked, &[0..t_n], &mut out);
            let want: Vec<f32> = (0..dh).map(|d| dot_slice(&w, &rows[d * t_n..(d + 1) * t_n], &[0..t_n])).collect();
            assert_eq!(out, want, "the plain path, d_h {dh}");
        }
    }

    #[test]
    fn masked_attention_skips_invisible_blocks_without_changing_a_bit() {
        // A head of 5 (the plain paths) and of 16 (the vector paths of the values and the keys).
        for dh in [5, 16] {
            masked_skipping_case(dh);
        }
    }

    fn masked_skipping_case(dh: usize) {
        let mut rnd = uniform(5, 2.0);
        let [b_n, t_n, h_n] = [2, 230, 2];
        let n = b_n * t_n * h_n * dh;
        let mut v = |n: usize| (0..n).map(|_| rnd()).collect::<Vec<f32>>();
        let (q, k_exact, v_exact, k_stored, v_stored, k_late, v_late) = (v(n), v(n), v(n), v(n), v(n), v(n), v(n));
        // A few long-kept tokens, the rest in windows of 8 (`until`), some demoted from 100 on: most
        // blocks of 32 hold no visible key for most queries.
        let stored: Vec<f32> = (0..b_n * t_n).map(|i| f32::from(u8::from(i % 23 != 3))).collect();
        let until: Vec<usize> = (0..b_n * t_n).map(|i| if i % 97 == 0 { t_n } else { i % t_n + 8 }).collect();
        let from: Vec<usize> = (0..b_n * t_n).map(|i| if i % 3 == 0 { (i % t_n).max(100) } else { t_n }).collect();
        for (until, late) in [(None, false), (Some(&until[..]), false), (Some(&until[..]), true)] {
            let x = MaskedInputs {
                dims: [b_n, t_n, h_n, dh],
                q: q.clone(),
                k_exact: k_exact.clone(),
                v_exact: v_exact.clone(),
                k_stored: k_stored.clone(),
                v_stored: v_stored.clone(),
                stored: &stored,
                until,
                late: late.then_some((&k_late[..], &v_late[..], &from[..])),
                min_exponent: -30.0,
            };
            let bits = |out: Vec<f32>| out.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            let every = bits(pulp::WithSimd::with_simd(Masked(&x, false), pulp::Scalar::new()));
            every_simd!(|simd, name| {
                for skip in [false, true] {
                    let got = bits(pulp::WithSimd::with_simd(Masked(&x, skip), simd));
                    assert_eq!(got, every, "{name}, skip {skip}, until {}, late {late}, d_h {dh}", until.is_some());
                }
            });
            assert_eq!(bits(masked_attention(&x)), every, "until {}, late {late}", until.is_some());
        }
    }

    /// The parts of each run of a prefetch cover every cache line of the run once, in order,
    /// whatever the number of parts (more parts than lines included), and nothing beyond it.
    #[test]
    fn prefetch_parts_cover_every_line_once() {
        let block: Vec<f32> = (0..1000).map(|x| x as f32).collect();
        for (a, b) in [(0..200, 600..750), (0..0, 5..37), (3..3, 0..0), (0..1000, 0..0)] {
            let runs = [&block[a.clone()], &block[b.clone()]];
            for parts in [[1, 1], [2, 7], [28, 16], [100, 3]] {
                let ahead = Ahead::new(runs, parts);
                for (k, range) in [a.clone(), b.clone()].into_iter().enumerate() {
                    let want: Vec<f32> = range.clone().step_by(Ahead::LINE).map(|x| x as f32).collect();
                    let got: Vec<f32> = (0..parts[k] + 3)
                        .flat_map(|i| ahead.lines(k, i).iter().step_by(Ahead::LINE).copied())
                        .collect();
                    assert_eq!(got, want, "run {k} {range:?}, {parts:?} parts");
                }
            }
        }
    }

    /// A cache longer than one piece ([`SPLIT_BLOCKS`]): the merged partial states give the softmax
    /// of a plain f64 reference (output, log-sum-exps, entropy, maximum weight) over a dense and a
    /// rank-2 group with evicted front lanes and partial last blocks, and the same bits whether
    /// the pieces run on one thread or several.
    #[test]
    fn pieces_merge_to_the_reference_softmax_on_any_thread_count() {
        // Two heads (one pass) with the materialised query; five (two passes over each span,
        // the second reading the first's contractions) with TPA query factors of rank 3.
        reference_softmax(2, None);
        reference_softmax(5, Some(3));
    }

    fn reference_softmax(h: usize, q_rank: Option<usize>) {
        let dh = 4;
        let dims = HeadDims { heads: h, kv_heads: h, head_dim: dh };
        let mut rnd = uniform(7, 1.0);
        let n = SPLIT_BLOCKS * LANES * 2 + 77;
        let mut dense = HostGroup { kind: HostKind::Dense, tiles: Tiles::new(dims.width(HostKind::Dense)) };
        let rank2 = HostKind::Factors { rank: 2 };
        let mut factors = HostGroup { kind: rank2, tiles: Tiles::new(dims.width(rank2)) };
        for _ in 0..n {
            let t: Vec<f32> = (0..dense.tiles.width()).map(|_| 3.0 * rnd()).collect();
            dense.tiles.push(&t);
        }
        for _ in 0..n / 3 {
            let t: Vec<f32> = (0..factors.tiles.width()).map(|_| 2.0 * rnd()).collect();
            factors.tiles.push(&t);
        }
        dense.tiles.pop_front(5);
        // With query factors, B_Q's rows and A_Q's mix; the materialised query (for dense keys
        // and the token itself) is their product, as the model forms it.
        let m = q_rank.unwrap_or(0);
        let rows: Vec<f32> = (0..m * dh).map(|_| rnd()).collect();
        let mix: Vec<f32> = (0..h * m).map(|_| rnd()).collect();
        let q: Vec<f32> = match q_rank {
            None => (0..h * dh).map(|_| rnd()).collect(),
            Some(_) => (0..h * dh).map(|x| (0..m).map(|j| mix[x / dh * m + j] * rows[j * dh + x % dh]).sum()).collect(),
        };
        let (key, value): (Vec<f32>, Vec<f32>) =
            ((0..h * dh).map(|_| rnd()).collect(), (0..h * dh).map(|_| rnd()).collect());
        let query = StepQuery {
            rows: if m > 0 { &rows } else { &q },
            head_mix: (m > 0).then_some(&mix[..]),
            query: &q,
            key: &key,
            value: &value,
        };
        let groups = [&dense, &factors];
        let run = |parallel| {
            let (mut out, mut lse) = (vec![0f32; h * dh], vec![0f32; h]);
            let stats = attend(dims, &groups, query, &mut out, &mut lse, parallel);
            (out, lse, stats)
        };
        let (one, several) = (run(false), run(true));
        assert_eq!(one, several, "the result depends on the threads");
        // Reference: every key and value materialised, softmax in f64.
        let (out, lse, [entropy, max_weight]) = one;
        let (mut ent, mut top) = (0.0, 0.0);
        for hh in 0..h {
            let mut kv: Vec<(f64, Vec<f64>)> = Vec::new();
            let qh: Vec<f64> = match q_rank {
                None => q[hh * dh..(hh + 1) * dh].iter().map(|&x| x as f64).collect(),
                Some(_) => {
                    (0..dh).map(|i| (0..m).map(|j| mix[hh * m + j] as f64 * rows[j * dh + i] as f64).sum()).collect()
                }
            };
            let score = |k: &[f64]| qh.iter().zip(k).map(|(a, b)| a * b).sum::<f64>();
            for t in 0..dense.tiles.len() {
                let tok: Vec<f64> = dense.tiles.token(t).iter().map(|&x| x as f64).collect();
                kv.push((score(&tok[hh * dh..(hh + 1) * dh]), tok[(h + hh) * dh..(h + hh + 1) * dh].to_vec()));
            }
            for t in 0..factors.tiles.len() {
                let tok: Vec<f64> = factors.tiles.token(t).iter().map(|&x| x as f64).collect();
                let stride = h + dh;
                let (mut k, mut v) = (vec![0.0; dh], vec![0.0; dh]);
                for r in 0..2 {
                    for i in 0..dh {
                        k[i] += tok[r * stride + hh] * tok[r * stride + h + i] / 2.0;
                        v[i] += tok[(2 + r) * stride + hh] * tok[(2 + r) * stride + h + i] / 2.0;
                    }
                }
                kv.push((score(&k), v));
            }
            let own: Vec<f64> = key[hh * dh..(hh + 1) * dh].iter().map(|&x| x as f64).collect();
            kv.push((score(&own), value[hh * dh..(hh + 1) * dh].iter().map(|&x| x as f64).collect()));
            let top_score = kv.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = kv.iter().map(|x| (x.0 - top_score).exp()).sum();
            assert!(
                (lse[hh] as f64 - (top_score + z.ln())).abs() < 1e-4,
                "head {hh}: lse {} vs {}",
                lse[hh],
                top_score + z.ln()
            );
            for i in 0..dh {
                let want: f64 = kv.iter().map(|x| (x.0 - top_score).exp() / z * x.1[i]).sum();
                assert!(
                    (out[hh * dh + i] as f64 - want).abs() < 1e-4,
                    "head {hh}, feature {i}: {} vs {want}",
                    out[hh * dh + i]
                );
            }
            ent += kv.iter().map(|x| (x.0 - top_score).exp() / z).map(|p| -p * p.ln()).sum::<f64>();
            top += 1.0 / z;
        }
        assert!((entropy as f64 - ent / h as f64).abs() < 1e-3, "entropy {entropy} vs {}", ent / h as f64);
        assert!((max_weight as f64 - top / h as f64).abs() < 1e-5);
    }

    /// Log-sum-exp, entropy and argmax of a row against f64 (a vocabulary that is not a multiple
    /// of the partial sums, a spread of scores where most weights underflow, ties go to the first).
    #[test]
    fn predictive_matches_f64_softmax() {
        let v = 1000 + 3;
        let rows: Vec<f32> = (0..2 * v).map(|i| ((i * 7919) % 1009) as f32 / 1009.0 * 30.0 - 20.0).collect();
        let got = predictive(&rows, v);
        for (r, p) in got.iter().enumerate() {
            let row: Vec<f64> = rows[r * v..(r + 1) * v].iter().map(|&x| x as f64).collect();
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
            let lse = m + z.ln();
            let entropy: f64 = row.iter().map(|x| (x - lse).exp() * (lse - x)).sum();
            assert!((p.lse as f64 - lse).abs() < 1e-5, "lse {} vs {lse}", p.lse);
            assert!((p.entropy as f64 - entropy).abs() < 1e-4, "entropy {} vs {entropy}", p.entropy);
            assert_eq!(p.argmax, row.iter().position(|&x| x == m).unwrap());
        }
        let flat = predictive(&[0.5; 19], 19)[0];
        assert_eq!(flat.argmax, 0);
        assert!((flat.entropy - (19f32).ln()).abs() < 1e-5);
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

    #[test]
    fn tiles_remove_one_token_keeps_the_others_in_order() {
        // Against a plain list of tokens, removing at the front, the middle and the end, within
        // a block and across block boundaries, after evictions from the front.
        let mut t = Tiles::new(2);
        let mut reference: Vec<f32> = Vec::new();
        for n in 0..70 {
            t.push(&[n as f32, -(n as f32)]);
            reference.push(n as f32);
        }
        t.pop_front(5);
        reference.drain(..5);
        for index in [0, 10, 11, 58, 63, 30, 40] {
            let index = index.min(t.len() - 1);
            t.remove(index);
            reference.remove(index);
            assert_eq!(t.len(), reference.len());
            for (i, &x) in reference.iter().enumerate() {
                assert_eq!(t.token(i), vec![x, -x], "token {i} after removing {index}");
            }
            // Whole blocks only up to the last token; the lanes after it are zero padding.
            let end = t.skip() + t.len();
            assert_eq!(t.data.len(), end.div_ceil(LANES) * 2 * LANES);
            assert!((end..end.div_ceil(LANES) * LANES).all(|n| t.data[(n / LANES) * 2 * LANES + n % LANES] == 0.0));
        }
        t.push(&[100.0, -100.0]);
        assert_eq!(t.token(t.len() - 1), vec![100.0, -100.0]);
        assert_eq!(t.bytes(), t.len() * 2 * CACHE_ELEMENT_BYTES);
    }
}
