//! The transformer: token embedding, pre-norm blocks (attention, optional SwiGLU MLP), final
//! RMSNorm (no weight, as T6) and LM head (optionally tied).

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::attention::{Attention, LayerMaps};
use crate::cache::{KvCache, LayerCache, PendingToken, Storage};
use crate::choices::{Choices, LayerChoiceTensors};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::host_step::HostModel;
use crate::projected::Projected;
use crate::rope::RopeTables;

/// SwiGLU feed-forward: `proj(silu(fc1 x) ⊙ fc2 x)`.
#[derive(Module, Debug)]
pub struct SwiGlu {
    /// Gate projection `[d, hidden]`.
    pub fc1: Linear,
    /// Up projection `[d, hidden]`.
    pub fc2: Linear,
    /// Down projection `[hidden, d]` (zero-initialised, as T6).
    pub proj: Linear,
}

impl SwiGlu {
    fn new(cfg: &ModelConfig, device: &Device) -> Self {
        let (d, hidden) = (cfg.d_model, cfg.mlp_hidden());
        let lin = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let proj: Linear = lin(hidden, d);
        Self {
            fc1: lin(d, hidden),
            fc2: lin(d, hidden),
            proj: Linear { weight: Param::from_tensor(proj.weight.val().zeros_like()), bias: None },
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.proj.forward(silu(self.fc1.forward(x.clone())) * self.fc2.forward(x))
    }
}

/// burn's `silu` (`x · sigmoid(x)`), its sigmoid computed on the host on the CPU backend where
/// nothing is tracked, where burn calls the C library's `expf` once per element: the same bits
/// ([`crate::expf`]), vectorised. Training forwards and other devices use burn's.
fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !x.is_tracked()
        && let Some(s) = crate::host::map_on_host(&x, crate::expf::sigmoid_in_place)
    {
        let (shape, device) = (x.shape(), x.device());
        return x * Tensor::from_data(TensorData::new(s, shape), &device);
    }
    activation::silu(x)
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Block {
    /// Attention.
    pub attn: Attention,
    /// Optional MLP.
    pub mlp: Option<SwiGlu>,
}

impl Block {
    /// The residual stream after this block, parallel over `T` positions under the layer's
    /// storage choices, and with `maps` the attention weights `[B, h, T, T]`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, d]` → `[B, T, d]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        lct: &LayerChoiceTensors,
        eps: f64,
        maps: bool,
    ) -> (Tensor<3>, Option<LayerMaps>) {
        let normed = rms_norm(x.clone(), eps);
        let (out, maps) = match maps {
            true => {
                let (out, maps) = self.attn.forward_with_probs(normed, rope, lct);
                (out, Some(maps))
            }
            false => (self.attn.forward(normed, rope, lct), None),
        };
        (self.mlp_residual(x + out, eps), maps)
    }

    /// The residual stream after this block for one new token per stream against the layer's
    /// cache, the token's projections (to be stored once its choice is made) and its per-layer
    /// statistics (zeros unless `with_stats`).
    ///
    /// # Shapes
    /// - `x`: `[B, 1, d]` → `[B, 1, d]`; statistics `[B, 3 + h]` ([`Attention::decode`])
    pub fn decode(
        &self,
        x: Tensor<3>,
        rope: &RopeTables,
        caches: &[&LayerCache],
        storage: Storage,
        with_stats: bool,
        eps: f64,
    ) -> (Tensor<3>, Projected, Tensor<2>) {
        let (out, proj, stats) = self.attn.decode(rms_norm(x.clone(), eps), rope, caches, storage, with_stats);
        (self.mlp_residual(x + out, eps), proj, stats)
    }

    /// The MLP's residual update (the identity for attention-only blocks).
    fn mlp_residual(&self, x: Tensor<3>, eps: f64) -> Tensor<3> {
        match &self.mlp {
            Some(mlp) => x.clone() + mlp.forward(rms_norm(x, eps)),
            None => x,
        }
    }
}

/// What one decode step produces.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Next-token logits `[B, V]`.
    pub logits: Tensor<2>,
    /// The token's projections, waiting for its storage choice.
    pub pending: PendingToken,
    /// Per stream and layer `[B, n_layers, 3]`: attention entropy (nats, mean over heads),
    /// maximum attention weight (mean over heads), L2 norm of the token's exact key.
    pub layer_stats: Tensor<3>,
    /// Per stream, layer and head `[B, n_layers, h]`: the log-sum-exp of the step's scaled
    /// attention scores, so a cached key's weight is `exp(q·k/√d_h − lse)` (hindsight features).
    pub lse: Tensor<3>,
}

