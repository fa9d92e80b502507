//! Observations: a versioned list of meta-features (DESIGN.md §5), running normalisation that
//! travels with the policy, and the batch type the network consumes.

use ahr_tpa::host::Predictive;
use ahr_tpa::{KvCache, ModelConfig, cost};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Version of the feature layout rank environments build unless `[env] obs_version` names another
/// ([`GLOBAL_FEATURES`]). Version 1 ([`GLOBAL_FEATURES_V1`]) normalised positions by the episode's
/// final length, which a server generating open-endedly does not know; version 2
/// ([`GLOBAL_FEATURES_V2`]) lacked the token's surprisal. Both are still read so that their
/// policies load. Version 4 ([`GLOBAL_FEATURES_V4`]) adds what the context says of the token's
/// repeats; it is opt-in until it has shown what it is worth.
pub const OBS_VERSION: u32 = 3;

/// The newest feature layout this build knows; add a version whenever a feature is added,
/// removed or moved.
pub const MAX_OBS_VERSION: u32 = 4;

/// Global (per token) features of the current version, in order: every one causal and
/// independent of how long the sequence will be (DESIGN.md §5).
pub const GLOBAL_FEATURES: [&str; 7] = [
    "position",     // t (absolute; the running normalisation scales it)
    "log_position", // ln(1 + t)
    "pred_entropy", // model's next-token entropy at t / ln V
    "surprisal",    // −ln p(token t | tokens < t) / ln V under the model (1 at t = 0: nothing predicted it)
    "entropy_mean", // mean of pred_entropy over positions 0..=t: how hard the context has been so far
    "cache_fill",   // bytes held / bytes if every earlier token were exact
    "budget_left",  // budget mode: target fraction − fraction used so far (0 otherwise)
];

/// Global features of version 4: [`GLOBAL_FEATURES`], then whether the token continues a string
/// the context already holds ([`SequenceHistory::push_token`]) — content a per-token table
/// cannot see: a byte that repeats an earlier string has a copy in the cache already, and one
/// that starts a new string is what a later repeat will read.
pub const GLOBAL_FEATURES_V4: [&str; 9] = [
    "position",
    "log_position",
    "pred_entropy",
    "surprisal",
    "entropy_mean",
    "cache_fill",
    "budget_left",
    "repeat_len", // ln(1 + n): n the longest run of tokens ending at t that also ends at an earlier position
    "repeat_dist", // ln(1 + t − j): j the latest earlier position where that run ends (0 when n = 0)
];

/// Global features of version 2 (policies trained before 2026-12-02's eleventh session).
pub const GLOBAL_FEATURES_V2: [&str; 6] =
    ["position", "log_position", "pred_entropy", "entropy_mean", "cache_fill", "budget_left"];

/// Global features of version 1 (policies trained before 2026-12-01's second session).
pub const GLOBAL_FEATURES_V1: [&str; 6] = [
    "position_frac",    // t / episode length
    "log_position",     // ln(1 + t) / ln(1 + episode length)
    "pred_entropy",     // model's next-token entropy at t / ln V
    "cache_fill",       // bytes held / bytes if every earlier token were exact
    "budget_left",      // budget mode: target fraction − fraction used so far (0 otherwise)
    "episode_progress", // steps left / episode length
];

/// The global features of observation version `version` (`None` if this build does not know it).
pub fn global_features(version: u32) -> Option<&'static [&'static str]> {
    match version {
        1 => Some(&GLOBAL_FEATURES_V1),
        2 => Some(&GLOBAL_FEATURES_V2),
        3 => Some(&GLOBAL_FEATURES),
        4 => Some(&GLOBAL_FEATURES_V4),
        _ => None,
    }
}

/// Per-layer features, in order (one block per layer).
pub const LAYER_FEATURES: [&str; 3] = [
    "attn_entropy", // attention entropy of token t's query, nats (mean over heads)
    "attn_max",     // maximum attention weight (mean over heads)
    "key_norm",     // L2 norm of token t's exact key
];

/// What one stream has seen of its sequence so far, for the running features (reset with the
/// sequence).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SequenceHistory {
    entropy_sum: f64,
    steps: usize,
    /// The previous position's next-token logits and their log-sum-exp (empty at t = 0).
    prev_logits: Vec<f32>,
    prev_lse: f32,
    /// The tokens so far (version 4 on) …
    tokens: Vec<u32>,
    /// … and, per earlier position j, the length of the longest run of tokens ending at both j and
    /// the latest position (saturating).
    runs: Vec<u16>,
}

