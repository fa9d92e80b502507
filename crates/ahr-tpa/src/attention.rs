//! Attention for every family on one skeleton: TPA (contextual factors, nested ranks, optional
//! dense path), MHA and GQA.
//!
//! Two forms that must agree (DESIGN.md §3):
//! - [`Attention::forward`]: a parallel forward over a whole sequence with a storage choice per
//!   (sequence, token); it materialises each token's *stored* K/V and its *exact* K/V, lets query
//!   `s` see token `t < s` through the stored version and itself through the exact one.
//! - [`Attention::decode`]: one new token per stream against a [`LayerCache`] that physically keeps
//!   each earlier token at its chosen option, computing scores straight from the factors in
//!   FlashTPA's order (`B_K·B_Qᵀ`, then `A_Q`, then `A_K`) without materialising K/V.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor, TensorData};

use crate::cache::{Group, LayerCache, Storage};
use crate::choices::{LayerChoiceTensors, StoredWeights};
use crate::config::{AttentionKind, ModelConfig, StoreOption};
use crate::error::Error;
use crate::host::{self, HeadDims, StepQuery};
pub use crate::projected::Projected;
use crate::rope::RopeTables;

/// Additive score bias that keeps hidden keys out of a row's maximum in the parallel forward's
/// softmax (their weights are then multiplied out; see [`MIN_EXPONENT`]).
const MASKED: f32 = -1.0e9;

/// Lowest exponent the parallel forward's softmax evaluates: e^-80 ≈ 1.8e-35 is still a normal
/// f32. Exponents are clamped to [-80, 0] and hidden keys multiplied out, so `exp` neither
/// underflows (an additive mask alone makes every hidden key underflow, and libtorch's CPU `exp`,
/// MKL VML, takes a slow path for each) nor overflows (a hidden key can score far above its row's
/// visible maximum; e^{s - max} would be inf and inf × 0 NaN). A visible key more than 80 below
/// its row's maximum gets e^-80 instead of its own (smaller) weight.
const MIN_EXPONENT: f32 = -80.0;

/// What one layer's parallel forward shows a cache rule.
#[derive(Clone, Debug)]
pub struct LayerMaps {
    /// Attention weights `[B, h, T_query, T_key]`.
    pub probs: Tensor<4>,
    /// L2 norm of each token's exact key over all heads, `[B, T]` (the decode's `key_norm`).
    pub key_norms: Tensor<2>,
    /// L2 norm of each token's exact value per head, `[B, h, T]` (what a weight is multiplied
    /// by: value-aware eviction scores read `weight × value norm`).
    pub value_norms: Tensor<3>,
}

/// Sizes an attention layer needs at run time.
#[derive(Clone, Debug)]
pub struct AttnDims {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q_rank: usize,
    kv_rank: usize,
    exact: StoreOption,
}

impl AttnDims {
    fn new(cfg: &ModelConfig) -> Self {
        Self {
            heads: cfg.n_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_dim,
            q_rank: cfg.q_rank,
            kv_rank: cfg.kv_rank_max,
            exact: cfg.exact_option(),
        }
    }
}

/// One attention layer. TPA fills the factor projections (`a_*`, `b_*`), plus `k`/`v` when the
/// menu has `full`; MHA/GQA fill `q`, `k`, `v`. Weights are `[d_in, d_out]` (burn's layout);
/// factor outputs are head-major as in T6: `A` is viewed as `[h, R]`, `B` as `[R, d_h]`.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query head factors `A_Q` (TPA).
    pub a_q: Option<Linear>,
    /// Query feature factors `B_Q` (TPA).
    pub b_q: Option<Linear>,
    /// Key head factors `A_K` (TPA).
    pub a_k: Option<Linear>,
    /// Key feature factors `B_K` (TPA).
    pub b_k: Option<Linear>,
    /// Value head factors `A_V` (TPA).
    pub a_v: Option<Linear>,
    /// Value feature factors `B_V` (TPA).
    pub b_v: Option<Linear>,
    /// Dense query projection (MHA/GQA).
    pub q: Option<Linear>,
    /// Dense key projection (MHA/GQA, and TPA's `full` option).
    pub k: Option<Linear>,
    /// Dense value projection (MHA/GQA, and TPA's `full` option).
    pub v: Option<Linear>,
    /// Output projection `[h·d_h, d]`.
    pub o: Linear,
    #[module(skip)]
    dims: AttnDims,
}

