//! The actor-critic network of the RAM, CleanRL-initialised (orthogonal weights with gain √2 in
//! hidden layers, 0.01 on the policy heads, 1 on the value head; zero biases).
//!
//! - `mlp`: features (normalised) ⊕ a learned token-id embedding → two tanh layers → one head of
//!   menu logits per layer (fused into one linear map `hidden → layers × options`).
//! - `attention` ("attention over meta-features"): the observation holds the last `window`
//!   feature vectors (oldest first, see `ahr_env::History`); each is embedded, the newest one
//!   queries all of them (one head, scaled dot product), and the pooled context ⊕ the newest
//!   embedding ⊕ the token embedding feed the same two-layer head.
//! - The critic is a separate network of the same shape with a scalar output, as in CleanRL.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::obs::{ObsBatch, RunningNorm};
use crate::ops::tanh;

/// The [`PolicyConfig::prior`] entry that gives its head no preference.
pub const NO_PRIOR: &str = "-";

/// [`PolicyConfig::prior`]'s option names as indices into `menu` (option names as the menu
/// spells them), one per head: a single name applies to every head; [`NO_PRIOR`] leaves its
/// head without a preference (`None`).
pub fn resolve_prior(names: &[String], menu: &[String], heads: usize) -> Result<Vec<Option<usize>>, String> {
    let index = |name: &String| match name.as_str() {
        NO_PRIOR => Ok(None),
        _ => menu.iter().position(|m| m == name).map(Some).ok_or_else(|| {
            format!("[policy] prior: \"{name}\" is not an option of this menu ({}, or \"{NO_PRIOR}\")", menu.join(", "))
        }),
    };
    match names.len() {
        1 => Ok(vec![index(&names[0])?; heads]),
        n if n == heads => names.iter().map(index).collect(),
        n => Err(format!("[policy] prior: {n} options for {heads} layers (give one per layer, or one for all)")),
    }
}

/// A per-token rule as a file ([`PolicyConfig::prior_table`]): for each layer and token id the
/// menu option it stores the token at, as an index into `menu` (option names as the menu spells
/// them, so a table resolves against any menu that holds the options it uses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorTable {
    /// Where the table comes from (e.g. `token-class`, with its setting).
    pub source: String,
    /// The menu its indices refer to (option names; it may list options the table does not use).
    pub menu: Vec<String>,
    /// `options[layer][token]`: an index into `menu`.
    pub options: Vec<Vec<usize>>,
}

impl PriorTable {
    /// Read a table file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a prior table: {e}", path.display()))
    }

    /// The table as indices into the model's `menu`, `[token][layer]` flattened, checked against
    /// the vocabulary and layer count (extra action heads beyond the layers, e.g. reviews, get
    /// no prior).
    pub fn resolve(&self, menu: &[String], layers: usize, vocab: usize) -> Result<Vec<usize>, String> {
        if self.options.len() != layers {
            return Err(format!("prior table: {} layers for a model of {layers}", self.options.len()));
        }
        let to_menu = |o: usize| {
            let name = self.menu.get(o).ok_or_else(|| format!("prior table: option {o} of {}", self.menu.len()))?;
            menu.iter()
                .position(|m| m == name)
                .ok_or_else(|| format!("prior table: \"{name}\" is not an option of this menu ({})", menu.join(", ")))
        };
        let mut out = vec![0; vocab * layers];
        for (l, row) in self.options.iter().enumerate() {
            if row.len() != vocab {
                return Err(format!("prior table: layer {l} has {} tokens for a vocabulary of {vocab}", row.len()));
            }
            for (t, &o) in row.iter().enumerate() {
                out[t * layers + l] = to_menu(o)?;
            }
        }
        Ok(out)
    }
}