/// The model. Immutable during RL: the cache lives outside (see [`KvCache`]).
#[derive(Module, Debug)]
pub struct Model {
    /// Token embedding `[V, d]`.
    pub embed: Embedding,
    /// Blocks.
    pub blocks: Vec<Block>,
    /// Learned absolute position embedding `[max_positions, d]` (optional).
    pub pos_embed: Option<Embedding>,
    /// LM head `[d, V]`; `None` when tied to the embedding.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: ModelConfig,
}

/// Replaces every float parameter with uniform noise in `[-scale, scale]` from a seeded RNG.
struct Randomize {
    rng: rand::rngs::StdRng,
    scale: f32,
}

impl burn::module::ModuleMapper for Randomize {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        use rand::RngExt;
        param.map(|t| {
            let shape = t.shape();
            let data: Vec<f32> =
                (0..shape.num_elements()).map(|_| self.rng.random_range(-self.scale..self.scale)).collect();
            Tensor::from_data(TensorData::new(data, shape), &t.device())
        })
    }
}

/// `model` with every weight drawn uniformly from `[-scale, scale]` (seeded): for tests and
/// benchmarks that must not depend on the zero-initialised output projections.
pub fn randomize(model: Model, seed: u64, scale: f32) -> Model {
    use rand::SeedableRng;
    model.map(&mut Randomize { rng: rand::rngs::StdRng::seed_from_u64(seed), scale })
}

/// Every id inside the vocabulary (what the tensor and the host step both check).
pub(crate) fn check_vocabulary(cfg: &ModelConfig, ids: &[u32]) -> Result<()> {
    match ids.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        Some(bad) => Err(Error::Input(format!("token id {bad} is outside the vocabulary of {}", cfg.vocab_size))),
        None => Ok(()),
    }
}

/// Position `last` covered by the learned absolute position embedding (models that have one).
pub(crate) fn check_position(cfg: &ModelConfig, last: usize) -> Result<()> {
    match last >= cfg.max_positions {
        true => {
            Err(Error::Input(format!("position {last} is beyond max_positions = {} of this model", cfg.max_positions)))
        }
        false => Ok(()),
    }
}

/// RMSNorm without a learned weight.
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let ms = x.clone().square().mean_dim(D - 1);
    x / (ms + eps).sqrt()
}