fn linear(cfg_in: usize, out: usize, device: &Device) -> Linear {
    LinearConfig::new(cfg_in, out).with_bias(false).init(device)
}

fn zeroed(l: Linear) -> Linear {
    let w = l.weight.val();
    Linear { weight: burn::module::Param::from_tensor(w.zeros_like()), bias: None }
}

impl Attention {
    /// A freshly initialised layer (the output projection starts at zero, as in T6).
    pub fn new(cfg: &ModelConfig, device: &Device) -> Self {
        let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.head_dim);
        let tpa = cfg.attention == AttentionKind::Tpa;
        let (rq, r) = (cfg.q_rank, cfg.kv_rank_max);
        // Factor biases let a head factor be constant across tokens (a plain linear map of an
        // RMS-normalised embedding cannot be), which MQAR's copy-by-content needs early on.
        let tpa_lin = |out: usize| tpa.then(|| LinearConfig::new(d, out).with_bias(cfg.factor_bias).init(device));
        let q_lin = |out: usize| if cfg.has_dense_query() { None } else { tpa_lin(out) };
        let kvh = cfg.kv_heads();
        Self {
            a_q: q_lin(h * rq),
            b_q: q_lin(rq * dh),
            a_k: tpa_lin(h * r),
            b_k: tpa_lin(r * dh),
            a_v: tpa_lin(h * r),
            b_v: tpa_lin(r * dh),
            q: cfg.has_dense_query().then(|| linear(d, h * dh, device)),
            k: cfg.has_dense_kv().then(|| linear(d, kvh * dh, device)),
            v: cfg.has_dense_kv().then(|| linear(d, kvh * dh, device)),
            o: zeroed(linear(h * dh, d, device)),
            dims: AttnDims::new(cfg),
        }
    }

    /// Project normalised inputs.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]`; `rope` covers the same T positions.
    pub fn project(&self, x: Tensor<3>, rope: &RopeTables) -> Projected {
        let [b, t, _] = x.dims();
        let AttnDims { heads: h, kv_heads: kvh, head_dim: dh, q_rank: rq, kv_rank: r, .. } = self.dims;
        let lin = |l: &Option<Linear>, shape: [usize; 4]| l.as_ref().map(|l| l.forward(x.clone()).reshape(shape));
        let q_factors =
            lin(&self.a_q, [b, t, h, rq]).zip(lin(&self.b_q, [b, t, rq, dh])).map(|(a, bq)| (a, rope.apply(bq)));
        let q_dense = lin(&self.q, [b, t, h, dh]).map(|q| rope.apply(q));
        let kv_factors = match (
            lin(&self.a_k, [b, t, h, r]),
            lin(&self.b_k, [b, t, r, dh]),
            lin(&self.a_v, [b, t, h, r]),
            lin(&self.b_v, [b, t, r, dh]),
        ) {
            (Some(ak), Some(bk), Some(av), Some(bv)) => Some([ak, rope.apply(bk), av, bv]),
            _ => None,
        };
        let kv_dense =
            lin(&self.k, [b, t, kvh, dh]).zip(lin(&self.v, [b, t, kvh, dh])).map(|(k, v)| (rope.apply(k), v));
        Projected { q_factors, q_dense, kv_factors, kv_dense }
    }

    /// Repeat K/V heads to the query heads (`repeat_interleave`, as T6's GQA).
    fn expand_heads(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, t, kvh, dh] = x.dims();
        let h = self.dims.heads;
        if kvh == h {
            return x;
        }
        x.unsqueeze_dim::<5>(3).expand([b, t, kvh, h / kvh, dh]).reshape([b, t, h, dh])
    }

    /// Head-major cached K/V `[h_kv, N, d_h]` repeated to the query heads `[h, N, d_h]`.
    fn expand_head_major(&self, x: Tensor<3>) -> Tensor<3> {
        let [kvh, n, dh] = x.dims();
        let h = self.dims.heads;
        if kvh == h {
            return x;
        }
        x.unsqueeze_dim::<4>(1).expand([kvh, h / kvh, n, dh]).reshape([h, n, dh])
    }

    /// Materialised query `[B, T, h, d_h]`.
    fn query(&self, p: &Projected) -> Tensor<4> {
        match (&p.q_factors, &p.q_dense) {
            (Some((a, bq)), _) => a.clone().matmul(bq.clone()) / self.dims.q_rank as f32,
            (None, Some(q)) => q.clone(),
            (None, None) => unreachable!("every family projects a query"),
        }
    }

    /// Materialised K/V `[B, T, h, d_h]` of every token kept at the exact option.
    fn exact_kv(&self, p: &Projected) -> (Tensor<4>, Tensor<4>) {
        match self.dims.exact {
            StoreOption::Rank(rho) => {
                let [ak, bk, av, bv] = p.kv_factors.clone().expect("rank options need TPA factors");
                let k = ak.narrow(3, 0, rho).matmul(bk.narrow(2, 0, rho)) / rho as f32;
                let v = av.narrow(3, 0, rho).matmul(bv.narrow(2, 0, rho)) / rho as f32;
                (k, v)
            }
            _ => {
                let (k, v) = p.kv_dense.clone().expect("the full option needs dense K/V");
                (self.expand_heads(k), self.expand_heads(v))
            }
        }
    }

    /// How far each `rank:ρ` option's K/V lie from the exact option's on these inputs:
    /// `Σ_ρ mean((K_ρ − K)²) + mean((V_ρ − V)²)` over `ranks`, the exact K/V held fixed (the
    /// teacher), so only the key/value factor projections get a gradient. With `scores`, a key's
    /// error counts by the attention scores it moves instead: per head `ΔKᵀ·E[q qᵀ]·ΔK`, the mean
    /// squared score error over every (query, key) pair of the batch, with the exact queries. Zero
    /// for layers without factors.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]` (normalised block input); returns `[1]`.
    pub fn factor_fit_loss(&self, x: Tensor<3>, rope: &RopeTables, ranks: &[usize], scores: bool) -> Tensor<1> {
        let device = x.device();
        let [b, t, _] = x.dims();
        let (h, dh) = (self.dims.heads, self.dims.head_dim);
        let p = self.project(x, rope);
        let (k, v) = self.exact_kv(&p);
        let (k, v) = (k.detach(), v.detach());
        // [h, d_h, d_h]: the second moment of the queries per head (the keys' metric).
        let heads = |x: Tensor<4>| x.reshape([b * t, h, dh]).swap_dims(0, 1); // [h, B·T, d_h]
        let metric = scores.then(|| {
            let q = heads(self.query(&p).detach());
            q.clone().swap_dims(1, 2).matmul(q) / (b * t) as f32
        });
        let key_error = |d: Tensor<4>| match &metric {
            Some(m) => {
                let d = heads(d);
                (d.clone().matmul(m.clone()) * d).sum_dim(2).mean().reshape([1])
            }
            None => d.square().mean(),
        };
        let mut loss = Tensor::<1>::zeros([1], &device);
        let Some([ak, bk, av, bv]) = &p.kv_factors else {
            return loss;
        };
        for &rho in ranks {
            let kr = ak.clone().narrow(3, 0, rho).matmul(bk.clone().narrow(2, 0, rho)) / rho as f32;
            let vr = av.clone().narrow(3, 0, rho).matmul(bv.clone().narrow(2, 0, rho)) / rho as f32;
            loss = loss + key_error(kr - k.clone()) + (vr - v.clone()).square().mean();
        }
        loss
    }

    /// Each token's stored K/V `[B, T, h, d_h]` under per-token form weights: the nested low-rank
    /// sum (1/ρ on the first ρ components, zero for drop/full) plus the dense K/V of `full` tokens.
    fn stored_kv(&self, p: &Projected, w: &StoredWeights) -> (Tensor<4>, Tensor<4>) {
        let mut stored: Option<(Tensor<4>, Tensor<4>)> = None;
        if let Some([ak, bk, av, bv]) = &p.kv_factors {
            let k = (ak.clone() * w.rank_w.clone()).matmul(bk.clone());
            let v = (av.clone() * w.rank_w.clone()).matmul(bv.clone());
            stored = Some((k, v));
        }
        if let Some((kd, vd)) = &p.kv_dense {
            let k = self.expand_heads(kd.clone()) * w.full_w.clone();
            let v = self.expand_heads(vd.clone()) * w.full_w.clone();
            stored = Some(match stored {
                Some((ks, vs)) => (ks + k, vs + v),
                None => (k, v),
            });
        }
        stored.expect("every family stores something")
    }

    /// Parallel forward with per-token storage choices.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]` (normalised block input); returns `[B, T, d]`.
    ///
    /// On the plain CPU device (no gradients) the `[T, T]` part runs as one host pass per query
    /// ([`host::masked_attention`]) instead of some twenty `[B, h, T, T]` tensor operations; the two
    /// agree to rounding (a test holds them together).
    pub fn forward(&self, x: Tensor<3>, rope: &RopeTables, choices: &LayerChoiceTensors) -> Tensor<3> {
        let device = x.device();
        // (Device equality ignores autodiff: a training forward must stay on tensors.)
        if device == Device::flex()
            && !device.is_autodiff()
            && let Ok(out) = self.forward_host(x.clone(), rope, choices)
        {
            return out;
        }
        self.attend(x, rope, choices).0
    }

    /// [`Attention::forward`] with the scores, softmax and weighted values computed in host memory.
    fn forward_host(&self, x: Tensor<3>, rope: &RopeTables, choices: &LayerChoiceTensors) -> Result<Tensor<3>, Error> {
        let [b, t, _] = x.dims();
        let device = x.device();
        let (h, dh) = (self.dims.heads, self.dims.head_dim);
        let p = self.project(x, rope);
        let q = self.query(&p) * (1.0 / (dh as f32).sqrt()); // the softmax scale folded into the query
        let (k_exact, v_exact) = self.exact_kv(&p);
        let (k_stored, v_stored) = self.stored_kv(&p, &choices.weights);
        let late = match &choices.late {
            Some(late) => {
                let (k, v) = self.stored_kv(&p, &late.weights);
                Some((host::to_host(k)?, host::to_host(v)?, late.from.as_slice()))
            }
            None => None,
        };
        let inputs = host::MaskedInputs {
            dims: [b, t, h, dh],
            q: host::to_host(q)?,
            k_exact: host::to_host(k_exact)?,
            v_exact: host::to_host(v_exact)?,
            k_stored: host::to_host(k_stored)?,
            v_stored: host::to_host(v_stored)?,
            stored: &choices.stored,
            until: choices.until.as_deref(),
            late: late.as_ref().map(|(k, v, from)| (k.as_slice(), v.as_slice(), *from)),
            min_exponent: MIN_EXPONENT,
        };
        let out = host::masked_attention(&inputs);
        Ok(self.o.forward(Tensor::from_data(TensorData::new(out, [b, t, h * dh]), &device)))
    }

    /// [`Attention::forward`] plus what cache rules read of this layer ([`LayerMaps`]).
    pub fn forward_with_probs(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        choices: &LayerChoiceTensors,
    ) -> (Tensor<3>, LayerMaps) {
        let [b, t, _] = x.dims();
        let h = self.dims.heads;
        let (out, probs, [k_exact, v_exact]) = self.attend(x, rope, choices);
        let key_norms = k_exact.square().sum_dim(3).sum_dim(2).sqrt().reshape([b, t]);
        let value_norms = v_exact.square().sum_dim(3).sqrt().reshape([b, t, h]).swap_dims(1, 2);
        (out, LayerMaps { probs, key_norms, value_norms })
    }

    /// The tensor path of [`Attention::forward`]: the output, the attention weights
    /// `[B, h, T, T]` and the exact K and V `[B, T, h, d_h]` (for [`LayerMaps`]'s norms, computed
    /// only when a rule reads them).
    fn attend(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        choices: &LayerChoiceTensors,
    ) -> (Tensor<3>, Tensor<4>, [Tensor<4>; 2]) {
        let [b, t, _] = x.dims();
        let device = x.device();
        let (h, dh) = (self.dims.heads, self.dims.head_dim);
        let p = self.project(x, rope);
        let q = self.query(&p);
        let (k_exact, v_exact) = self.exact_kv(&p);
        let exact = [k_exact.clone(), v_exact.clone()];

        let swap = |x: Tensor<4>| x.swap_dims(1, 2); // [B, h, T, d_h]
        let (k_stored, v_stored) = self.stored_kv(&p, &choices.weights);
        let late = choices.late.as_ref().zip(choices.late_mask(&device)).map(|(late, mask)| {
            let (k, v) = self.stored_kv(&p, &late.weights);
            (swap(k), swap(v), mask)
        });
        let (q, k_stored, v_stored, k_exact, v_exact) =
            (swap(q), swap(k_stored), swap(v_stored), swap(k_exact), swap(v_exact));
        let q = q * (1.0 / (dh as f32).sqrt()); // the softmax scale folded into the query

        let mut eye = vec![0f32; t * t];
        let mut lower = vec![0f32; t * t];
        for s in 0..t {
            eye[s * t + s] = 1.0;
            for u in 0..s {
                lower[s * t + u] = 1.0;
            }
        }
        let eye = Tensor::<4>::from_data(TensorData::new(eye, [1, 1, t, t]), &device);
        let lower = Tensor::<4>::from_data(TensorData::new(lower, [1, 1, t, t]), &device);

        // Scores against the stored keys; on the diagonal a token sees its own key exactly. (The
        // diagonal is replaced, not corrected by `own - q·k_stored`: scores can reach 1e4 and
        // more, where that difference loses the exact score to cancellation.)
        let scores = q.clone().matmul(k_stored.swap_dims(2, 3));
        // Demoted keys: where the mask says so, the query scores the key's later form.
        let scores = match &late {
            Some((k_late, _, mask)) => {
                scores * (mask.clone().neg() + 1.0) + q.clone().matmul(k_late.clone().swap_dims(2, 3)) * mask.clone()
            }
            None => scores,
        };
        let own = (q * k_exact).sum_dim(3); // [B, h, T, 1]
        let scores = scores * (eye.clone().neg() + 1.0) + own.clone() * eye.clone();
        let allowed = lower * choices.keep(&device) + eye; // [B, 1, T, T]
        // Softmax over the visible keys (see MIN_EXPONENT).
        let max = (scores.clone() + (allowed.clone().neg() + 1.0) * MASKED).detach().max_dim(3);
        let weights = (scores - max.clone()).clamp(MIN_EXPONENT, 0.0).exp() * allowed;
        let total = weights.clone().sum_dim(3);
        let probs = weights / total.clone();
        // On the diagonal the weight goes to the exact value instead of the stored one: the
        // diagonal weight (`[B, h, T, 1]`) moves over, rather than masking the `[T, T]` weights
        // with an identity twice.
        let p_own = (own - max).clamp(MIN_EXPONENT, 0.0).exp() / total;
        let out = match &late {
            Some((_, v_late, mask)) => {
                let p_late = probs.clone() * mask.clone();
                (probs.clone() - p_late.clone()).matmul(v_stored.clone()) + p_late.matmul(v_late.clone())
            }
            None => probs.clone().matmul(v_stored.clone()),
        };
        let out = out + p_own * (v_exact - v_stored);
        let out = out.swap_dims(1, 2).reshape([b, t, h * dh]);
        (self.o.forward(out), probs, exact)
    }

    /// One decode step for every stream, reading `caches[b]` for stream `b`.
    ///
    /// # Shapes
    /// - `x`: `[B, 1, d]` (normalised); returns the attention output `[B, 1, d]`, the new
    ///   token's projections (to be pushed into the cache once its choice is made) and per-stream
    ///   statistics `[B, 3 + h]`: attention entropy (nats) and maximum weight, both averaged over
    ///   heads, the L2 norm of the token's exact key, then each head's log-sum-exp of its scaled
    ///   scores (a key's weight is `exp(score − lse)`) — zeros unless `with_stats`.
    pub fn decode(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        caches: &[&LayerCache],
        storage: Storage,
        with_stats: bool,
    ) -> (Tensor<3>, Projected, Tensor<2>) {
        let [b, t, _] = x.dims();
        assert_eq!(t, 1, "decode takes one token per stream");
        assert_eq!(caches.len(), b, "one layer cache per stream");
        let (h, dh) = (self.dims.heads, self.dims.head_dim);
        let p = self.project(x, rope);
        let q_dense = self.query(&p); // [B, 1, h, d_h]
        let (k_exact, v_exact) = self.exact_kv(&p);
        let scale = 1.0 / (dh as f32).sqrt();
        if storage == Storage::Host {
            let (out, stats) = self.decode_host(&p, q_dense, scale, k_exact, v_exact, caches, with_stats);
            return (self.o.forward(out), p, stats);
        }
        let mut outs = Vec::with_capacity(b);
        let mut stats = Vec::with_capacity(b);
        for (s, cache) in caches.iter().enumerate() {
            let pick = |x: &Tensor<4>| {
                let [_, _, a, c] = x.dims();
                x.clone().narrow(0, s, 1).reshape([a, c])
            };
            let q_s = pick(&q_dense) * scale; // [h, d_h], the softmax scale folded in
            // Scores per cached group, each [h, N_g], then the token itself. Scalar factors
            // (1/R_Q, 1/ρ) are applied to the small query-side operands, not to the N-sized ones.
            let mut scores: Vec<Tensor<2>> = Vec::new();
            for group in cache.groups() {
                scores.push(match group {
                    Group::Factors { rank, a_k, b_k, .. } => {
                        let [n, rho, _] = a_k.dims();
                        let b_k = b_k.clone().reshape([n * rho, dh]);
                        // [N·ρ, h]: B_K·B_Qᵀ then A_Qᵀ (FlashTPA order), or B_K·qᵀ for a dense query.
                        let p2 = match &p.q_factors {
                            Some((aq, bq)) => {
                                let (aq, bq) = (pick(aq), pick(bq)); // [h, R_Q], [R_Q, d_h]
                                let bq = bq * (scale / (self.dims.q_rank * rank) as f32);
                                b_k.matmul(bq.transpose()).matmul(aq.transpose())
                            }
                            None => b_k.matmul(q_s.clone().transpose() / *rank as f32),
                        };
                        let s = (p2 * a_k.clone().reshape([n * rho, h])).reshape([n, rho, h]).sum_dim(1);
                        s.reshape([n, h]).transpose()
                    }
                    Group::Dense { k, .. } => {
                        let n = k.dims()[1];
                        let s = self.expand_head_major(k.clone()).matmul(q_s.clone().reshape([h, dh, 1])); // [h, N, 1]
                        s.reshape([h, n])
                    }
                });
            }
            let k_self = pick(&k_exact);
            scores.push((q_s * k_self).sum_dim(1)); // [h, 1]
            let sizes: Vec<usize> = scores.iter().map(|s| s.dims()[1]).collect();
            let scores = Tensor::cat(scores, 1); // [h, N + 1]
            let top = scores.clone().max_dim(1); // [h, 1]
            let lse = (scores.clone() - top.clone()).exp().sum_dim(1).log() + top; // [h, 1]
            let probs = softmax(scores, 1);
            if with_stats {
                let entropy = (probs.clone() * probs.clone().clamp_min(1e-30).log()).sum_dim(1).neg().mean();
                let max_weight = probs.clone().max_dim(1).mean();
                let key_norm = pick(&k_exact).square().sum().sqrt();
                stats.push(Tensor::cat(vec![entropy, max_weight, key_norm, lse.reshape([h])], 0).reshape([1, 3 + h]));
            }

            let mut offset = 0;
            let mut out: Option<Tensor<2>> = None;
            for (group, &n) in cache.groups().zip(&sizes) {
                let p_g = probs.clone().narrow(1, offset, n); // [h, N_g]
                offset += n;
                let part = match group {
                    Group::Factors { rank, a_v, b_v, .. } => {
                        let rho = *rank;
                        let w = (p_g.transpose().unsqueeze_dim::<3>(1) * a_v.clone()).reshape([n * rho, h]);
                        w.transpose().matmul(b_v.clone().reshape([n * rho, dh])) / rho as f32
                    }
                    Group::Dense { v, .. } => {
                        p_g.reshape([h, 1, n]).matmul(self.expand_head_major(v.clone())).reshape([h, dh])
                    }
                };
                out = Some(match out {
                    Some(o) => o + part,
                    None => part,
                });
            }
            let own = probs.narrow(1, offset, 1) * pick(&v_exact); // [h, 1] · [h, d_h]
            let out = match out {
                Some(o) => o + own,
                None => own,
            };
            outs.push(out.reshape([1, 1, h * dh]));
        }
        let stats = if with_stats { Tensor::cat(stats, 0) } else { Tensor::zeros([b, 3 + h], &q_dense.device()) };
        (self.o.forward(Tensor::cat(outs, 0)), p, stats)
    }

    /// [`Attention::decode`] over host caches: the fused kernel of [`crate::host`], one stream per
    /// task (streams run in parallel). `q` is the materialised query, `scale` the softmax scale.
    fn decode_host(
        &self,
        p: &Projected,
        q: Tensor<4>,
        scale: f32,
        k_exact: Tensor<4>,
        v_exact: Tensor<4>,
        caches: &[&LayerCache],
        with_stats: bool,
    ) -> (Tensor<3>, Tensor<2>) {
        use rayon::prelude::*;
        let device = q.device();
        let b = caches.len();
        let AttnDims { heads: h, kv_heads, head_dim: dh, q_rank: rq, .. } = self.dims;
        let dims = HeadDims { heads: h, kv_heads, head_dim: dh };
        let host = |x: Tensor<4>| host::to_host(x).expect("attention tensors hold f32");
        // FlashTPA's order (B_K·B_Qᵀ, then A_Q) when it costs fewer multiply-adds per cached factor
        // row than contracting B_K with the materialised query.
        let factor_order = p
            .q_factors
            .as_ref()
            .filter(|_| rq * dh + h * rq < h * dh)
            .map(|(aq, bq)| (host(bq.clone() * scale), host(aq.clone() / rq as f32)));
        let (q, k, v) = (host(q * scale), host(k_exact), host(v_exact));
        let mut out = vec![0f32; b * h * dh];
        let width = 3 + h;
        let mut stats = vec![0f32; b * width];
        // Fewer streams than threads: each stream's cache is split across the threads too.
        let split = b < rayon::current_num_threads();
        let one = |s: usize, out: &mut [f32], stats: &mut [f32]| {
            let span = s * h * dh..(s + 1) * h * dh;
            let (rows, head_mix) = match &factor_order {
                Some((bq, aq)) => (&bq[s * rq * dh..(s + 1) * rq * dh], Some(&aq[s * h * rq..(s + 1) * h * rq])),
                None => (&q[span.clone()], None),
            };
            let query =
                StepQuery { rows, head_mix, query: &q[span.clone()], key: &k[span.clone()], value: &v[span.clone()] };
            host::attend_stream(
                dims,
                &caches[s].host_groups().collect::<Vec<_>>(),
                query,
                out,
                stats,
                with_stats,
                split,
            );
        };
        if b == 1 {
            one(0, &mut out, &mut stats);
        } else {
            out.par_chunks_mut(h * dh)
                .zip(stats.par_chunks_mut(width))
                .enumerate()
                .for_each(|(s, (o, st))| one(s, o, st));
        }
        let out = Tensor::<3>::from_data(TensorData::new(out, [b, 1, h * dh]), &device);
        (out, Tensor::<2>::from_data(TensorData::new(stats, [b, width]), &device))
    }
}