/// Network family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Two-layer tanh MLP.
    Mlp,
    /// Attention over the last `window` feature vectors, then the MLP head.
    Attention,
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
    /// Feature vectors per observation (the current one and `window − 1` before it).
    pub window: usize,
    /// A rule to start from: per action head (the layers' write heads, then their review heads
    /// if the env has reviews) the menu option (by name, e.g. `"recent:4"`, `"rank:1"`,
    /// `"full/16/drop"`; one name for every head) that the untrained actor prefers by
    /// `prior_logit` nats over the others, so that PPO improves on a known rule instead of a
    /// uniform draw; `"-"` leaves a head without a preference (e.g. the write heads when
    /// `prior_table` sets them). Empty: none.
    pub prior: Vec<String>,
    /// The preferred option's head start (logits; with the policy head's near-zero start,
    /// probability `e^x / (e^x + options − 1)`).
    pub prior_logit: f32,
    /// A per-token rule to start from: a [`PriorTable`] file (e.g. written by `ahr fit-rule`,
    /// the judge's fitted `token-class` rule) naming, per layer and token id, the option the
    /// untrained actor prefers by `prior_logit`. It becomes a logit table `[vocab, heads ×
    /// options]` added to the actor's output (trained with the rest unless `prior_frozen`), so
    /// PPO starts at the rule and learns where context should overrule it. Needs the token input;
    /// read once when training starts (the table travels in the weights).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_table: Option<String>,
    /// Keep a prior where it starts: no gradient reaches `prior_table`'s logit table, nor the
    /// actor's output biases that `prior` sets (all of them: they are one parameter), so PPO
    /// trains the network's correction to the rule, not the rule. Until 2026-12-07 every run with
    /// a prior trained this way by accident (the prior's parameter lost its gradient tracking when
    /// it was set) — and a resumed one did not (loading a checkpoint restored the tracking): the
    /// configs of the policies trained so far say `prior_frozen = true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prior_frozen: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            kind: PolicyKind::Mlp,
            hidden: 64,
            token_embed_dim: 16,
            window: 1,
            prior: Vec::new(),
            prior_logit: 4.0,
            prior_table: None,
            prior_frozen: false,
        }
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
    /// Options per head (menu size; candidate slots under learned eviction).
    pub options: usize,
    /// Learned eviction ([`crate::evict`]): features per candidate slot, 0 otherwise. The last
    /// `heads × options × candidate_features` features are the candidates'; the actor scores
    /// each with one shared network, the critic reads the features before them.
    #[serde(default)]
    pub candidate_features: usize,
}

impl PolicyDims {
    /// Features before the candidates' (all of them without learned eviction).
    pub fn global_dim(&self) -> usize {
        self.obs_dim - self.heads * self.options * self.candidate_features
    }
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

/// One-head attention of the newest feature vector over the window.
#[derive(Module, Debug)]
pub struct AttnPool {
    embed: Linear,
    query: Linear,
    key: Linear,
    value: Linear,
    #[module(skip)]
    window: usize,
}

impl AttnPool {
    fn new(features: usize, hidden: usize, window: usize, device: &Device) -> Self {
        let g = 2f64.sqrt();
        Self {
            embed: layer(features, hidden, g, device),
            query: layer(hidden, hidden, 1.0, device),
            key: layer(hidden, hidden, 1.0, device),
            value: layer(hidden, hidden, 1.0, device),
            window,
        }
    }

    /// `[N, window·F]` → `[N, 2·hidden]` (pooled context ⊕ newest embedding).
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [n, wf] = x.dims();
        let k = self.window;
        let e = tanh(self.embed.forward(x.reshape([n, k, wf / k]))); // [N, K, H]
        let [_, _, h] = e.dims();
        let newest = e.clone().narrow(1, k - 1, 1); // [N, 1, H]
        let scores =
            self.query.forward(newest.clone()).matmul(self.key.forward(e.clone()).swap_dims(1, 2)) / (h as f64).sqrt();
        let attn = burn::tensor::activation::softmax(scores, 2); // [N, 1, K]
        let ctx = attn.matmul(self.value.forward(e)); // [N, 1, H]
        Tensor::cat(vec![ctx, newest], 2).reshape([n, 2 * h])
    }
}

/// Actor (menu logits per layer) and critic (state value).
#[derive(Module, Debug)]
pub struct ActorCritic {
    token_embed: Option<Embedding>,
    /// Per-token actor logits `[vocab, heads × options]` added to the actor's output
    /// ([`PolicyConfig::prior_table`]).
    token_prior: Option<Embedding>,
    actor_pool: Option<AttnPool>,
    critic_pool: Option<AttnPool>,
    actor: Mlp,
    critic: Mlp,
    /// Learned eviction: κ, the weight of TOVA's score in every candidate's logit.
    evict_kappa: Option<Param<Tensor<1>>>,
    #[module(skip)]
    dims: PolicyDims,
    /// [`PolicyConfig::prior_frozen`]: the priors, once set, are not tracked.
    #[module(skip)]
    prior_frozen: bool,
    /// Deployment's shift of the log-probabilities per menu option ([`crate::export::Calibration`]):
    /// the deterministic decision is `argmax_o log p_o + shift_o`; empty: plain argmax. Training
    /// (sampling, log-probabilities) never sees it.
    #[module(skip)]
    deploy_shift: Vec<f32>,
}