impl Model {
    /// A freshly initialised model (the config must be valid).
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let d = config.d_model;
        let std = if config.tied_embeddings { (1.0 / d as f64).sqrt() } else { 1.0 };
        let embed = EmbeddingConfig::new(config.vocab_size, d)
            .with_initializer(Initializer::Normal { mean: 0.0, std })
            .init(device);
        let blocks = (0..config.n_layers)
            .map(|_| Block {
                attn: Attention::new(config, device),
                mlp: config.mlp.then(|| SwiGlu::new(config, device)),
            })
            .collect();
        let lm_head =
            (!config.tied_embeddings).then(|| LinearConfig::new(d, config.vocab_size).with_bias(false).init(device));
        let pos_embed = (config.max_positions > 0).then(|| {
            EmbeddingConfig::new(config.max_positions, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device)
        });
        Self { embed, blocks, pos_embed, lm_head, config: config.clone() }
    }

    /// The config this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// This model with `recent:W` options added to its menu ([`ModelConfig::with_recent`]): they
    /// store the exact option's K/V, so the weights serve them unchanged.
    pub fn with_recent(mut self, windows: &[usize]) -> Result<Self> {
        self.config = self.config.with_recent(windows).map_err(|e| Error::Input(e.to_string()))?;
        Ok(self)
    }

    /// This model with `options` taken off its menu ([`ModelConfig::without`]).
    pub fn without(mut self, options: &[crate::StoreOption]) -> Result<Self> {
        self.config = self.config.without(options).map_err(|e| Error::Input(e.to_string()))?;
        Ok(self)
    }

    /// This model with timed options (`recent:W`, schedules `first/W/then`) added to its menu
    /// ([`ModelConfig::with_timed`]): they keep forms the weights already serve.
    pub fn with_timed(mut self, options: &[crate::StoreOption]) -> Result<Self> {
        self.config = self.config.with_timed(options).map_err(|e| Error::Input(e.to_string()))?;
        Ok(self)
    }

    /// Token ids as a tensor, checking the shape and the vocabulary range.
    pub fn tokens(&self, ids: &[u32], batch: usize, seq_len: usize, device: &Device) -> Result<Tensor<2, Int>> {
        if ids.len() != batch * seq_len || seq_len == 0 {
            return Err(Error::Input(format!("tokens: expected {batch}×{seq_len} ids, found {}", ids.len())));
        }
        check_vocabulary(&self.config, ids)?;
        let data: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        Ok(Tensor::from_data(TensorData::new(data, [batch, seq_len]), device))
    }

    /// Final hidden states (after the last RMSNorm) of a parallel forward with storage choices.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]` (use [`Model::tokens`] to build it); `choices`: `[B, T, n_layers]`.
    /// - returns `[B, T, d]`.
    pub fn forward_hidden(&self, tokens: Tensor<2, Int>, choices: &Choices) -> Result<Tensor<3>> {
        self.run_blocks(tokens, choices, false).map(|(hidden, _)| hidden)
    }

    /// [`Model::forward`]'s logits `[B, T, V]` and, from the same pass, what cache rules read of
    /// every layer: attention weights `[B, h, T_query, T_key]` (heavy hitters, TOVA) and key
    /// norms `[B, T]` (K-norm).
    pub fn forward_with_attention_maps(
        &self,
        tokens: Tensor<2, Int>,
        choices: &Choices,
    ) -> Result<(Tensor<3>, Vec<LayerMaps>)> {
        let (hidden, maps) = self.run_blocks(tokens, choices, true)?;
        Ok((self.logits(hidden), maps))
    }

    /// [`Model::forward_hidden`] that starts at layer `from.0` with `from.1` as its input — what
    /// an earlier forward of the same tokens captured there, under choices equal to `choices` in
    /// the layers before it ([`Choices::layers_key`]), so the result is the same bits — and
    /// returns the input of layer `capture` as well.
    pub fn forward_hidden_resumed(
        &self,
        tokens: Tensor<2, Int>,
        choices: &Choices,
        from: Option<(usize, Tensor<3>)>,
        capture: Option<usize>,
    ) -> Result<(Tensor<3>, Option<Tensor<3>>)> {
        let (hidden, _, captured) = self.run_blocks_from(tokens, choices, false, from, capture)?;
        Ok((hidden, captured))
    }

    fn run_blocks(&self, tokens: Tensor<2, Int>, choices: &Choices, maps: bool) -> Result<(Tensor<3>, Vec<LayerMaps>)> {
        self.run_blocks_from(tokens, choices, maps, None, None).map(|(hidden, maps, _)| (hidden, maps))
    }

    fn run_blocks_from(
        &self,
        tokens: Tensor<2, Int>,
        choices: &Choices,
        maps: bool,
        from: Option<(usize, Tensor<3>)>,
        capture: Option<usize>,
    ) -> Result<(Tensor<3>, Vec<LayerMaps>, Option<Tensor<3>>)> {
        let [b, t] = tokens.dims();
        choices.check(&self.config, b, t).map_err(|e| Error::Input(e.to_string()))?;
        let device = tokens.device();
        let rope = RopeTables::new(0, t, self.config.head_dim, self.config.rope_base, &device);
        let eps = self.config.norm_eps;
        let (start, mut x) = match from {
            Some((start, x)) if start < self.blocks.len() && x.dims() == [b, t, self.config.d_model] => (start, x),
            Some((start, x)) => {
                return Err(Error::Input(format!(
                    "resuming at layer {start} of {} with an input of shape {:?}",
                    self.blocks.len(),
                    x.dims()
                )));
            }
            None => (0, self.embed_at(tokens, 0)?),
        };
        let (mut probs, mut captured) = (Vec::new(), None);
        for (l, block) in self.blocks.iter().enumerate().skip(start) {
            if capture == Some(l) {
                captured = Some(x.clone());
            }
            let lct = choices.layer_tensors(&self.config, l, &device);
            let (next, p) = block.forward(x, &rope, &lct, eps, maps);
            probs.extend(p);
            x = next;
        }
        Ok((rms_norm(x, eps), probs, captured))
    }

    /// The factor-fit objective ([`Attention::factor_fit_loss`] summed over layers) on `tokens`:
    /// every layer's input is the exact forward's, held fixed, and the teachers are the exact
    /// option's K/V, so minimising it moves only the key/value factor projections — the exact
    /// choice's outputs do not change. `ranks` are the `rank:ρ` options to fit
    /// ([`ModelConfig::fit_ranks`]); `scores` weighs key errors by the scores they move.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]`; returns `[1]`.
    pub fn factor_fit_loss(&self, tokens: Tensor<2, Int>, ranks: &[usize], scores: bool) -> Result<Tensor<1>> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let rope = RopeTables::new(0, t, self.config.head_dim, self.config.rope_base, &device);
        let eps = self.config.norm_eps;
        let exact = Choices::exact(&self.config, b, t);
        let mut x = self.embed_at(tokens, 0)?.detach();
        let mut loss = Tensor::<1>::zeros([1], &device);
        for (l, block) in self.blocks.iter().enumerate() {
            loss = loss + block.attn.factor_fit_loss(rms_norm(x.clone(), eps), &rope, ranks, scores);
            let lct = exact.layer_tensors(&self.config, l, &device);
            x = block.forward(x, &rope, &lct, eps, false).0.detach();
        }
        Ok(loss)
    }

    /// Token embeddings plus, when configured, absolute position embeddings from `start`.
    fn embed_at(&self, tokens: Tensor<2, Int>, start: usize) -> Result<Tensor<3>> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let x = self.embed.forward(tokens);
        let Some(pos) = &self.pos_embed else {
            return Ok(x);
        };
        check_position(&self.config, start + t - 1)?;
        let ids: Vec<i64> = (start..start + t).map(|p| p as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        let [_, _, d] = x.dims();
        Ok(x + pos.forward(ids).expand([b, t, d]))
    }

    /// LM head over final hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[N, d]`; returns `[N, V]`.
    pub fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => hidden.matmul(self.embed.weight.val().transpose()),
        }
    }

    /// Logits of a parallel forward.
    ///
    /// # Shapes
    /// - `tokens`: `[B, T]`; returns `[B, T, V]`.
    pub fn forward(&self, tokens: Tensor<2, Int>, choices: &Choices) -> Result<Tensor<3>> {
        Ok(self.logits(self.forward_hidden(tokens, choices)?))
    }

    /// The LM head over every position: `[B, T, d]` → `[B, T, V]`.
    fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = hidden.dims();
        self.head(hidden.reshape([b * t, d])).reshape([b, t, self.config.vocab_size])
    }

    /// Decode one token per stream against `cache`. The returned [`PendingToken`] must be pushed
    /// into the cache (with its storage choices) before the next step.
    ///
    /// # Shapes
    /// - `tokens`: `[B, 1]` with B = `cache.batch()`; returns logits `[B, V]`.
    pub fn step(&self, tokens: Tensor<2, Int>, cache: &KvCache) -> Result<(Tensor<2>, PendingToken)> {
        self.step_inner(tokens, cache, false).map(|s| (s.logits, s.pending))
    }

    /// [`Model::step`] plus the per-layer statistics a rank policy observes.
    pub fn step_with_stats(&self, tokens: Tensor<2, Int>, cache: &KvCache) -> Result<StepOutput> {
        self.step_inner(tokens, cache, true)
    }

    /// A host copy of the weights for [`Model::step_ids`] when `cache`s of this device live in host
    /// memory (the CPU backends), `None` elsewhere.
    pub fn host_model(&self, device: &Device) -> Result<Option<HostModel>> {
        match Storage::for_device(device) {
            Storage::Host => HostModel::new(self).map(Some),
            Storage::Tensors => Ok(None),
        }
    }

    /// [`Model::step_with_stats`] for token `ids` (one per stream), through `host`'s plain-loop
    /// step when given (see [`HostModel`]; same function, no tensor-op overhead) and the tensor path
    /// otherwise. `host` must be this model's ([`Model::host_model`]).
    pub fn step_ids(
        &self,
        host: Option<&HostModel>,
        ids: &[u32],
        cache: &KvCache,
        with_stats: bool,
        device: &Device,
    ) -> Result<StepOutput> {
        match host {
            Some(host) if cache.storage() == Storage::Host => host.step(ids, cache, with_stats, device),
            _ => self.step_inner(self.tokens(ids, ids.len(), 1, device)?, cache, with_stats),
        }
    }

    fn step_inner(&self, tokens: Tensor<2, Int>, cache: &KvCache, with_stats: bool) -> Result<StepOutput> {
        let [b, t] = tokens.dims();
        if t != 1 || b != cache.batch() {
            return Err(Error::Input(format!("step: tokens have shape [{b}, {t}], expected [{}, 1]", cache.batch())));
        }
        let device = tokens.device();
        let rope = RopeTables::new(cache.position(), 1, self.config.head_dim, self.config.rope_base, &device);
        let eps = self.config.norm_eps;
        let mut x = self.embed_at(tokens, cache.position())?;
        let mut layers = Vec::with_capacity(self.blocks.len());
        let mut stats = Vec::with_capacity(self.blocks.len());
        for (l, block) in self.blocks.iter().enumerate() {
            let (next, proj, layer_stats) = block.decode(x, &rope, &cache.layer(l), cache.storage(), with_stats, eps);
            layers.push(proj);
            stats.push(layer_stats.unsqueeze_dim::<3>(1));
            x = next;
        }
        let hidden = rms_norm(x, eps).reshape([b, self.config.d_model]);
        let stats = Tensor::cat(stats, 1); // [B, L, 3 + h]
        let h = self.config.n_heads;
        Ok(StepOutput {
            logits: self.head(hidden),
            pending: PendingToken { layers },
            layer_stats: stats.clone().narrow(2, 0, 3),
            lse: stats.narrow(2, 3, h),
        })
    }
}