/// The longest earlier repeat of the tokens ending at t ([`SequenceHistory::push_token`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repeat {
    /// Its length in tokens (0: token t never occurred before).
    pub len: usize,
    /// How far back its latest earlier occurrence ends (t − j; 0 when `len` is 0).
    pub dist: usize,
}

impl SequenceHistory {
    /// Take in position t's normalised predictive entropy; returns the mean over 0..=t.
    pub fn push_entropy(&mut self, normalised: f32) -> f32 {
        self.entropy_sum += normalised as f64;
        self.steps += 1;
        (self.entropy_sum / self.steps as f64) as f32
    }

    /// `−ln p(token)` under the prediction made at the previous position, divided by `ln V`
    /// (1 before any prediction: as if uniform).
    pub fn surprisal(&self, token: u32) -> f32 {
        match self.prev_logits.get(token as usize) {
            Some(&logit) if self.prev_logits.len() > 1 => {
                (self.prev_lse - logit) / (self.prev_logits.len() as f32).ln()
            }
            _ => 1.0,
        }
    }

    /// Take in token t; the longest run of tokens ending at t that also ends at an earlier
    /// position j, and the distance to the latest such j. O(t) per token: each earlier run grows
    /// by one where the token matches and restarts elsewhere (the suffix-matching recurrence).
    pub fn push_token(&mut self, token: u32) -> Repeat {
        let t = self.tokens.len();
        self.runs.push(0);
        let mut best = Repeat::default();
        // Descending, so that runs[j − 1] is still the previous position's run when j reads it.
        for j in (0..t).rev() {
            let run = if self.tokens[j] == token {
                j.checked_sub(1).map_or(0, |i| self.runs[i]).saturating_add(1)
            } else {
                0
            };
            self.runs[j] = run;
            if run as usize > best.len {
                best = Repeat { len: run as usize, dist: t - j };
            }
        }
        self.tokens.push(token);
        best
    }

    /// Remember position t's next-token logits (one row) and their log-sum-exp, for the
    /// surprisal of the token at t + 1.
    pub fn push_prediction(&mut self, logits: &[f32], lse: f32) {
        self.prev_logits.clear();
        self.prev_logits.extend_from_slice(logits);
        self.prev_lse = lse;
    }
}

/// What one token's feature vector is built from; the rank environment and inference build it
/// the same way through [`TokenFeatures::push_to`].
#[derive(Clone, Copy, Debug)]
pub struct TokenFeatures<'a> {
    /// Feature layout version.
    pub version: u32,
    /// Position of the token (0-based).
    pub t: usize,
    /// The longest sequence the policy was trained on: the position features stop growing at its
    /// last position (a longer context shows the policy only positions it has seen).
    pub positions_seen: Option<usize>,
    /// Episode (or generation) length in tokens (version 1 only).
    pub len: usize,
    /// The model's next-token entropy at t / ln V.
    pub pred_entropy: f32,
    /// `−ln p(token t | tokens < t) / ln V` (version 3 on).
    pub surprisal: f32,
    /// Mean of `pred_entropy` over positions 0..=t.
    pub entropy_mean: f32,
    /// The longest earlier repeat of the tokens ending at t (version 4 on).
    pub repeat: Repeat,
    /// Cache bytes this stream holds before t is stored, all layers.
    pub held_bytes: usize,
    /// Bytes per token of the exact choice, all layers.
    pub exact_bytes: usize,
    /// Budget mode's target memory fraction.
    pub budget: Option<f64>,
    /// `[L, LAYER_FEATURES.len()]` per-layer statistics of token t ([`LAYER_FEATURES`]).
    pub layer_stats: &'a [f32],
}