/// Tensors of an observation batch, ready for the network.
#[derive(Clone, Debug)]
pub struct ObsTensors {
    /// Normalised features `[N, obs_dim]`.
    pub features: Tensor<2>,
    /// Token ids `[N]` when the policy embeds tokens or has a per-token prior.
    pub tokens: Option<Tensor<1, Int>>,
    /// Validity masks `[N, heads, options]`.
    pub masks: Tensor<3, Bool>,
}

impl ActorCritic {
    /// A freshly initialised network.
    pub fn new(config: &PolicyConfig, dims: PolicyDims, device: &Device) -> Self {
        if dims.candidate_features > 0 {
            return Self::evicting(config, dims, device);
        }
        let embed_dim = if dims.vocab_size > 0 { config.token_embed_dim } else { 0 };
        let attention = config.kind == PolicyKind::Attention;
        let window = config.window.max(1);
        let pool = || attention.then(|| AttnPool::new(dims.obs_dim / window, config.hidden, window, device));
        let d_in = if attention { 2 * config.hidden } else { dims.obs_dim } + embed_dim;
        Self {
            actor_pool: pool(),
            critic_pool: pool(),
            token_embed: (embed_dim > 0).then(|| {
                EmbeddingConfig::new(dims.vocab_size, embed_dim)
                    .with_initializer(Initializer::Normal { mean: 0.0, std: 0.1 })
                    .init(device)
            }),
            token_prior: (config.prior_table.is_some() && dims.vocab_size > 0).then(|| {
                EmbeddingConfig::new(dims.vocab_size, dims.heads * dims.options)
                    .with_initializer(Initializer::Zeros)
                    .init(device)
            }),
            actor: Mlp::new(d_in, config.hidden, dims.heads * dims.options, 0.01, device),
            critic: Mlp::new(d_in, config.hidden, 1, 1.0, device),
            evict_kappa: None,
            dims,
            prior_frozen: config.prior_frozen,
            deploy_shift: Vec::new(),
        }
    }

