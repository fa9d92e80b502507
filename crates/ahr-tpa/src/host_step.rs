//! The decode step on the CPU without tensor ops: [`HostModel`] keeps a host copy of a model's
//! weights and runs [`Model::step`]'s computation for one token per stream as plain loops
//! (compiled by [`pulp`] for the widest instruction set the CPU has) around the fused attention
//! kernel of [`crate::host`].
//!
//! A decode step of a small model is a few hundred tiny tensor ops (norms, projections, rotary
//! embedding, the LM head); on the CPU backend each costs microseconds of dispatch and thread
//! wake-ups, several times the step's memory traffic. Here a step reads each weight once for every
//! stream together and allocates a few vectors. It computes the same function as the tensor path
//! (`host_step = tensor step` within float rounding, tested); only the order of some sums differs.

use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::cache::{KvCache, PendingToken, Storage};
use crate::config::{ModelConfig, StoreOption};
use crate::error::{Error, Result};
use crate::host::{self, HeadDims, StepQuery, to_host};
use crate::model::{Model, StepOutput, check_position, check_vocabulary};
use crate::projected::Projected;
use crate::rope;

/// A linear map `y = x·W + b` (`W` `[d_in, d_out]`, burn's layout) in host memory, `W` stored in
/// blocks of [`COLUMNS`] output columns, each `[d_in, COLUMNS]` contiguous (the last one padded
/// with zeros): rows of `W` a power of two apart would share L1 sets and evict each other.
#[derive(Clone, Debug)]
struct HostLinear {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    d_in: usize,
    d_out: usize,
}

/// Output columns computed together: their sums stay in registers (four AVX-512 ones) over the
/// whole input, and the `[d_in, COLUMNS]` slice of `W` stays in L1 while every row reads it.
const COLUMNS: usize = 64;

/// Cached tokens of a layer (all streams) from which its attention runs on rayon's threads.
const PARALLEL_TOKENS: usize = 4096;

/// Multiply-adds above which a linear map runs its column blocks on rayon's threads.
const PARALLEL_WORK: usize = 1 << 22;

/// The same where the pool's threads are known to be awake: called from a worker of rayon's pool
/// (a decode loop inside [`host::on_workers`](crate::host::on_workers)) right after the step's
/// attention ran on every core, sharing the work costs a join rather than a wake-up. The tied LM
/// head of a decode step at batch 1 (`[d, V]`, 0.4 M multiply-adds and 1.5 MB of `W` for the `mqar`
/// preset, read from L3 at each step) then runs on every core, each reading its share of `W`.
/// After an attention on one thread the other threads sleep, and waking one cost more than it saved
/// (1k-token caches, batch 1: 0.035 → 0.049 ms a step). With the split, a step at 16k tokens, batch
/// 1, took 0.86–0.90 of the time, at 1k tokens, batch 8, 0.88–0.92 for dense and `rank:1` caches
/// (`docs/results/decode-head-2026-12-05/`).
const PARALLEL_WORK_AWAKE: usize = 1 << 16;

impl HostLinear {
    fn new(l: &Linear) -> Result<Self> {
        let [d_in, d_out] = l.weight.dims();
        let w = to_host(l.weight.val())?;
        let b = l.bias.as_ref().map(|b| to_host(b.val())).transpose()?;
        Ok(Self::blocked(|i, o| w[i * d_out + o], d_in, d_out, b))
    }

    /// `[d, V]` from an embedding table `[V, d]` (a tied LM head).
    fn transposed(table: &[f32], rows: usize, cols: usize) -> Self {
        Self::blocked(|i, o| table[o * cols + i], cols, rows, None)
    }

    /// The blocked layout of `W[i, o] = at(i, o)`.
    fn blocked(at: impl Fn(usize, usize) -> f32, d_in: usize, d_out: usize, b: Option<Vec<f32>>) -> Self {
        let blocks = d_out.div_ceil(COLUMNS);
        let mut w = vec![0f32; blocks * d_in * COLUMNS];
        for c in 0..blocks {
            for i in 0..d_in {
                for l in 0..COLUMNS.min(d_out - c * COLUMNS) {
                    w[(c * d_in + i) * COLUMNS + l] = at(i, c * COLUMNS + l);
                }
            }
        }
        Self { w, b, d_in, d_out }
    }