impl TokenFeatures<'_> {
    /// Bytes held relative to keeping every earlier token exact (1 at t = 0).
    pub fn cache_fill(&self) -> f64 {
        if self.t == 0 { 1.0 } else { self.held_bytes as f64 / (self.t as f64 * self.exact_bytes as f64) }
    }

    /// Append the feature vector (the version's global features, then [`LAYER_FEATURES`] per layer).
    pub fn push_to(&self, out: &mut Vec<f32>) {
        let t = self.positions_seen.map_or(self.t, |n| self.t.min(n.saturating_sub(1))) as f32;
        let fill = self.cache_fill();
        let budget_left = self.budget.map_or(0.0, |target| target - fill) as f32;
        match self.version {
            1 => {
                let (t, len) = (self.t as f32, self.len as f32);
                out.extend([
                    t / len,
                    (1.0 + t).ln() / (1.0 + len).ln(),
                    self.pred_entropy,
                    fill as f32,
                    budget_left,
                    (len - t) / len,
                ]);
            }
            2 => out.extend([t, (1.0 + t).ln(), self.pred_entropy, self.entropy_mean, fill as f32, budget_left]),
            _ => {
                out.extend([
                    t,
                    (1.0 + t).ln(),
                    self.pred_entropy,
                    self.surprisal,
                    self.entropy_mean,
                    fill as f32,
                    budget_left,
                ]);
                // Version 4: version 3's, then the repeat; its distance stops where the positions
                // do (within the sequences the policy was trained on).
                if self.version >= 4 {
                    let (len, dist) = (self.repeat.len, self.repeat.dist);
                    let dist = self.positions_seen.map_or(dist, |n| dist.min(n.saturating_sub(1)));
                    out.extend([(1.0 + len as f32).ln(), (1.0 + dist as f32).ln()]);
                }
            }
        }
        out.extend_from_slice(self.layer_stats);
    }
}

/// The observations of the token just stepped, for every stream: the one builder the rank
/// environment (training) and `ahr-infer` (deployment) share, so a deployed policy sees exactly
/// what it was trained on. `predictive` holds each stream's next-token distribution summary
/// ([`ahr_tpa::host::predictive`] of the step's `logits` `[B, V]`), `layer_stats` its
/// per-layer statistics `[B, L, LAYER_FEATURES.len()]`; `cache` is the cache before the token is
/// stored; `history` each stream's running statistics (updated here); `len` the horizon version
/// 1's position features are relative to (unused from version 2 on); `positions_seen` the
/// policy's [`ObsSpec::positions_seen`].
#[allow(clippy::too_many_arguments)]
pub fn observe(
    cfg: &ModelConfig,
    version: u32,
    positions_seen: Option<usize>,
    predictive: &[Predictive],
    logits: &[f32],
    layer_stats: Tensor<3>,
    cache: &KvCache,
    ids: &[u32],
    t: usize,
    len: usize,
    budget: Option<f64>,
    history: &mut [SequenceHistory],
) -> ObsBatch {
    let (b_n, l_n, k) = (ids.len(), cfg.n_layers, LAYER_FEATURES.len());
    assert_eq!(history.len(), b_n, "one history per stream");
    let host = |x: Tensor<1>| x.into_data().try_to_vec::<f32>().expect("f32 tensors should read back as f32");
    let stats = host(layer_stats.reshape([b_n * l_n * k]));
    let mut obs = ObsBatch { len: b_n, tokens: ids.to_vec(), ..Default::default() };
    let ln_v = (cfg.vocab_size as f32).ln();
    let v = cfg.vocab_size;
    for b in 0..b_n {
        let pred_entropy = predictive[b].entropy / ln_v;
        let surprisal = history[b].surprisal(ids[b]);
        let repeat = if version >= 4 { history[b].push_token(ids[b]) } else { Repeat::default() };
        history[b].push_prediction(&logits[b * v..(b + 1) * v], predictive[b].lse);
        TokenFeatures {
            version,
            t,
            positions_seen,
            len,
            pred_entropy,
            surprisal,
            entropy_mean: history[b].push_entropy(pred_entropy),
            repeat,
            held_bytes: cache.stream_bytes(b),
            exact_bytes: cost::exact_bytes_per_token(cfg),
            budget,
            layer_stats: &stats[b * l_n * k..(b + 1) * l_n * k],
        }
        .push_to(&mut obs.features);
    }
    obs.masks = vec![true; b_n * l_n * cfg.menu.len()];
    obs
}

