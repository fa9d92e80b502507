//! Test helpers: random weights, a T6 weight file writer and a naive reference forward.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use ahr_tpa::{Choices, KvCache, Model, Storage};
use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use ahr_tpa::model::randomize;

pub fn device() -> Device {
    ahr_tpa::device::from_env()
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

/// Largest |a - b| relative to max(1, |b|).
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

/// Decode `tokens` ([B][T], row-major) one token at a time, pushing `choices`; returns
/// logits [B][T][V] flattened in the same order as a parallel forward.
pub fn decode_all(
    model: &Model,
    tokens: &[u32],
    batch: usize,
    seq_len: usize,
    choices: &Choices,
) -> (Vec<f32>, KvCache) {
    let storage = Storage::for_device(&device());
    let (logits, _, cache) = decode_with(model, tokens, batch, seq_len, choices, storage);
    (logits, cache)
}

/// [`decode_all`] with the cache kept in `storage`; also returns every step's policy statistics
/// (`[B, L, 3]` per step, flattened in step order).
pub fn decode_with(
    model: &Model,
    tokens: &[u32],
    batch: usize,
    seq_len: usize,
    choices: &Choices,
    storage: Storage,
) -> (Vec<f32>, Vec<f32>, KvCache) {
    let dev = device();
    let cfg = model.config().clone();
    let mut cache = KvCache::with_storage(&cfg, batch, storage);
    let v = cfg.vocab_size;
    let mut out = vec![0f32; batch * seq_len * v];
    let mut stats = Vec::new();
    // A host cache decodes through the plain-loop step, as the environment and `generate` do.
    let host = (storage == Storage::Host).then(|| ahr_tpa::HostModel::new(model).unwrap());
    for t in 0..seq_len {
        let ids: Vec<u32> = (0..batch).map(|b| tokens[b * seq_len + t]).collect();
        let step = model.step_ids(host.as_ref(), &ids, &cache, true, &dev).unwrap();
        stats.extend(to_vec(step.layer_stats));
        let (logits, pending) = (to_vec(step.logits), step.pending);
        for b in 0..batch {
            out[(b * seq_len + t) * v..(b * seq_len + t + 1) * v].copy_from_slice(&logits[b * v..(b + 1) * v]);
        }
        let c: Vec<usize> = (0..batch)
            .flat_map(|b| (0..cfg.n_layers).map(move |l| (b, l)))
            .map(|(b, l)| choices.get(b, t, l))
            .collect();
        cache.push(pending, &c).unwrap();
    }
    (out, stats, cache)
}

/// A T6 checkpoint in PyTorch layout: name → (shape, values).
pub type T6Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub struct T6Dims {
    pub vocab: usize,
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub d: usize,
    pub rank: usize,
    pub q_rank: usize,
}

impl T6Dims {
    pub fn hidden(&self) -> usize {
        8 * self.d / 3
    }

    pub fn config_json(&self) -> String {
        format!(
            r#"{{"vocab_size": {}, "n_layer": {}, "n_head": {}, "head_dim": {}, "n_embd": {}, "rank": {}, "q_rank": {}, "block_size": 64, "bias": false, "dropout": 0.0}}"#,
            self.vocab, self.layers, self.heads, self.head_dim, self.d, self.rank, self.q_rank
        )
    }

    /// Random weights with T6's names and shapes; `lm_head` is present only when `untied`.
    pub fn random_weights(&self, seed: u64, untied: bool) -> T6Weights {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut w = T6Weights::new();
        let mut add = |name: String, shape: Vec<usize>, scale: f32| {
            let n = shape.iter().product();
            let v = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
            w.insert(name, (shape, v));
        };
        let (d, h, dh, r, rq, hid) = (self.d, self.heads, self.head_dim, self.rank, self.q_rank, self.hidden());
        add("transformer.wte.weight".into(), vec![self.vocab, d], 1.0);
        if untied {
            add("lm_head.weight".into(), vec![self.vocab, d], 0.3);
        }
        for i in 0..self.layers {
            let p = format!("transformer.h.{i}");
            for (m, out) in [
                ("W_A_q", h * rq),
                ("W_A_k", h * r),
                ("W_A_v", h * r),
                ("W_B_q", rq * dh),
                ("W_B_k", r * dh),
                ("W_B_v", r * dh),
            ] {
                add(format!("{p}.attn.c_qkv.{m}.weight"), vec![out, d], 0.5);
            }
            add(format!("{p}.attn.c_proj.weight"), vec![d, h * dh], 0.3);
            add(format!("{p}.mlp.c_fc1.weight"), vec![hid, d], 0.3);
            add(format!("{p}.mlp.c_fc2.weight"), vec![hid, d], 0.3);
            add(format!("{p}.mlp.c_proj.weight"), vec![d, hid], 0.3);
        }
        w
    }
}

pub fn write_safetensors(weights: &T6Weights, path: &Path) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn matvec(w: &(Vec<usize>, Vec<f32>), x: &[f32]) -> Vec<f32> {
    let (out, inp) = (w.0[0], w.0[1]);
    assert_eq!(inp, x.len());
    (0..out).map(|o| (0..inp).map(|j| w.1[o * inp + j] * x[j]).sum()).collect()
}

fn rms(x: &[f32]) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = (ms + f32::EPSILON).sqrt();
    x.iter().map(|v| v / s).collect()
}