    /// `xs` `[n, d_in]` → `[n, d_out]`; each output is `b + Σ_i x_i·W_i` summed in order of i.
    fn forward(&self, xs: &[f32], n: usize) -> Vec<f32> {
        self.forward_awake(xs, n, false)
    }

    /// [`Self::forward`], told whether the pool's threads are awake ([`PARALLEL_WORK_AWAKE`]).
    fn forward_awake(&self, xs: &[f32], n: usize, awake: bool) -> Vec<f32> {
        debug_assert_eq!(xs.len(), n * self.d_in);
        let mut ys = vec![0f32; n * self.d_out];
        let blocks = self.d_out.div_ceil(COLUMNS);
        let work = n * self.d_in * self.d_out;
        let awake = awake && rayon::current_thread_index().is_some() && work >= PARALLEL_WORK_AWAKE;
        let threads = rayon::current_num_threads().min(blocks);
        if threads < 2 || (work < PARALLEL_WORK && !awake) {
            pulp::Arch::new().dispatch(Columns {
                linear: self,
                xs,
                n,
                blocks: 0..blocks,
                out: &mut ys,
                stride: self.d_out,
            });
            return ys;
        }
        // Side by side: a run of column blocks per thread, each into a buffer of its own
        // `[n, width]`, then copied. Every column is summed as above, so the bits do not change.
        let runs: Vec<std::ops::Range<usize>> =
            (0..threads).map(|t| t * blocks / threads..(t + 1) * blocks / threads).collect();
        let width = |run: &std::ops::Range<usize>| (run.end * COLUMNS).min(self.d_out) - run.start * COLUMNS;
        let mut chunks: Vec<Vec<f32>> = runs.iter().map(|run| vec![0f32; n * width(run)]).collect();
        chunks.par_iter_mut().zip(&runs).for_each(|(out, run)| {
            let stride = out.len() / n;
            pulp::Arch::new().dispatch(Columns { linear: self, xs, n, blocks: run.clone(), out, stride });
        });
        for (chunk, run) in chunks.iter().zip(&runs) {
            let width = width(run);
            for r in 0..n {
                let at = r * self.d_out + run.start * COLUMNS;
                ys[at..at + width].copy_from_slice(&chunk[r * width..(r + 1) * width]);
            }
        }
        ys
    }

    /// Output columns `first..first + width` (one block) of every row r, into
    /// `out[r·stride + at..][..width]`. The sums live in a fixed-size array the compiler keeps in
    /// registers.
    #[inline(always)]
    fn columns(&self, xs: &[f32], n: usize, first: usize, out: &mut [f32], stride: usize, at: usize) {
        let width = COLUMNS.min(self.d_out - first);
        let block = &self.w[first * self.d_in..(first + COLUMNS) * self.d_in];
        for r in 0..n {
            let mut acc = [0f32; COLUMNS];
            if let Some(b) = &self.b {
                acc[..width].copy_from_slice(&b[first..first + width]);
            }
            for (i, &x) in xs[r * self.d_in..(r + 1) * self.d_in].iter().enumerate() {
                let w: &[f32; COLUMNS] = block[i * COLUMNS..(i + 1) * COLUMNS].try_into().expect("a whole block");
                for l in 0..COLUMNS {
                    acc[l] = x.mul_add(w[l], acc[l]);
                }
            }
            out[r * stride + at..r * stride + at + width].copy_from_slice(&acc[..width]);
        }
    }
}

/// [`HostLinear::columns`]' arguments, so that [`pulp`] compiles it (inlined) once per instruction
/// set — a closure body would not be inlined, and `mul_add` outside an FMA-enabled function is a
/// library call.
struct Columns<'a> {
    linear: &'a HostLinear,
    xs: &'a [f32],
    n: usize,
    /// Blocks of columns to compute; `out[0]` is the first column of the first one.
    blocks: std::ops::Range<usize>,
    out: &'a mut [f32],
    /// Floats between rows of `out`.
    stride: usize,
}

impl pulp::WithSimd for Columns<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let base = self.blocks.start * COLUMNS;
        for c in self.blocks {
            self.linear.columns(self.xs, self.n, c * COLUMNS, self.out, self.stride, c * COLUMNS - base);
        }
    }
}