/// `obs` with the review features of each stream appended to its row and the masks of L write
/// heads and L review heads per review stage (the one way the environment and `ahr-infer` extend
/// observations).
pub fn with_review(obs: ObsBatch, book: &ahr_tpa::ReviewBook, t: usize) -> ObsBatch {
    let b_n = obs.len;
    let review = book.features(t);
    let (dim, extra) = (obs.features.len() / b_n.max(1), review.len() / b_n.max(1));
    let mut features = Vec::with_capacity(obs.features.len() + review.len());
    for b in 0..b_n {
        features.extend_from_slice(&obs.features[b * dim..(b + 1) * dim]);
        features.extend_from_slice(&review[b * extra..(b + 1) * extra]);
    }
    ObsBatch { features, masks: book.masks(t), ..obs }
}

/// The last `window` feature vectors of one row, oldest first, zeros before the first
/// (gym's `FrameStack`); the input of attention policies.
#[derive(Clone, Debug)]
pub struct FeatureWindow {
    rows: std::collections::VecDeque<Vec<f32>>,
}

impl FeatureWindow {
    /// A window of `window ≥ 1` vectors whose newest is `obs`.
    pub fn new(window: usize, obs: &[f32]) -> Self {
        let mut rows: std::collections::VecDeque<Vec<f32>> = (1..window.max(1)).map(|_| vec![0.0; obs.len()]).collect();
        rows.push_back(obs.to_vec());
        Self { rows }
    }

    /// The window after `obs` arrives (the oldest vector leaves).
    pub fn pushed(&self, obs: &[f32]) -> Self {
        let mut rows = self.rows.clone();
        rows.pop_front();
        rows.push_back(obs.to_vec());
        Self { rows }
    }

    /// The stacked features, oldest first.
    pub fn stacked(&self) -> impl Iterator<Item = f32> + '_ {
        self.rows.iter().flatten().copied()
    }
}

/// Decision granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// One option per layer for every token, decided after the token's forward step.
    PerToken,
    /// One option per layer per sequence (a contextual bandit).
    PerLayer,
}

/// What a policy observes: enough to rebuild the feature vector and check compatibility.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObsSpec {
    /// Feature layout version ([`OBS_VERSION`] for rank environments).
    pub version: u32,
    /// Names of the features, in order.
    pub features: Vec<String>,
    /// Token vocabulary for the token-id embedding (0 = no token input).
    pub vocab_size: usize,
    /// Length of the sequences the policy was trained on (what its environment showed it):
    /// deployed on longer ones, its position features stop at the last position it saw.
    /// Absent for policies exported before 2026-12-02 (their features grow without bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions_seen: Option<usize>,
    /// Learned eviction ([`crate::evict`]): features per candidate slot (the last `heads ×
    /// slots × candidate_features` features); 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub candidate_features: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl ObsSpec {
    /// The rank-environment spec of the current version for a model with `n_layers` layers.
    pub fn rank(n_layers: usize, vocab_size: usize) -> Self {
        Self::rank_version(OBS_VERSION, n_layers, vocab_size).expect("the current version is known")
    }

    /// The rank-environment spec of observation version `version` (`None` if unknown).
    pub fn rank_version(version: u32, n_layers: usize, vocab_size: usize) -> Option<Self> {
        let mut features: Vec<String> = global_features(version)?.iter().map(|s| s.to_string()).collect();
        for l in 0..n_layers {
            features.extend(LAYER_FEATURES.iter().map(|f| format!("layer{l}.{f}")));
        }
        Some(Self { version, features, vocab_size, positions_seen: None, candidate_features: 0 })
    }

    /// The learned-eviction spec ([`crate::evict`]) for a model with `n_layers` layers:
    /// [`crate::evict::EVICT_GLOBALS`], then per layer and candidate slot
    /// (`layer<i>.slot<j>.<feature>`) [`crate::evict::CANDIDATE_FEATURES`]; no token input.
    pub fn evict(n_layers: usize, eviction: crate::evict::Eviction) -> Self {
        use crate::evict::{CANDIDATE_FEATURES, EVICT_GLOBALS};
        let mut features: Vec<String> = EVICT_GLOBALS.iter().map(|s| s.to_string()).collect();
        for l in 0..n_layers {
            for j in 0..eviction.slots() {
                features.extend(CANDIDATE_FEATURES.iter().map(|f| format!("layer{l}.slot{j}.{f}")));
            }
        }
        Self {
            version: OBS_VERSION,
            features,
            vocab_size: 0,
            positions_seen: None,
            candidate_features: CANDIDATE_FEATURES.len(),
        }
    }

    /// This spec with the review features of every layer appended (`layer<i>.review_present`, …;
    /// [`ahr_tpa::ReviewAt::features`]); a chain's, stage by stage, name their age
    /// (`layer<i>.at<age>.review_present`, …).
    pub fn with_review(mut self, n_layers: usize, at: ahr_tpa::ReviewAt) -> Self {
        let ages = at.stage_ages();
        for stage in 0..at.stages() {
            for l in 0..n_layers {
                let prefix = match at.is_chain() {
                    true => format!("layer{l}.at{}", ages[stage]),
                    false => format!("layer{l}"),
                };
                self.features.extend(at.features().iter().map(|f| format!("{prefix}.{f}")));
            }
        }
        self
    }

    /// A plain spec (e.g. CartPole): `dim` unnamed features, no tokens.
    pub fn plain(dim: usize) -> Self {
        Self {
            version: 0,
            features: (0..dim).map(|i| format!("x{i}")).collect(),
            vocab_size: 0,
            positions_seen: None,
            candidate_features: 0,
        }
    }

    /// The spec of the last `window` observations stacked oldest first (`t-2.name`, `t-1.name`, `name`).
    pub fn windowed(&self, window: usize) -> Self {
        if window <= 1 {
            return self.clone();
        }
        let features = (0..window)
            .rev()
            .flat_map(|lag| {
                self.features.iter().map(move |f| if lag == 0 { f.clone() } else { format!("t-{lag}.{f}") })
            })
            .collect();
        Self { features, ..self.clone() }
    }

    /// Feature count.
    pub fn dim(&self) -> usize {
        self.features.len()
    }
}

