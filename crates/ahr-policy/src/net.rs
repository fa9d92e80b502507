//! The actor-critic network of the RAM, CleanRL-initialised (orthogonal weights with gain √2 in
//! hidden layers, 0.01 on the policy heads, 1 on the value head; zero biases).
//!
//! - `mlp`: features (normalised) ⊕ a learned token-id embedding → two tanh layers → one head of
//!   menu logits per layer (fused into one linear map `hidden → layers × options`).
//! - The critic is a separate network of the same shape with a scalar output, as in CleanRL.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::tanh;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::obs::{ObsBatch, RunningNorm};

/// Network family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Two-layer tanh MLP.
    Mlp,
}

/// Shape of the actor-critic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Network family.
    pub kind: PolicyKind,
    /// Hidden width of actor and critic.
    pub hidden: usize,
    /// Token-id embedding width (used when the observation carries tokens).
    pub token_embed_dim: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { kind: PolicyKind::Mlp, hidden: 64, token_embed_dim: 16 }
    }
}

/// Sizes fixed by the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDims {
    /// Features per observation.
    pub obs_dim: usize,
    /// Token vocabulary (0 = no token input).
    pub vocab_size: usize,
    /// Categorical heads (layers).
    pub heads: usize,
    /// Options per head (menu size).
    pub options: usize,
}

fn layer(d_in: usize, d_out: usize, gain: f64, device: &Device) -> Linear {
    let l = LinearConfig::new(d_in, d_out).with_initializer(Initializer::Orthogonal { gain }).init(device);
    Linear { weight: l.weight, bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))) }
}

/// Two tanh layers and an output layer.
#[derive(Module, Debug)]
pub struct Mlp {
    l1: Linear,
    l2: Linear,
    out: Linear,
}

impl Mlp {
    fn new(d_in: usize, hidden: usize, d_out: usize, out_gain: f64, device: &Device) -> Self {
        let g = 2f64.sqrt();
        Self {
            l1: layer(d_in, hidden, g, device),
            l2: layer(hidden, hidden, g, device),
            out: layer(hidden, d_out, out_gain, device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out.forward(tanh(self.l2.forward(tanh(self.l1.forward(x)))))
    }
}

/// Actor (menu logits per layer) and critic (state value).
#[derive(Module, Debug)]
pub struct ActorCritic {
    token_embed: Option<Embedding>,
    actor: Mlp,
    critic: Mlp,
    #[module(skip)]
    dims: PolicyDims,
}

/// Tensors of an observation batch, ready for the network.
#[derive(Clone, Debug)]
pub struct ObsTensors {
    /// Normalised features `[N, obs_dim]`.
    pub features: Tensor<2>,
    /// Token ids `[N]` when the policy embeds tokens.
    pub tokens: Option<Tensor<1, Int>>,
    /// Validity masks `[N, heads, options]`.
    pub masks: Tensor<3, Bool>,
}

impl ActorCritic {
    /// A freshly initialised network.
    pub fn new(config: &PolicyConfig, dims: PolicyDims, device: &Device) -> Self {
        let embed_dim = if dims.vocab_size > 0 { config.token_embed_dim } else { 0 };
        let d_in = dims.obs_dim + embed_dim;
        Self {
            token_embed: (embed_dim > 0).then(|| {
                EmbeddingConfig::new(dims.vocab_size, embed_dim)
                    .with_initializer(Initializer::Normal { mean: 0.0, std: 0.1 })
                    .init(device)
            }),
            actor: Mlp::new(d_in, config.hidden, dims.heads * dims.options, 0.01, device),
            critic: Mlp::new(d_in, config.hidden, 1, 1.0, device),
            dims,
        }
    }

    /// The environment-fixed sizes.
    pub fn dims(&self) -> PolicyDims {
        self.dims
    }

    /// Normalise and upload an observation batch.
    pub fn obs_tensors(&self, obs: &ObsBatch, norm: &RunningNorm, device: &Device) -> ObsTensors {
        let PolicyDims { obs_dim, heads, options, .. } = self.dims;
        let n = obs.len;
        let features = Tensor::from_data(TensorData::new(norm.normalize(&obs.features), [n, obs_dim]), device);
        let tokens = self.token_embed.as_ref().map(|_| {
            let ids: Vec<i64> = obs.tokens.iter().map(|&t| t as i64).collect();
            Tensor::from_data(TensorData::new(ids, [n]), device)
        });
        let masks = Tensor::from_data(TensorData::new(obs.masks.clone(), [n, heads, options]), device);
        ObsTensors { features, tokens, masks }
    }

    fn input(&self, obs: &ObsTensors) -> Tensor<2> {
        match (&self.token_embed, &obs.tokens) {
            (Some(embed), Some(tokens)) => {
                let n = tokens.dims()[0];
                let e = embed.forward(tokens.clone().reshape([n, 1]));
                let [_, _, d] = e.dims();
                Tensor::cat(vec![obs.features.clone(), e.reshape([n, d])], 1)
            }
            _ => obs.features.clone(),
        }
    }

    /// Menu logits per head.
    ///
    /// # Shapes
    /// - returns `[N, heads, options]`.
    pub fn logits(&self, obs: &ObsTensors) -> Tensor<3> {
        let n = obs.features.dims()[0];
        self.actor.forward(self.input(obs)).reshape([n, self.dims.heads, self.dims.options])
    }

    /// State values `[N]`.
    pub fn value(&self, obs: &ObsTensors) -> Tensor<1> {
        let n = obs.features.dims()[0];
        self.critic.forward(self.input(obs)).reshape([n])
    }
}