/// One layer's weights.
#[derive(Clone, Debug)]
struct HostLayer {
    a_q: Option<HostLinear>,
    b_q: Option<HostLinear>,
    q: Option<HostLinear>,
    a_k: Option<HostLinear>,
    b_k: Option<HostLinear>,
    a_v: Option<HostLinear>,
    b_v: Option<HostLinear>,
    k: Option<HostLinear>,
    v: Option<HostLinear>,
    o: HostLinear,
    /// SwiGLU: gate, up, down.
    mlp: Option<[HostLinear; 3]>,
}

/// A host copy of a model's weights that decodes like [`Model::step`] (see the module docs).
/// Build it once per model ([`HostModel::new`]) and step with [`Model::step_ids`].
#[derive(Clone)]
pub struct HostModel {
    config: ModelConfig,
    /// `[V, d]`.
    embed: Vec<f32>,
    /// `[max_positions, d]`.
    pos_embed: Option<Vec<f32>>,
    layers: Vec<HostLayer>,
    head: HostLinear,
}

impl std::fmt::Debug for HostModel {
    /// The config and the size, not the weights.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let floats = self.embed.len() + self.head.w.len();
        f.debug_struct("HostModel").field("config", &self.config).field("embedding_and_head_floats", &floats).finish()
    }
}