/// A batch of observations, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObsBatch {
    /// `[N, dim]` raw (unnormalised) features.
    pub features: Vec<f32>,
    /// `[N]` current token ids (empty when the spec has no tokens).
    pub tokens: Vec<u32>,
    /// `[N, heads, options]` validity masks (true = allowed).
    pub masks: Vec<bool>,
    /// Rows.
    pub len: usize,
}

impl ObsBatch {
    /// Append the rows of `other`.
    pub fn extend(&mut self, other: &ObsBatch) {
        self.features.extend_from_slice(&other.features);
        self.tokens.extend_from_slice(&other.tokens);
        self.masks.extend_from_slice(&other.masks);
        self.len += other.len;
    }

    /// Rows `idx` as a new batch.
    pub fn select(&self, idx: &[usize]) -> ObsBatch {
        let f = self.features.len() / self.len.max(1);
        let m = self.masks.len() / self.len.max(1);
        let mut out = ObsBatch { len: idx.len(), ..Default::default() };
        for &i in idx {
            out.features.extend_from_slice(&self.features[i * f..(i + 1) * f]);
            if !self.tokens.is_empty() {
                out.tokens.push(self.tokens[i]);
            }
            out.masks.extend_from_slice(&self.masks[i * m..(i + 1) * m]);
        }
        out
    }
}

/// Running mean and variance of each feature (parallel Welford), frozen into exported policies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningNorm {
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature variance.
    pub var: Vec<f64>,
    /// Observations folded in (starts at a tiny pseudo-count, as gym's `RunningMeanStd`).
    pub count: f64,
}

impl RunningNorm {
    /// Identity statistics for `dim` features.
    pub fn new(dim: usize) -> Self {
        Self { mean: vec![0.0; dim], var: vec![1.0; dim], count: 1e-4 }
    }

    /// Fold in `rows` rows of `dim` features.
    pub fn update(&mut self, features: &[f32], rows: usize) {
        self.update_with(features, rows, |_| {});
    }

    /// [`RunningNorm::update`] when the batch is spread over processes: `sum` adds each of its
    /// buffers (the row count, the per-feature sums, the squared deviations) over all of them in
    /// place — the identity for one process. Every process gets the same statistics (two passes,
    /// then Chan et al.'s merge).
    pub fn update_with(&mut self, features: &[f32], rows: usize, mut sum: impl FnMut(&mut [f64])) {
        let dim = self.mean.len();
        let mut n = [rows as f64];
        sum(&mut n);
        let n = n[0];
        if n == 0.0 {
            return;
        }
        let mut means = column_sums(features, rows, dim, |x, _| x);
        sum(&mut means);
        means.iter_mut().for_each(|m| *m /= n);
        let mut vars = column_sums(features, rows, dim, |x, j| (x - means[j]).powi(2));
        sum(&mut vars);
        vars.iter_mut().for_each(|v| *v /= n);
        for j in 0..dim {
            let (mean_b, var_b) = (means[j], vars[j]);
            let delta = mean_b - self.mean[j];
            let total = self.count + n;
            let m2 = self.var[j] * self.count + var_b * n + delta * delta * self.count * n / total;
            self.mean[j] += delta * n / total;
            self.var[j] = m2 / total;
        }
        self.count += n;
    }

