//! Import of models trained with the official TPA code (`tensorgi/T6`, `model/T6.py`, class `GPT`).
//!
//! T6 stores PyTorch `nn.Linear` weights as `[out, in]`; burn keeps `[in, out]`, so every linear
//! weight is transposed. Factor outputs keep T6's head-major layout (`A` viewed as
//! `[n_head, rank]`, `B` as `[rank, head_dim]`), which is also ours. The imported menu is
//! `rank:1 … rank:R` (T6 has no dense K/V path); norms, RoPE and scaling match T6 exactly
//! (see `ModelConfig::norm_eps`, the rope module and `Attention`).

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::config::{AttentionKind, ModelConfig, StoreOption};
use crate::error::{Error, Result};
use crate::model::Model;

/// T6's `GPTConfig`, as written to JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct T6Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Model width.
    pub n_embd: usize,
    /// K/V rank (shared by K and V in T6).
    pub rank: usize,
    /// Query rank.
    pub q_rank: usize,
    /// Maximum sequence length (RoPE needs none; kept for reference).
    #[serde(default)]
    pub block_size: Option<usize>,
    /// T6 option: biases in linears (must be false).
    #[serde(default)]
    pub bias: Option<bool>,
    /// T6 option: dropout (ignored at inference).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// T6 option: per-head RMSNorm on the attention output (must be false).
    #[serde(default)]
    pub using_groupnorm: Option<bool>,
    /// T6 option (unused by T6's attention; accepted for compatibility).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: Option<bool>,
}

impl T6Config {
    /// Our model config for this T6 model; `tied` says whether the LM head shares the embedding.
    pub fn to_model_config(&self, tied: bool) -> ModelConfig {
        ModelConfig {
            vocab_size: self.vocab_size,
            d_model: self.n_embd,
            n_layers: self.n_layer,
            n_heads: self.n_head,
            head_dim: self.head_dim,
            attention: AttentionKind::Tpa,
            kv_heads: None,
            q_rank: self.q_rank,
            kv_rank_max: self.rank,
            factor_bias: false,
            menu: (1..=self.rank).map(StoreOption::Rank).collect(),
            mlp: true,
            max_positions: 0,
            tied_embeddings: tied,
            rope_base: 10_000.0,
            norm_eps: f32::EPSILON as f64,
        }
    }
}

struct Weights<'a> {
    path: &'a Path,
    tensors: SafeTensors<'a>,
    device: &'a Device,
    used: HashMap<String, bool>,
}

impl Weights<'_> {
    fn has(&self, name: &str) -> bool {
        self.used.contains_key(name)
    }

    /// Tensor `name` as f32 with the expected shape.
    fn get(&mut self, name: &str, shape: [usize; 2]) -> Result<Tensor<2>> {
        let view =
            self.tensors.tensor(name).map_err(|_| Error::weights(self.path, format!("missing tensor `{name}`")))?;
        if view.shape() != shape {
            return Err(Error::weights(
                self.path,
                format!("tensor `{name}` has shape {:?}, expected {shape:?}", view.shape()),
            ));
        }
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(Error::weights(
                    self.path,
                    format!("tensor `{name}` has dtype {other:?}; expected F32, BF16 or F16"),
                ));
            }
        };
        self.used.insert(name.to_string(), true);
        Ok(Tensor::from_data(TensorData::new(values, shape), self.device))
    }

    /// A PyTorch `nn.Linear` weight `[out, in]` as a bias-free burn `Linear` (`[in, out]`).
    fn linear(&mut self, name: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let w = self.get(name, [d_out, d_in])?;
        Ok(Linear { weight: Param::from_tensor(w.transpose()), bias: None })
    }
}

/// Read T6's config JSON.
pub fn load_config(path: &Path) -> Result<T6Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let cfg: T6Config = serde_json::from_str(&text).map_err(|e| Error::parse(path, e.to_string()))?;
    if cfg.bias == Some(true) {
        return Err(Error::config(path, "`bias = true` is not supported (T6's released configs use false)"));
    }
    if cfg.using_groupnorm == Some(true) {
        return Err(Error::config(path, "`using_groupnorm = true` is not supported"));
    }
    Ok(cfg)
}