    /// The learned-eviction network ([`crate::evict`]): the actor scores one candidate's features
    /// (output layer at zero, so the untrained actor is `κ × TOVA's score`, κ = `prior_logit`);
    /// the critic reads the global features.
    fn evicting(config: &PolicyConfig, dims: PolicyDims, device: &Device) -> Self {
        let f = dims.candidate_features;
        let mut actor = Mlp::new(f, config.hidden, 1, 0.01, device);
        actor.out = Linear {
            weight: Param::from_tensor(Tensor::zeros([config.hidden, 1], device)),
            bias: Some(Param::from_tensor(Tensor::zeros([1], device))),
        };
        Self {
            token_embed: None,
            token_prior: None,
            actor_pool: None,
            critic_pool: None,
            actor,
            critic: Mlp::new(dims.global_dim(), config.hidden, 1, 1.0, device),
            evict_kappa: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![config.prior_logit], [1]),
                device,
            ))),
            dims,
            prior_frozen: false,
            deploy_shift: Vec::new(),
        }
    }

    /// This network with the actor's output biases set so that head `h` prefers option
    /// `prefer[h]` by `logit` (see [`PolicyConfig::prior`]; `None`: no preference); the other
    /// biases are zero. They train unless [`PolicyConfig::prior_frozen`].
    pub fn with_prior(mut self, prefer: &[Option<usize>], logit: f32) -> Self {
        let PolicyDims { heads, options, .. } = self.dims;
        assert_eq!(prefer.len(), heads, "one preferred option per head");
        let mut bias = vec![0f32; heads * options];
        for (h, o) in prefer.iter().enumerate() {
            let Some(o) = *o else { continue };
            assert!(o < options, "option {o} of {options}");
            bias[h * options + o] = logit;
        }
        let device = self.actor.out.weight.device();
        let param = self.actor.out.bias.take().expect("the policy head has a bias");
        let param = param.map(|_| Tensor::from_data(TensorData::new(bias, [heads * options]), &device));
        self.actor.out.bias = Some(param.set_require_grad(!self.prior_frozen));
        self
    }

    /// This network with its per-token logit table set so that token `t` prefers option
    /// `prefer[t · layers + l]` on head `l` by `logit` (the other entries zero; heads beyond
    /// `layers` get no prior; trained unless [`PolicyConfig::prior_frozen`]). Errors if the
    /// network has no table (no `prior_table` in its config, or no token input) or the sizes differ.
    pub fn with_token_prior(mut self, prefer: &[usize], layers: usize, logit: f32) -> Result<Self, String> {
        let PolicyDims { heads, options, vocab_size, .. } = self.dims;
        let Some(table) = self.token_prior.take() else {
            return Err("a per-token prior needs `[policy] prior_table` and the token input".into());
        };
        if prefer.len() != vocab_size * layers || layers > heads {
            return Err(format!("per-token prior: {} entries for {vocab_size} tokens × {layers} layers", prefer.len()));
        }
        let mut w = vec![0f32; vocab_size * heads * options];
        for (i, &o) in prefer.iter().enumerate() {
            if o >= options {
                return Err(format!("per-token prior: option {o} of {options}"));
            }
            let (t, l) = (i / layers, i % layers);
            w[t * heads * options + l * options + o] = logit;
        }
        let device = self.actor.out.weight.device();
        let weight =
            table.weight.map(|_| Tensor::from_data(TensorData::new(w, [vocab_size, heads * options]), &device));
        self.token_prior = Some(Embedding { weight: weight.set_require_grad(!self.prior_frozen) });
        Ok(self)
    }

    /// The actor's output biases, where [`PolicyConfig::prior`] puts the rule (`[heads × options]`).
    pub fn output_biases(&self) -> Vec<f32> {
        let bias = self.actor.out.bias.as_ref().expect("the policy head has a bias");
        bias.val().into_data().try_to_vec::<f32>().expect("f32 biases")
    }

    /// The environment-fixed sizes.
    pub fn dims(&self) -> PolicyDims {
        self.dims
    }

    /// Normalise and upload an observation batch.
    pub fn obs_tensors(&self, obs: &ObsBatch, norm: &RunningNorm, device: &Device) -> ObsTensors {
        let PolicyDims { obs_dim, heads, options, .. } = self.dims;
        let n = obs.len;
        // Candidates' features are scaled by the environment and read raw: the prior score in them
        // must keep its order across slots.
        let normalised = norm.normalize_leading(&obs.features, self.dims.global_dim());
        let features = Tensor::from_data(TensorData::new(normalised, [n, obs_dim]), device);
        let tokens = (self.token_embed.is_some() || self.token_prior.is_some()).then(|| {
            let ids: Vec<i64> = obs.tokens.iter().map(|&t| t as i64).collect();
            Tensor::from_data(TensorData::new(ids, [n]), device)
        });
        let masks = Tensor::from_data(TensorData::new(obs.masks.clone(), [n, heads, options]), device);
        ObsTensors { features, tokens, masks }
    }

    fn input(&self, pool: &Option<AttnPool>, obs: &ObsTensors) -> Tensor<2> {
        let features = match pool {
            Some(p) => p.forward(obs.features.clone()),
            None => obs.features.clone(),
        };
        match (&self.token_embed, &obs.tokens) {
            (Some(embed), Some(tokens)) => {
                let n = tokens.dims()[0];
                let e = embed.forward(tokens.clone().reshape([n, 1]));
                let [_, _, d] = e.dims();
                Tensor::cat(vec![features, e.reshape([n, d])], 1)
            }
            _ => features,
        }
    }

    /// Menu logits per head.
    ///
    /// # Shapes
    /// - returns `[N, heads, options]`.
    pub fn logits(&self, obs: &ObsTensors) -> Tensor<3> {
        let n = obs.features.dims()[0];
        if let Some(kappa) = &self.evict_kappa {
            let PolicyDims { heads, options, candidate_features: f, .. } = self.dims;
            let g = self.dims.global_dim();
            let candidates = obs.features.clone().narrow(1, g, heads * options * f).reshape([n * heads * options, f]);
            let tova = candidates.clone().narrow(1, 0, 1).reshape([n, heads, options]);
            let learned = self.actor.forward(candidates).reshape([n, heads, options]);
            let kappa = kappa.val().reshape([1, 1, 1]) * crate::evict::PRIOR_SCALE;
            return learned + tova * kappa;
        }
        let logits = self.actor.forward(self.input(&self.actor_pool, obs));
        let logits = match (&self.token_prior, &obs.tokens) {
            (Some(table), Some(tokens)) => {
                let [_, width] = logits.dims();
                logits + table.forward(tokens.clone().reshape([n, 1])).reshape([n, width])
            }
            _ => logits,
        };
        logits.reshape([n, self.dims.heads, self.dims.options])
    }

    /// The most probable valid option per head for each row — shifted per option by a
    /// calibration when the policy has one ([`ActorCritic::with_deploy_shift`]): deployment's decisions.
    pub fn act_deterministic(&self, obs: &ObsBatch, norm: &RunningNorm, device: &Device) -> Vec<usize> {
        let t = self.obs_tensors(obs, norm, device);
        let dist = crate::MaskedMultiCategorical::new(self.logits(&t), t.masks.clone());
        if self.deploy_shift.is_empty() {
            return crate::dist::argmax_host(&dist.probs_host(), self.dims.options);
        }
        let mut scores = dist.log_probs().into_data().try_to_vec::<f32>().expect("log-probabilities should be f32");
        for row in scores.chunks_mut(self.dims.options) {
            // Masked options sit at about −1e9 and stay below every valid one (|shift| ≪ 1e9).
            row.iter_mut().zip(&self.deploy_shift).for_each(|(s, d)| *s += d);
        }
        crate::dist::argmax_host(&scores, self.dims.options)
    }

    /// This network deciding deterministically by `argmax_o log p_o + shift[o]` (one shift per
    /// menu option; empty: plain argmax). Sampling and training are unchanged.
    ///
    /// # Panics
    /// If `shift` is neither empty nor one value per option.
    pub fn with_deploy_shift(mut self, shift: Vec<f32>) -> Self {
        assert!(
            shift.is_empty() || shift.len() == self.dims.options,
            "a deployment shift has one value per option ({}), not {}",
            self.dims.options,
            shift.len()
        );
        self.deploy_shift = shift;
        self
    }

    /// The deployment shift per option (empty: none).
    pub fn deploy_shift(&self) -> &[f32] {
        &self.deploy_shift
    }

    /// State values `[N]`.
    pub fn value(&self, obs: &ObsTensors) -> Tensor<1> {
        let n = obs.features.dims()[0];
        if self.evict_kappa.is_some() {
            let globals = obs.features.clone().narrow(1, 0, self.dims.global_dim());
            return self.critic.forward(globals).reshape([n]);
        }
        self.critic.forward(self.input(&self.critic_pool, obs)).reshape([n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_produce_logits_per_layer_and_a_value() {
        let dev = ahr_tpa::device::from_env();
        for (kind, window) in [(PolicyKind::Mlp, 1), (PolicyKind::Attention, 3)] {
            let cfg = PolicyConfig { kind, hidden: 16, token_embed_dim: 4, window, ..PolicyConfig::default() };
            let dims = PolicyDims { obs_dim: 5 * window, vocab_size: 11, heads: 2, options: 3, candidate_features: 0 };
            let net = ActorCritic::new(&cfg, dims, &dev);
            let obs = ObsBatch {
                features: (0..7 * 5 * window).map(|i| (i % 13) as f32 / 13.0).collect(),
                tokens: (0..7).collect(),
                masks: vec![true; 7 * 6],
                len: 7,
            };
            let t = net.obs_tensors(&obs, &RunningNorm::new(dims.obs_dim), &dev);
            assert_eq!(net.logits(&t).dims(), [7, 2, 3]);
            assert_eq!(net.value(&t).dims(), [7]);
        }
    }

    /// A prior makes the untrained actor pick the rule's option on every head (its logit leads by
    /// the prior's head start, the rest stay near zero), for both network kinds; names resolve
    /// against the menu, one for all heads or one per head (`"-"`: none for that head), and bad
    /// ones are errors.
    #[test]
    fn a_prior_starts_the_actor_at_its_rule() {
        let dev = ahr_tpa::device::from_env();
        let menu: Vec<String> = ["drop", "rank:1", "full", "recent:4"].map(String::from).to_vec();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(resolve_prior(&names(&["recent:4", "rank:1"]), &menu, 2), Ok(vec![Some(3), Some(1)]));
        assert_eq!(resolve_prior(&names(&["full"]), &menu, 2), Ok(vec![Some(2), Some(2)]));
        assert_eq!(resolve_prior(&names(&["-", "rank:1"]), &menu, 2), Ok(vec![None, Some(1)]));
        assert!(resolve_prior(&names(&["rank:2"]), &menu, 2).unwrap_err().contains("\"rank:2\" is not an option"));
        assert!(
            resolve_prior(&names(&["drop", "drop", "drop"]), &menu, 2).unwrap_err().contains("3 options for 2 layers")
        );
        for (kind, window) in [(PolicyKind::Mlp, 1), (PolicyKind::Attention, 3)] {
            let cfg = PolicyConfig { kind, hidden: 16, token_embed_dim: 0, window, ..PolicyConfig::default() };
            let dims = PolicyDims { obs_dim: 5 * window, vocab_size: 0, heads: 2, options: 4, candidate_features: 0 };
            let obs = ObsBatch {
                features: (0..9 * 5 * window).map(|i| ((i * 7) % 17) as f32 - 8.0).collect(),
                tokens: vec![0; 9],
                masks: vec![true; 9 * 8],
                len: 9,
            };
            // The preferred option's logit leads by the head start, every other one stays near
            // zero (on a head without a preference, all of them).
            let started_at = |prefer: [Option<usize>; 2]| {
                let net = ActorCritic::new(&cfg, dims, &dev).with_prior(&prefer, cfg.prior_logit);
                let logits = net.logits(&net.obs_tensors(&obs, &RunningNorm::new(dims.obs_dim), &dev));
                let logits = logits.into_data().try_to_vec::<f32>().unwrap();
                for (row, l) in logits.chunks(4).enumerate() {
                    for (o, x) in l.iter().enumerate() {
                        match prefer[row % 2] == Some(o) {
                            true => assert!((x - 4.0).abs() < 0.5, "{kind:?} row {row}: preferred logit {x}"),
                            false => assert!(x.abs() < 0.5, "{kind:?} row {row}: logit {x} of option {o}"),
                        }
                    }
                }
                net
            };
            let net = started_at([Some(3), Some(1)]);
            let picks = net.act_deterministic(&obs, &RunningNorm::new(dims.obs_dim), &dev);
            assert_eq!(picks, [3, 1].repeat(9), "{kind:?}");
            started_at([None, Some(1)]);
        }
    }

    /// A prior table resolves by option name to `[token][layer]` menu indices (hand-computed),
    /// refuses tables of another shape or with unknown options, and starts the untrained actor
    /// at its per-token choice on the write heads (a review head beyond the layers keeps no
    /// prior), with or without the token embedding.
    #[test]
    fn a_prior_table_starts_each_token_at_its_option() {
        let dev = ahr_tpa::device::from_env();
        let menu: Vec<String> = ["drop", "rank:1", "full", "recent:4"].map(String::from).to_vec();
        let table = PriorTable {
            source: "test".into(),
            menu: ["recent:4", "drop", "full"].map(String::from).to_vec(),
            options: vec![vec![0, 1, 2], vec![2, 2, 1]],
        };
        // token 0: recent:4 (3), full (2); token 1: drop (0), full (2); token 2: full (2), drop (0)
        let prefer = table.resolve(&menu, 2, 3).unwrap();
        assert_eq!(prefer, vec![3, 2, 0, 2, 2, 0]);
        assert!(table.resolve(&menu, 3, 3).unwrap_err().contains("2 layers for a model of 3"));
        assert!(table.resolve(&menu, 2, 4).unwrap_err().contains("3 tokens for a vocabulary of 4"));
        // Options the table does not use need not be on the menu; those it uses must.
        let mut odd = PriorTable { menu: [&table.menu[..], &["rank:2".to_string()]].concat(), ..table.clone() };
        assert_eq!(odd.resolve(&menu, 2, 3), Ok(prefer.clone()));
        odd.options[1][2] = 3;
        assert!(odd.resolve(&menu, 2, 3).unwrap_err().contains("\"rank:2\" is not an option"));
        odd.options[1][2] = 4;
        assert!(odd.resolve(&menu, 2, 3).unwrap_err().contains("option 4 of 4"));
        for embed in [0, 4] {
            let cfg = PolicyConfig {
                hidden: 16,
                token_embed_dim: embed,
                prior_table: Some("table.json".into()),
                ..PolicyConfig::default()
            };
            // Three heads: two layers and a review head.
            let dims = PolicyDims { obs_dim: 5, vocab_size: 3, heads: 3, options: 4, candidate_features: 0 };
            let net = ActorCritic::new(&cfg, dims, &dev).with_token_prior(&prefer, 2, 6.0).unwrap();
            let obs = ObsBatch {
                features: (0..6 * 5).map(|i| ((i * 7) % 17) as f32 - 8.0).collect(),
                tokens: vec![0, 1, 2, 2, 1, 0],
                masks: vec![true; 6 * 12],
                len: 6,
            };
            let picks = net.act_deterministic(&obs, &RunningNorm::new(dims.obs_dim), &dev);
            for (row, &t) in obs.tokens.iter().enumerate() {
                let t = t as usize;
                assert_eq!(&picks[row * 3..row * 3 + 2], &prefer[t * 2..t * 2 + 2], "embed {embed}, token {t}");
            }
            let logits = net.logits(&net.obs_tensors(&obs, &RunningNorm::new(dims.obs_dim), &dev));
            let review = logits.narrow(1, 2, 1).into_data().try_to_vec::<f32>().unwrap();
            assert!(review.iter().all(|x| x.abs() < 0.5), "the review head has no prior: {review:?}");
        }
        let plain = ActorCritic::new(
            &PolicyConfig::default(),
            PolicyDims { obs_dim: 5, vocab_size: 3, heads: 2, options: 4, candidate_features: 0 },
            &dev,
        );
        assert!(plain.with_token_prior(&prefer, 2, 6.0).unwrap_err().contains("needs `[policy] prior_table`"));
    }

    /// Priors train with the network (the table and the output biases get gradients) unless
    /// `prior_frozen`, which leaves them none while the network's weights get theirs; either way
    /// the untrained logits are the rule's. The manifest writes the flag only when set.
    #[test]
    fn priors_train_unless_frozen() {
        let dev = Device::flex().autodiff();
        let dims = PolicyDims { obs_dim: 5, vocab_size: 3, heads: 2, options: 4, candidate_features: 0 };
        let prefer = vec![3, 2, 0, 2, 2, 0];
        let obs = ObsBatch {
            features: (0..6 * 5).map(|i| ((i * 7) % 17) as f32 - 8.0).collect(),
            tokens: vec![0, 1, 2, 2, 1, 0],
            masks: vec![true; 6 * 8],
            len: 6,
        };
        let mut logits = Vec::new();
        for frozen in [false, true] {
            let cfg = PolicyConfig {
                hidden: 16,
                token_embed_dim: 4,
                prior_table: Some("table.json".into()),
                prior_frozen: frozen,
                ..PolicyConfig::default()
            };
            let net = ActorCritic::new(&cfg, dims, &dev)
                .with_prior(&[Some(1), None], 0.5)
                .with_token_prior(&prefer, 2, 6.0)
                .unwrap();
            let out = net.logits(&net.obs_tensors(&obs, &RunningNorm::new(dims.obs_dim), &dev));
            logits.push(out.clone().into_data().try_to_vec::<f32>().unwrap());
            let grads = (out.clone() * out).sum().backward();
            let table = net.token_prior.as_ref().unwrap().weight.grad(&grads);
            assert_eq!(table.is_none(), frozen, "frozen {frozen}: the table's gradient");
            let bias = net.actor.out.bias.as_ref().unwrap().grad(&grads);
            assert_eq!(bias.is_none(), frozen, "frozen {frozen}: the output biases' gradient");
            assert!(net.actor.out.weight.grad(&grads).is_some(), "frozen {frozen}: the actor's gradient");
            let json = serde_json::to_string(&cfg).unwrap();
            assert_eq!(json.contains("prior_frozen"), frozen, "{json}");
            assert_eq!(serde_json::from_str::<PolicyConfig>(&json).unwrap().prior_frozen, frozen);
        }
        // Either way the untrained logits are the rule's (the actor's output starts near zero).
        for l in &logits {
            for (i, x) in l.iter().enumerate() {
                let (row, col) = (i / 8, i % 8);
                let t = obs.tokens[row] as usize;
                let table = if prefer[t * 2 + col / 4] == col % 4 { 6.0 } else { 0.0 };
                let want = table + if col == 1 { 0.5 } else { 0.0 };
                assert!((x - want).abs() < 0.25, "row {row}, logit {col}: {x} vs {want}");
            }
        }
    }
}