impl HostModel {
    /// Copy `model`'s weights to host memory.
    pub fn new(model: &Model) -> Result<Self> {
        let config = model.config().clone();
        let lin = |l: &Option<Linear>| l.as_ref().map(HostLinear::new).transpose();
        let layers = model
            .blocks
            .iter()
            .map(|b| {
                let a = &b.attn;
                Ok(HostLayer {
                    a_q: lin(&a.a_q)?,
                    b_q: lin(&a.b_q)?,
                    q: lin(&a.q)?,
                    a_k: lin(&a.a_k)?,
                    b_k: lin(&a.b_k)?,
                    a_v: lin(&a.a_v)?,
                    b_v: lin(&a.b_v)?,
                    k: lin(&a.k)?,
                    v: lin(&a.v)?,
                    o: HostLinear::new(&a.o)?,
                    mlp: match &b.mlp {
                        Some(m) => {
                            Some([HostLinear::new(&m.fc1)?, HostLinear::new(&m.fc2)?, HostLinear::new(&m.proj)?])
                        }
                        None => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = to_host(model.embed.weight.val())?;
        let head = match &model.lm_head {
            Some(h) => HostLinear::new(h)?,
            None => HostLinear::transposed(&embed, config.vocab_size, config.d_model),
        };
        let pos_embed = model.pos_embed.as_ref().map(|p| to_host(p.weight.val())).transpose()?;
        Ok(Self { config, embed, pos_embed, layers, head })
    }

    /// One decode step for `ids` (one token per stream of `cache`, a host cache), as
    /// [`Model::step_with_stats`] computes it (statistics zero unless `with_stats`, the
    /// log-sum-exps always). Outputs are tensors on `device`.
    pub fn step(&self, ids: &[u32], cache: &KvCache, with_stats: bool, device: &Device) -> Result<StepOutput> {
        let cfg = &self.config;
        let b_n = cache.batch();
        if ids.len() != b_n {
            return Err(Error::Input(format!("step: {} token ids for {b_n} streams", ids.len())));
        }
        if cache.storage() != Storage::Host {
            return Err(Error::Input("the host decode step needs a host cache".into()));
        }
        check_vocabulary(cfg, ids)?;
        let (d, pos) = (cfg.d_model, cache.position());
        let mut x: Vec<f32> =
            ids.iter().flat_map(|&t| self.embed[t as usize * d..(t as usize + 1) * d].to_vec()).collect();
        if let Some(table) = &self.pos_embed {
            check_position(cfg, pos)?;
            for row in x.chunks_mut(d) {
                row.iter_mut().zip(&table[pos * d..(pos + 1) * d]).for_each(|(a, p)| *a += p);
            }
        }
        let rope = rope::angles(pos, 1, cfg.head_dim, cfg.rope_base);
        let (h, l_n) = (cfg.n_heads, cfg.n_layers);
        let mut layers = Vec::with_capacity(l_n);
        let mut stats = vec![0f32; b_n * l_n * (3 + h)];
        let mut awake = false;
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = rms_norm_rows(&x, d, cfg.norm_eps);
            let proj = self.project(layer, &normed, b_n, &rope);
            let groups = cache.layer(l);
            let (out, layer_stats, threads) = self.attend(&proj, &groups, with_stats);
            awake = threads;
            let o = layer.o.forward(&out, b_n);
            x.iter_mut().zip(&o).for_each(|(a, o)| *a += o);
            if let Some([gate, up, down]) = &layer.mlp {
                let normed = rms_norm_rows(&x, d, cfg.norm_eps);
                let (g, u) = (gate.forward(&normed, b_n), up.forward(&normed, b_n));
                let act = swiglu(&g, &u);
                let y = down.forward(&act, b_n);
                x.iter_mut().zip(&y).for_each(|(a, y)| *a += y);
            }
            for s in 0..b_n {
                let row = &layer_stats[s * (3 + h)..(s + 1) * (3 + h)];
                stats[(s * l_n + l) * (3 + h)..(s * l_n + l + 1) * (3 + h)].copy_from_slice(row);
            }
            layers.push(proj.tensors(cfg, b_n, device));
        }
        let hidden = rms_norm_rows(&x, d, cfg.norm_eps);
        let logits = self.head.forward_awake(&hidden, b_n, awake);
        let stats = Tensor::<3>::from_data(TensorData::new(stats, [b_n, l_n, 3 + h]), device);
        Ok(StepOutput {
            logits: Tensor::from_data(TensorData::new(logits, [b_n, cfg.vocab_size]), device),
            pending: PendingToken { layers },
            layer_stats: stats.clone().narrow(2, 0, 3),
            lse: stats.narrow(2, 3, h),
        })
    }

    /// Every projection of one layer for every stream, rotated where the tensor path rotates.
    fn project(&self, layer: &HostLayer, x: &[f32], b_n: usize, rope: &(Vec<f32>, Vec<f32>)) -> HostProjected {
        let cfg = &self.config;
        let dh = cfg.head_dim;
        let run = |l: &Option<HostLinear>, rotate: bool| {
            l.as_ref().map(|l| {
                let mut y = l.forward(x, b_n);
                if rotate {
                    y.chunks_mut(dh).for_each(|row| rope::rotate(row, &rope.0, &rope.1));
                }
                y
            })
        };
        HostProjected {
            a_q: run(&layer.a_q, false),
            b_q: run(&layer.b_q, true),
            q: run(&layer.q, true),
            a_k: run(&layer.a_k, false),
            b_k: run(&layer.b_k, true),
            a_v: run(&layer.a_v, false),
            b_v: run(&layer.b_v, false),
            k: run(&layer.k, true),
            v: run(&layer.v, false),
        }
    }

    /// Attention of every stream over its cache: outputs `[B, h·d_h]` and statistics `[B, 3 + h]`
    /// (entropy, maximum weight, key norm — zeros unless `with_stats` — then the log-sum-exps), and
    /// whether it ran on rayon's threads.
    fn attend(
        &self,
        p: &HostProjected,
        caches: &[&crate::cache::LayerCache],
        with_stats: bool,
    ) -> (Vec<f32>, Vec<f32>, bool) {
        let cfg = &self.config;
        let b_n = caches.len();
        let (h, dh, rq, r) = (cfg.n_heads, cfg.head_dim, cfg.q_rank, cfg.kv_rank_max);
        let kvh = cfg.kv_heads();
        let dims = HeadDims { heads: h, kv_heads: kvh, head_dim: dh };
        let scale = 1.0 / (dh as f32).sqrt();
        let width = 3 + h;
        let mut out = vec![0f32; b_n * h * dh];
        let mut stats = vec![0f32; b_n * width];
        // Threads only where there is work for them: handing a job to rayon's pool from another
        // thread costs a wake-up, more than attending over a short cache.
        let held: usize = caches.iter().flat_map(|c| c.host_groups()).map(|g| g.tiles.len()).sum();
        let threads = held >= PARALLEL_TOKENS;
        let split = threads && b_n < rayon::current_num_threads();
        let one = |s: usize, out: &mut [f32], stats: &mut [f32]| {
            // The materialised query `[h, d_h]` (TPA: A_Q·B_Q / R_Q), scale folded in.
            let mut query = vec![0f32; h * dh];
            match (&p.a_q, &p.b_q, &p.q) {
                (Some(aq), Some(bq), _) => {
                    let (aq, bq) = (&aq[s * h * rq..(s + 1) * h * rq], &bq[s * rq * dh..(s + 1) * rq * dh]);
                    for hh in 0..h {
                        for i in 0..dh {
                            let sum: f32 = (0..rq).map(|j| aq[hh * rq + j] * bq[j * dh + i]).sum();
                            query[hh * dh + i] = sum / rq as f32 * scale;
                        }
                    }
                }
                (_, _, Some(q)) => {
                    query.iter_mut().zip(&q[s * h * dh..(s + 1) * h * dh]).for_each(|(a, q)| *a = q * scale);
                }
                _ => unreachable!("every family projects a query"),
            }
            // The token's exact key and value `[h, d_h]`.
            let (mut key, mut value) = (vec![0f32; h * dh], vec![0f32; h * dh]);
            match cfg.exact_option() {
                StoreOption::Rank(rho) => {
                    let f = |a: &Vec<f32>, b: &Vec<f32>, dst: &mut [f32]| {
                        let (a, b) = (&a[s * h * r..(s + 1) * h * r], &b[s * r * dh..(s + 1) * r * dh]);
                        for hh in 0..h {
                            for i in 0..dh {
                                let sum: f32 = (0..rho).map(|j| a[hh * r + j] * b[j * dh + i]).sum();
                                dst[hh * dh + i] = sum / rho as f32;
                            }
                        }
                    };
                    let [ak, bk, av, bv] = p.factors();
                    f(ak, bk, &mut key);
                    f(av, bv, &mut value);
                }
                _ => {
                    let (k, v) = (p.k.as_ref().expect("dense K"), p.v.as_ref().expect("dense V"));
                    for hh in 0..h {
                        let src = s * kvh * dh + dims.kv_offset(hh);
                        key[hh * dh..(hh + 1) * dh].copy_from_slice(&k[src..src + dh]);
                        value[hh * dh..(hh + 1) * dh].copy_from_slice(&v[src..src + dh]);
                    }
                }
            }
            // FlashTPA's order (B_K·B_Qᵀ, then A_Q) when it costs fewer multiply-adds per cached
            // factor row than contracting B_K with the materialised query (as the tensor path).
            let factor_order = p.a_q.is_some() && rq * dh + h * rq < h * dh;
            let (rows, head_mix) = match factor_order {
                true => {
                    let (aq, bq) = (p.a_q.as_ref().expect("A_Q"), p.b_q.as_ref().expect("B_Q"));
                    let rows: Vec<f32> = bq[s * rq * dh..(s + 1) * rq * dh].iter().map(|x| x * scale).collect();
                    let mix: Vec<f32> = aq[s * h * rq..(s + 1) * h * rq].iter().map(|x| x / rq as f32).collect();
                    (rows, Some(mix))
                }
                false => (query.clone(), None),
            };
            let q = StepQuery { rows: &rows, head_mix: head_mix.as_deref(), query: &query, key: &key, value: &value };
            host::attend_stream(dims, &caches[s].host_groups().collect::<Vec<_>>(), q, out, stats, with_stats, split);
        };
        let rows = out.chunks_mut(h * dh).zip(stats.chunks_mut(width)).enumerate();
        if threads && b_n > 1 {
            rows.par_bridge().for_each(|(s, (o, st))| one(s, o, st));
        } else {
            rows.for_each(|(s, (o, st))| one(s, o, st));
        }
        let on_threads = threads && (b_n > 1 || (split && host::splits(&caches[0].host_groups().collect::<Vec<_>>())));
        (out, stats, on_threads)
    }
}

/// One layer's projections of every stream's token, `[B, …]` row-major.
struct HostProjected {
    a_q: Option<Vec<f32>>,
    b_q: Option<Vec<f32>>,
    q: Option<Vec<f32>>,
    a_k: Option<Vec<f32>>,
    b_k: Option<Vec<f32>>,
    a_v: Option<Vec<f32>>,
    b_v: Option<Vec<f32>>,
    k: Option<Vec<f32>>,
    v: Option<Vec<f32>>,
}

impl HostProjected {
    /// The K/V factors `A_K, B_K, A_V, B_V` (TPA).
    fn factors(&self) -> [&Vec<f32>; 4] {
        fn get(x: &Option<Vec<f32>>) -> &Vec<f32> {
            x.as_ref().expect("rank options need TPA factors")
        }
        [get(&self.a_k), get(&self.b_k), get(&self.a_v), get(&self.b_v)]
    }

    /// As tensors `[B, 1, …]` on `device`, as the cache and the review book take them.
    fn tensors(self, cfg: &ModelConfig, b_n: usize, device: &Device) -> Projected {
        let (h, dh, rq, r, kvh) = (cfg.n_heads, cfg.head_dim, cfg.q_rank, cfg.kv_rank_max, cfg.kv_heads());
        let t = |x: Vec<f32>, a: usize, c: usize| Tensor::<4>::from_data(TensorData::new(x, [b_n, 1, a, c]), device);
        Projected {
            q_factors: self.a_q.zip(self.b_q).map(|(a, b)| (t(a, h, rq), t(b, rq, dh))),
            q_dense: self.q.map(|q| t(q, h, dh)),
            kv_factors: match (self.a_k, self.b_k, self.a_v, self.b_v) {
                (Some(ak), Some(bk), Some(av), Some(bv)) => {
                    Some([t(ak, h, r), t(bk, r, dh), t(av, h, r), t(bv, r, dh)])
                }
                _ => None,
            },
            kv_dense: self.k.zip(self.v).map(|(k, v)| (t(k, kvh, dh), t(v, kvh, dh))),
        }
    }
}

/// RMSNorm without a weight over each row of `d`.
fn rms_norm_rows(x: &[f32], d: usize, eps: f64) -> Vec<f32> {
    x.chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let norm = (ms + eps as f32).sqrt();
            row.iter().map(move |v| v / norm)
        })
        .collect()
}

/// `silu(g)·u` element-wise, `silu(x) = x / (1 + e^−x)`, the exponentials vectorised
/// ([`crate::expf`]).
fn swiglu(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut e: Vec<f32> = g.iter().map(|x| -x).collect();
    crate::expf::exp_in_place(&mut e);
    g.iter().zip(u).zip(e).map(|((&g, &u), e)| g / (1.0 + e) * u).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linear map in column blocks gives the plain sum `b + Σ_i x_i·W_i` (a partial last block,
    /// a bias), on one thread and side by side (above `PARALLEL_WORK`).
    #[test]
    fn blocked_linear_maps_equal_the_plain_sum() {
        // Small (one thread), large (threads from anywhere), and in between: threads only from a
        // worker of a pool told its threads are awake (three threads here, so the runs of column
        // blocks are uneven and the last holds the partial block).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for (n, d_in, d_out) in [(3, 5, 70), (70, 64, 1000), (2, 48, 1000)] {
            let at = |i: usize, o: usize| ((i * 31 + o * 17) % 23) as f32 / 23.0 - 0.5;
            let bias: Vec<f32> = (0..d_out).map(|o| o as f32 * 0.01).collect();
            let lin = HostLinear::blocked(at, d_in, d_out, Some(bias.clone()));
            let work = n * d_in * d_out;
            assert_eq!(work >= PARALLEL_WORK, n == 70, "one case per path");
            assert_eq!((PARALLEL_WORK_AWAKE..PARALLEL_WORK).contains(&work), n == 2, "one case per path");
            let xs: Vec<f32> = (0..n * d_in).map(|k| ((k * 7) % 11) as f32 / 11.0 - 0.3).collect();
            for ys in [lin.forward(&xs, n), pool.install(|| lin.forward_awake(&xs, n, true))] {
                for r in 0..n {
                    for o in 0..d_out {
                        let want = (0..d_in).fold(bias[o], |acc, i| xs[r * d_in + i].mul_add(at(i, o), acc));
                        assert_eq!(ys[r * d_out + o], want, "row {r}, column {o}");
                    }
                }
            }
        }
    }
}