    /// `(x − mean) / sqrt(var + 1e-8)`, clipped to ±10 (gym's `NormalizeObservation`).
    pub fn normalize(&self, features: &[f32]) -> Vec<f32> {
        self.normalize_leading(features, self.mean.len())
    }

    /// [`RunningNorm::normalize`] of each row's first `lead` features; the rest pass through raw
    /// (learned eviction's candidates, scaled by the environment).
    pub fn normalize_leading(&self, features: &[f32], lead: usize) -> Vec<f32> {
        let dim = self.mean.len();
        features
            .iter()
            .enumerate()
            .map(|(i, &x)| match i % dim {
                j if j < lead => (((x as f64 - self.mean[j]) / (self.var[j] + 1e-8).sqrt()).clamp(-10.0, 10.0)) as f32,
                _ => x,
            })
            .collect()
    }
}

/// Per-feature sums of `f(x, feature)` over `rows` rows of `dim` features (row-major).
fn column_sums(features: &[f32], rows: usize, dim: usize, f: impl Fn(f64, usize) -> f64) -> Vec<f64> {
    (0..dim).map(|j| (0..rows).map(|i| f(features[i * dim + j] as f64, j)).sum::<f64>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_norm_matches_the_batch_statistics() {
        let data: Vec<f32> = (0..200).map(|i| ((i * 37) % 17) as f32 * 0.5 + (i % 2) as f32 * 10.0).collect();
        let mut norm = RunningNorm::new(2);
        for chunk in data.chunks(40) {
            norm.update(chunk, 20);
        }
        for j in 0..2 {
            let col: Vec<f64> = data.iter().skip(j).step_by(2).map(|&x| x as f64).collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!((norm.mean[j] - mean).abs() < 1e-3, "{} vs {mean}", norm.mean[j]);
            assert!((norm.var[j] - var).abs() / var < 1e-3, "{} vs {var}", norm.var[j]);
        }
        let z = norm.normalize(&data[..2]);
        assert!(z.iter().all(|v| v.abs() < 10.0));
    }

    #[test]
    fn rank_spec_names_every_layer_feature() {
        let spec = ObsSpec::rank(3, 100);
        assert_eq!(spec.dim(), GLOBAL_FEATURES.len() + 3 * LAYER_FEATURES.len());
        assert_eq!(spec.features[GLOBAL_FEATURES.len()], "layer0.attn_entropy");
        let v1 = ObsSpec::rank_version(1, 3, 100).unwrap();
        assert_eq!(v1.features[0], "position_frac");
        assert_eq!(v1.dim(), spec.dim() - 1);
        let v2 = ObsSpec::rank_version(2, 3, 100).unwrap();
        assert_eq!(v2.features[..6], GLOBAL_FEATURES_V2.map(String::from));
        assert!(ObsSpec::rank_version(9, 3, 100).is_none());
    }

    /// Current features depend on what has happened, not on how long the sequence will be;
    /// version 1's did (the reason it was replaced).
    #[test]
    fn features_are_causal_and_length_agnostic() {
        let stats = [0.5f32, 0.25, 3.0];
        let mut history = SequenceHistory::default();
        let means: Vec<f32> = [0.2f32, 0.4, 0.9].iter().map(|&e| history.push_entropy(e)).collect();
        assert_eq!(means, vec![0.2, 0.3, 0.5]);
        // Surprisal: 1 before any prediction, then −ln softmax(previous logits)[token] / ln V.
        assert_eq!(history.surprisal(2), 1.0);
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let lse = logits.iter().map(|x| x.exp()).sum::<f32>().ln();
        history.push_prediction(&logits, lse);
        for token in 0..4u32 {
            let p = logits[token as usize].exp() / logits.iter().map(|x| x.exp()).sum::<f32>();
            assert!((history.surprisal(token) - (-p.ln() / 4f32.ln())).abs() < 1e-6);
        }
        let at_seen = |version: u32, t: usize, len: usize, positions_seen: Option<usize>| {
            let f = TokenFeatures {
                version,
                t,
                positions_seen,
                len,
                pred_entropy: 0.9,
                surprisal: 0.75,
                entropy_mean: 0.5,
                repeat: Repeat { len: 3, dist: 40 },
                held_bytes: 700,
                exact_bytes: 200,
                budget: Some(0.3),
                layer_stats: &stats,
            };
            let mut out = Vec::new();
            f.push_to(&mut out);
            out
        };
        let at = |version: u32, len: usize| at_seen(version, 7, len, None);
        assert_eq!(at(OBS_VERSION, 8), at(OBS_VERSION, 4096));
        assert_ne!(at(1, 8), at(1, 4096));
        let v2 = at(OBS_VERSION, 8);
        assert_eq!(v2.len(), GLOBAL_FEATURES.len() + stats.len());
        // position, ln(1 + t), entropy, surprisal, entropy's mean, fill = 700 / (7 · 200),
        // budget left; version 2 the same without the surprisal.
        let expect = [7.0, 8f32.ln(), 0.9, 0.75, 0.5, 0.5, 0.3 - 0.5];
        for (got, want) in v2.iter().zip(expect) {
            assert!((got - want).abs() < 1e-6, "{v2:?}");
        }
        let old = at(2, 8);
        assert_eq!((old.len(), &old[..3], &old[3..]), (v2.len() - 1, &v2[..3], &v2[4..]));
        // A policy trained on 8-token sequences sees positions up to 7 and no further; inside
        // that range nothing changes, and the other features never depend on it.
        assert_eq!(at_seen(OBS_VERSION, 7, 8, Some(8)), v2);
        let beyond = at_seen(OBS_VERSION, 50, 64, Some(8));
        assert_eq!(beyond[..2], v2[..2]);
        assert_eq!(beyond[2..5], v2[2..5]);
        assert_eq!(beyond[7..], v2[7..]);
        assert_ne!(at_seen(OBS_VERSION, 50, 64, None)[..2], v2[..2]);
        // Version 4: version 3's features, then ln(1 + run) and ln(1 + distance), the distance
        // stopping where the positions do.
        let v4 = at(4, 8);
        assert_eq!((v4.len(), &v4[..7], &v4[9..]), (v2.len() + 2, &v2[..7], &v2[7..]));
        assert_eq!(v4[7..9], [4f32.ln(), 41f32.ln()]);
        assert_eq!(at(4, 8), at(4, 4096));
        assert_eq!(at_seen(4, 7, 8, Some(8))[8], 8f32.ln());
    }

    /// The repeat of a hand-worked sequence: a b c a b c b.
    #[test]
    fn repeats_by_hand() {
        let mut h = SequenceHistory::default();
        let got: Vec<(usize, usize)> = [1u32, 2, 3, 1, 2, 3, 2]
            .iter()
            .map(|&x| {
                let r = h.push_token(x);
                (r.len, r.dist)
            })
            .collect();
        // t = 3…5 repeat "a", "ab", "abc" from 3 back; at t = 6 "b" alone, latest at 4.
        assert_eq!(got, vec![(0, 0), (0, 0), (0, 0), (1, 3), (2, 3), (3, 3), (1, 2)]);
    }

    /// Against the definition, by brute force, on a small alphabet (long runs, many ties).
    #[test]
    fn repeats_match_brute_force() {
        let mut state = 12345u64;
        let tokens: Vec<u32> = (0..300)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % 3) as u32
            })
            .collect();
        let mut h = SequenceHistory::default();
        for t in 0..tokens.len() {
            let got = h.push_token(tokens[t]);
            let run = |j: usize| (0..=j).take_while(|&k| tokens[j - k] == tokens[t - k]).count();
            let (mut len, mut dist) = (0, 0);
            for j in 0..t {
                if run(j) > len || (run(j) == len && len > 0) {
                    (len, dist) = (run(j), t - j);
                }
            }
            assert_eq!((got.len, got.dist), (len, dist), "t = {t}");
        }
    }
}