/// Build a model from T6 weights (`safetensors`) and T6's config JSON.
pub fn import(weights_path: &Path, config_path: &Path, device: &Device) -> Result<Model> {
    let t6 = load_config(config_path)?;
    let bytes = std::fs::read(weights_path).map_err(|e| Error::io(weights_path, e))?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::parse(weights_path, format!("not a safetensors file: {e}")))?;
    let used = tensors.names().into_iter().map(|n| (n.to_string(), false)).collect();
    let mut w = Weights { path: weights_path, tensors, device, used };

    let (v, d) = (t6.vocab_size, t6.n_embd);
    let (has_wte, has_head) = (w.has("transformer.wte.weight"), w.has("lm_head.weight"));
    let (embed, head) = match (has_wte, has_head) {
        (false, false) => {
            return Err(Error::weights(weights_path, "missing both `transformer.wte.weight` and `lm_head.weight`"));
        }
        (true, false) => (w.get("transformer.wte.weight", [v, d])?, None),
        (false, true) => (w.get("lm_head.weight", [v, d])?, None),
        (true, true) => {
            let e = w.get("transformer.wte.weight", [v, d])?;
            let h = w.get("lm_head.weight", [v, d])?;
            let same = e.clone().equal(h.clone()).all().into_scalar::<bool>();
            (e, (!same).then_some(h))
        }
    };
    if t6.q_rank == 0 {
        return Err(Error::config(
            config_path,
            "`q_rank` must be at least 1 (T6_kvonly checkpoints are not supported)",
        ));
    }
    let config = t6.to_model_config(head.is_none());
    config.validate().map_err(|e| Error::config(config_path, e.to_string()))?;
    let mut model = Model::new(&config, device);
    model.embed.weight = Param::from_tensor(embed);
    model.lm_head = head.map(|h| Linear { weight: Param::from_tensor(h.transpose()), bias: None });

    let (h, dh, r, rq) = (t6.n_head, t6.head_dim, t6.rank, t6.q_rank);
    let hidden = config.mlp_hidden();
    for (i, block) in model.blocks.iter_mut().enumerate() {
        let p = format!("transformer.h.{i}");
        let qkv = format!("{p}.attn.c_qkv");
        let a = &mut block.attn;
        a.a_q = Some(w.linear(&format!("{qkv}.W_A_q.weight"), d, h * rq)?);
        a.a_k = Some(w.linear(&format!("{qkv}.W_A_k.weight"), d, h * r)?);
        a.a_v = Some(w.linear(&format!("{qkv}.W_A_v.weight"), d, h * r)?);
        a.b_q = Some(w.linear(&format!("{qkv}.W_B_q.weight"), d, rq * dh)?);
        a.b_k = Some(w.linear(&format!("{qkv}.W_B_k.weight"), d, r * dh)?);
        a.b_v = Some(w.linear(&format!("{qkv}.W_B_v.weight"), d, r * dh)?);
        a.o = w.linear(&format!("{p}.attn.c_proj.weight"), h * dh, d)?;
        let mlp = block.mlp.as_mut().expect("T6 blocks have an MLP");
        mlp.fc1 = w.linear(&format!("{p}.mlp.c_fc1.weight"), d, hidden)?;
        mlp.fc2 = w.linear(&format!("{p}.mlp.c_fc2.weight"), d, hidden)?;
        mlp.proj = w.linear(&format!("{p}.mlp.c_proj.weight"), hidden, d)?;
    }
    // RoPE buffers carry no weights; anything else left over means the config does not fit.
    let is_buffer = |n: &str| ["inv_freq", "cos_cached", "sin_cached"].iter().any(|b| n.ends_with(b));
    let mut unused: Vec<_> =
        w.used.iter().filter(|(n, used)| !**used && !is_buffer(n)).map(|(n, _)| n.clone()).collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(Error::weights(
            weights_path,
            format!("tensors not used by a T6 model of this config: {}", unused.join(", ")),
        ));
    }
    Ok(model)
}