fn rope_row(b: &mut [f32], pos: usize) {
    let dh = b.len();
    let half = dh / 2;
    for i in 0..half {
        let theta = pos as f64 * 10_000f64.powf(-((2 * i) as f64) / dh as f64);
        let (c, s) = (theta.cos() as f32, theta.sin() as f32);
        let (x1, x2) = (b[i], b[i + half]);
        b[i] = x1 * c + x2 * s;
        b[i + half] = -x1 * s + x2 * c;
    }
}

/// `(1/rank) Σ_r A[h][r] · B[r][:]` with A viewed [h, rank] and B [rank, dh]; RoPE on B rows if asked.
fn tpa_product(a: &[f32], b: &[f32], h: usize, rank: usize, dh: usize, rope_pos: Option<usize>) -> Vec<Vec<f32>> {
    let mut b = b.to_vec();
    if let Some(pos) = rope_pos {
        for r in 0..rank {
            rope_row(&mut b[r * dh..(r + 1) * dh], pos);
        }
    }
    (0..h)
        .map(|hh| {
            (0..dh).map(|e| (0..rank).map(|r| a[hh * rank + r] * b[r * dh + e]).sum::<f32>() / rank as f32).collect()
        })
        .collect()
}

/// T6's forward written straight from the formulas, in plain f32 loops: logits [T][V].
pub fn naive_t6_logits(w: &T6Weights, dims: &T6Dims, tokens: &[u32]) -> Vec<Vec<f32>> {
    let (d, h, dh, r, rq) = (dims.d, dims.heads, dims.head_dim, dims.rank, dims.q_rank);
    let wte = &w["transformer.wte.weight"];
    let mut x: Vec<Vec<f32>> = tokens.iter().map(|&t| wte.1[t as usize * d..(t as usize + 1) * d].to_vec()).collect();
    let n = tokens.len();
    for i in 0..dims.layers {
        let g = |m: &str| &w[&format!("transformer.h.{i}.attn.c_qkv.{m}.weight")];
        let (mut q, mut k, mut v) = (vec![], vec![], vec![]);
        for (t, xt) in x.iter().enumerate() {
            let xn = rms(xt);
            q.push(tpa_product(&matvec(g("W_A_q"), &xn), &matvec(g("W_B_q"), &xn), h, rq, dh, Some(t)));
            k.push(tpa_product(&matvec(g("W_A_k"), &xn), &matvec(g("W_B_k"), &xn), h, r, dh, Some(t)));
            v.push(tpa_product(&matvec(g("W_A_v"), &xn), &matvec(g("W_B_v"), &xn), h, r, dh, None));
        }
        let scale = 1.0 / (dh as f32).sqrt();
        for t in 0..n {
            let mut y = vec![0f32; h * dh];
            for hh in 0..h {
                let scores: Vec<f32> =
                    (0..=t).map(|s| (0..dh).map(|e| q[t][hh][e] * k[s][hh][e]).sum::<f32>() * scale).collect();
                let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let z: f32 = scores.iter().map(|s| (s - m).exp()).sum();
                for (s, sc) in scores.iter().enumerate() {
                    let p = (sc - m).exp() / z;
                    for e in 0..dh {
                        y[hh * dh + e] += p * v[s][hh][e];
                    }
                }
            }
            let out = matvec(&w[&format!("transformer.h.{i}.attn.c_proj.weight")], &y);
            for j in 0..d {
                x[t][j] += out[j];
            }
        }
        for xt in x.iter_mut() {
            let xn = rms(xt);
            let f1 = matvec(&w[&format!("transformer.h.{i}.mlp.c_fc1.weight")], &xn);
            let f2 = matvec(&w[&format!("transformer.h.{i}.mlp.c_fc2.weight")], &xn);
            let hdn: Vec<f32> = f1.iter().zip(&f2).map(|(a, b)| a / (1.0 + (-a).exp()) * b).collect();
            let out = matvec(&w[&format!("transformer.h.{i}.mlp.c_proj.weight")], &hdn);
            for j in 0..d {
                xt[j] += out[j];
            }
        }
    }
    let head = w.get("lm_head.weight").unwrap_or(wte);
    x.iter().map(|xt| matvec(head, &rms(xt))).collect()
}
