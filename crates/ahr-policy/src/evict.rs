//! Learned eviction at a fixed budget (DESIGN-NOTES, "Learned eviction"): every token is written
//! at one plain option; once a layer of a stream holds more than `budget` tokens, the policy
//! picks which of them (the token just written included) leaves the cache — TOVA's decision, made
//! by a network that scores each held token from what it has drawn so far.
//!
//! The observation of a step is [`EVICT_GLOBALS`] (for the critic) followed by, per layer and
//! per candidate slot (held tokens oldest first, the token just written last, `budget + 1` slots,
//! zeros past the held ones), [`CANDIDATE_FEATURES`]. The actor scores every candidate with one
//! small network shared by slots and layers, plus `κ ×` [`PRIOR_SCALE`] `×` the first feature
//! (minus the exponential mean, decay [`SMOOTH_DECAY`], of the log of the weights the token drew:
//! the judge's `tova-ema` score): with the network's output layer at zero the most probable
//! eviction is `tova-ema`'s at that decay, and PPO learns where the other features should
//! overrule it.

use ahr_tpa::review::KeyScorer;
use ahr_tpa::{Error, KvCache, ModelConfig, StepOutput, StoreOption};
use serde::{Deserialize, Serialize};

use crate::ObsBatch;

/// `[env] evict = { budget = 51, store = "full", decay = 0.9 }`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eviction {
    /// Tokens each layer of each stream holds at most; one more arrives every query, so from
    /// query `budget` on one token per layer leaves after every query.
    pub budget: usize,
    /// The plain option every token is written at (default `full`).
    #[serde(default = "full")]
    pub store: StoreOption,
    /// The decay of the `smooth` feature, the exponential mean of a candidate's log weights the
    /// actor starts from (default [`SMOOTH_DECAY`]): set it to the judge's best `tova-ema` decay
    /// at the budget (0.9 at 10 % of 1024-byte text, 0.5 at 5 %).
    #[serde(default = "smooth_decay")]
    pub decay: f32,
    /// What the `smooth` feature smooths (default `weight`, `tova-ema`'s score): with `output`,
    /// the attention output a candidate moves ([`output_moved`], the judge's `tova-out`), so the
    /// actor starts at that rule. The other features stay the weights drawn.
    #[serde(default, skip_serializing_if = "EvictScore::is_weight")]
    pub score: EvictScore,
    /// A second tier (`tier2 = { size = 20, store = "rank:2" }`): a token the policy lets go is
    /// not dropped but kept at a lower nested rank among the last `size` it let go, first in,
    /// first out — the judge's `tova-tiers` with the policy as its first tier. The store must be
    /// a factor rank and the tier's a lower one (demotion keeps the leading components).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier2: Option<SecondTier>,
    /// A byte class kept longer by the prior (`keep = { class = "space", nats = 0.3 }`): the
    /// `smooth` feature of its tokens lowered as if they drew e^nats times their weights, so the
    /// actor starts at the judge's `tova-class` rule (with `tier2`, its two-tier setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<ClassBonus>,
    /// The budget tilted across layers (`tilt = 7`: on two layers, 32 tokens in layer 0 and 18 in
    /// layer 1 at `budget = 25`): layer l holds [`tilted`]`(budget, tilt, l, layers)` tokens, the
    /// same number in all (negative: more in the deeper layers) — the judge's `tova-layers` split.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tilt: i32,
}

fn is_zero(tilt: &i32) -> bool {
    *tilt == 0
}

/// The budget of layer `layer` of `layers` when `budget` is tilted by `tilt` ([`Eviction::tilt`]):
/// `budget + round(tilt · (L − 1 − 2l) / (L − 1))`, a straight line from `budget + tilt` in the
/// first layer to `budget − tilt` in the last. Rounding is symmetric, so the layers hold
/// `L · budget` together; a tilt of at least the budget is not a split (checked where set).
pub fn tilted(budget: usize, tilt: i32, layer: usize, layers: usize) -> usize {
    let shift = (f64::from(tilt) * layer_slope(layer, layers)).round() as i64;
    (budget as i64 + shift).max(0) as usize
}

/// Where layer `layer` of `layers` sits on the straight line from the first layer (1) to the last
/// (−1): `(L − 1 − 2l) / (L − 1)`, 0 for a single layer — the shape of a tilted budget
/// ([`tilted`]) and of the judge's pooled rule's lean.
pub fn layer_slope(layer: usize, layers: usize) -> f64 {
    if layers < 2 {
        return 0.0;
    }
    (layers as f64 - 1.0 - 2.0 * layer as f64) / (layers as f64 - 1.0)
}

/// A class of bytes (tokens below 128 read as ASCII) a rule or an evicter's prior keeps longer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ByteClass {
    /// ASCII whitespace.
    Space,
    /// ASCII whitespace or punctuation: every byte but letters and digits.
    NotAlnum,
}

impl ByteClass {
    /// Every class, in report order.
    pub const ALL: [ByteClass; 2] = [ByteClass::Space, ByteClass::NotAlnum];

    /// The name in settings and files.
    pub fn name(self) -> &'static str {
        match self {
            ByteClass::Space => "space",
            ByteClass::NotAlnum => "not-alnum",
        }
    }

    /// Whether token `token` is of the class (tokens from 128 up never are).
    pub fn holds(self, token: u32) -> bool {
        let Some(b) = u8::try_from(token).ok().filter(u8::is_ascii) else { return false };
        match self {
            ByteClass::Space => b.is_ascii_whitespace(),
            ByteClass::NotAlnum => b.is_ascii_whitespace() || b.is_ascii_punctuation(),
        }
    }
}

/// A byte class kept longer: its tokens' smoothed log weights raised by `nats` where tokens are
/// compared (the judge's `tova-class`, [`Eviction::keep`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassBonus {
    /// The class.
    pub class: ByteClass,
    /// Nats added to the log score of its tokens.
    pub nats: f32,
}

impl ClassBonus {
    /// The bonus of token `token`.
    pub fn of(&self, token: u32) -> f64 {
        if self.class.holds(token) { self.nats as f64 } else { 0.0 }
    }

    /// Per position of `inputs`, the bonus its token gets.
    pub fn per_position(&self, inputs: &[u32]) -> Vec<f64> {
        inputs.iter().map(|&t| self.of(t)).collect()
    }
}

/// The second tier of a learned evicter ([`Eviction::tier2`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondTier {
    /// Tokens it holds per layer at most; the oldest leaves when one more joins.
    pub size: usize,
    /// The lower rank its tokens are kept at (a plain `rank:ρ` of the menu).
    pub store: StoreOption,
}

/// What the evicter's prior score smooths ([`Eviction::score`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvictScore {
    /// The weight the queries give a candidate (mean over heads): `tova-ema`.
    #[default]
    Weight,
    /// The attention output evicting it would move ([`output_moved`]): `tova-out`.
    Output,
}

impl EvictScore {
    fn is_weight(&self) -> bool {
        *self == EvictScore::Weight
    }
}

/// Each head's attention output over the held keys, `[h · d_h]`: `Σ_j w_jh v_jh` (`weights[j]`
/// key j's weight per head, `values[j]` its value `[h · d_h]`).
pub fn head_outputs(weights: &[Vec<f32>], values: &[&[f32]], head_dim: usize) -> Vec<f32> {
    let heads = weights.first().map_or(0, Vec::len);
    let mut outputs = vec![0f32; heads * head_dim];
    for (w, v) in weights.iter().zip(values) {
        for (h, &wh) in w.iter().enumerate() {
            for d in 0..head_dim {
                outputs[h * head_dim + d] += wh * v[h * head_dim + d];
            }
        }
    }
    outputs
}

/// What evicting each held key would change at one query: per head the attention output moves by
/// `w (o − v) / (1 − w)` (`w` the head's weight on the key, `v` its value, `o` the head's output
/// over the held keys, [`head_outputs`]), and a key's score is the sum over heads of that move's
/// norm (the judge's `tova-out`; arguments as [`head_outputs`]').
pub fn output_moved(weights: &[Vec<f32>], values: &[&[f32]], head_dim: usize) -> Vec<f32> {
    let heads = weights.first().map_or(0, Vec::len);
    let outputs = head_outputs(weights, values, head_dim);
    weights
        .iter()
        .zip(values)
        .map(|(w, v)| {
            let moved: f64 = (0..heads)
                .map(|h| {
                    let dist: f64 = (0..head_dim)
                        .map(|d| ((v[h * head_dim + d] - outputs[h * head_dim + d]) as f64).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    w[h] as f64 * dist / (1.0 - w[h] as f64).max(1e-6)
                })
                .sum();
            moved as f32
        })
        .collect()
}

fn full() -> StoreOption {
    StoreOption::Full
}

fn smooth_decay() -> f32 {
    SMOOTH_DECAY
}

impl Eviction {
    /// Candidate slots per layer: the held tokens and the one just written, in the layer with the
    /// largest budget (the others' slots past theirs are zeros).
    pub fn slots(&self) -> usize {
        self.budget + self.tilt.unsigned_abs() as usize + 1
    }

    /// The budget of layer `layer` of `layers` ([`tilted`]).
    pub fn budget_of(&self, layer: usize, layers: usize) -> usize {
        tilted(self.budget, self.tilt, layer, layers)
    }

    /// The tokens the fullest layer holds at most after a query: its budget and the second tier.
    pub fn held(&self) -> usize {
        self.budget + self.tilt.unsigned_abs() as usize + self.tier2.map_or(0, |t| t.size)
    }

    /// Whether the second tier, if any, can be reached by demotion on a model whose exact option is
    /// `exact`: the store a factor rank, the tier's a lower one (nested ranks keep the leading
    /// components; a dense token's factors would have to be kept beside it).
    pub fn check_tier2(&self, exact: StoreOption) -> Result<(), String> {
        let Some(tier) = self.tier2 else { return Ok(()) };
        match (self.store.stored_as(exact), tier.store) {
            (StoreOption::Rank(rank), StoreOption::Rank(rho)) if rho < rank => Ok(()),
            _ => Err(format!(
                "a second tier at {} needs the store ({}) to be a factor rank above it \
                 (demotion keeps the leading components of nested ranks)",
                tier.store, self.store
            )),
        }
    }
}

/// Per-step features the critic reads (the actor reads the candidates only, so its decisions
/// do not depend on where the sequence is).
pub const EVICT_GLOBALS: [&str; 2] = [
    "position",     // t
    "log_position", // ln(1 + t)
];

/// The default decay of the log-weight mean the actor starts from (the judge's best `tova-ema`
/// on 1024-byte text at 10 %; [`Eviction::decay`]).
pub const SMOOTH_DECAY: f32 = 0.9;

/// Per-candidate features, in order. Weights `w` are the attention a query gave the token
/// (mean over heads); `a(w) = −ln(w + 1e-30) / 10`.
pub const CANDIDATE_FEATURES: [&str; 13] = [
    "smooth", // −(exponential mean of ln(w + 1e-30), the eviction's decay) / 10: tova-ema's score
    "now",    // a(weight from the current query): TOVA's score
    "prev",   // a(weight from the previous query) (the current one for the token just written)
    "ema",    // a(exponential mean of the weights, decay 0.8 per query)
    "max",    // a(largest weight drawn)
    "mean",   // a(total weight drawn / queries seen)
    "total",  // ln(1 + total weight drawn): H2O's score
    "age",    // ln(1 + queries since written) / 7
    "new",    // 1 for the token just written
    "layer",  // layer / (layers − 1)
    "space",  // the token is an ASCII whitespace byte
    "alnum",  // the token is an ASCII letter or digit
    "punct",  // the token is ASCII punctuation
];

/// The log of a weight as smoothed scores take it: `ln(w + 1e-30)` (finite at w = 0).
pub fn log_weight(w: f32) -> f64 {
    (w as f64 + 1e-30).ln()
}

/// One query's step of the exponential mean of log weights with decay `decay`: the evicter's
/// `smooth` feature and the judge's `tova-ema` score (`ahr_eval::rules::Held::smoothed`) both
/// take it from here, so the evicter starts exactly at that rule.
pub fn smooth_step(mean: f64, w: f32, decay: f32) -> f64 {
    let d = decay as f64;
    d * mean + (1.0 - d) * log_weight(w)
}

/// The scale of the first candidate feature (`smooth`): `κ · PRIOR_SCALE · smooth` is `−κ ×` the
/// mean log weight.
pub const PRIOR_SCALE: f32 = 10.0;

/// What a held token has drawn so far, to build its features.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    /// Position it was written at.
    pub position: usize,
    /// Its token id.
    pub token: u32,
    /// The current query's weight.
    pub now: f32,
    /// The previous query's weight.
    pub prev: f32,
    /// Exponential mean of the weights it drew.
    pub ema: f32,
    /// The largest weight it drew.
    pub max: f32,
    /// The total weight it drew.
    pub total: f32,
    /// The exponential mean (decay `decay`) of `ln(w + 1e-30)` over the weights it drew (in f64,
    /// as the judge's `tova-ema` keeps it).
    pub log_mean: f64,
    /// The decay of `log_mean` per query ([`Eviction::decay`]).
    pub decay: f32,
    /// Nats added to `log_mean` in the `smooth` feature ([`Eviction::keep`]; 0: none).
    pub bonus: f64,
}

impl Drawn {
    /// A token written at `position` that drew `w` from its own query; its `smooth` feature
    /// decays by `decay` per query.
    pub fn new(position: usize, token: u32, w: f32, decay: f32) -> Self {
        Self::with_prior(position, token, w, w, decay)
    }

    /// [`Drawn::new`] whose `smooth` feature smooths `prior` instead of the weight
    /// ([`EvictScore::Output`]).
    pub fn with_prior(position: usize, token: u32, w: f32, prior: f32, decay: f32) -> Self {
        let log_mean = log_weight(prior);
        Self { position, token, now: w, prev: w, ema: w, max: w, total: w, log_mean, decay, bonus: 0.0 }
    }

    /// This token with `bonus` nats added to its smoothed log weight in the `smooth` feature.
    pub fn with_bonus(self, bonus: f64) -> Self {
        Self { bonus, ..self }
    }

    /// Record the weight `w` of the next query.
    pub fn draw(&mut self, w: f32) {
        self.draw_with_prior(w, w);
    }

    /// Record the weight `w` of the next query, and `prior` as what `smooth` smooths.
    pub fn draw_with_prior(&mut self, w: f32, prior: f32) {
        self.prev = self.now;
        self.now = w;
        self.ema = 0.8 * self.ema + 0.2 * w;
        self.max = self.max.max(w);
        self.total += w;
        self.log_mean = smooth_step(self.log_mean, prior, self.decay);
    }

    /// Its [`CANDIDATE_FEATURES`] at query `t` in layer `layer` of `layers`.
    pub fn features(&self, t: usize, layer: usize, layers: usize) -> [f32; CANDIDATE_FEATURES.len()] {
        let a = |w: f32| -(w.max(0.0) + 1e-30).ln() / PRIOR_SCALE;
        let age = t - self.position;
        let byte = (self.token < 128).then_some(self.token as u8);
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        [
            (-(self.log_mean + self.bonus) / PRIOR_SCALE as f64) as f32,
            a(self.now),
            a(self.prev),
            a(self.ema),
            a(self.max),
            a(self.total / (age + 1) as f32),
            self.total.ln_1p(),
            (age as f32).ln_1p() / 7.0,
            flag(age == 0),
            if layers > 1 { layer as f32 / (layers - 1) as f32 } else { 0.0 },
            flag(byte.is_some_and(|b| b.is_ascii_whitespace())),
            flag(byte.is_some_and(|b| b.is_ascii_alphanumeric())),
            flag(byte.is_some_and(|b| b.is_ascii_punctuation())),
        ]
    }
}

/// The candidates of an eviction observation (`layers` layers, `slots` slots each): per row and
/// layer, in that order, the allowed slots and each slot's [`CANDIDATE_FEATURES`].
pub fn candidates(obs: &ObsBatch, layers: usize, slots: usize) -> impl Iterator<Item = (&[bool], Vec<&[f32]>)> {
    let f = CANDIDATE_FEATURES.len();
    let row_dim = EVICT_GLOBALS.len() + layers * slots * f;
    (0..obs.len * layers).map(move |i| {
        let (r, l) = (i / layers, i % layers);
        let base = r * row_dim + EVICT_GLOBALS.len() + l * slots * f;
        let features = (0..slots).map(|j| &obs.features[base + j * f..base + (j + 1) * f]).collect();
        (&obs.masks[i * slots..(i + 1) * slots], features)
    })
}

/// A hand-written or fitted evicter's actions: per row and layer the allowed candidate with the
/// highest `score(layer, features)` (ties: the oldest).
pub fn evict_by(obs: &ObsBatch, layers: usize, slots: usize, score: &dyn Fn(usize, &[f32]) -> f32) -> Vec<usize> {
    candidates(obs, layers, slots)
        .enumerate()
        .map(|(i, (mask, features))| {
            let best = (0..slots).filter(|&j| mask[j]).fold(None::<(usize, f32)>, |best, j| {
                let s = score(i % layers, features[j]);
                match best {
                    Some((_, b)) if b >= s => best,
                    _ => Some((j, s)),
                }
            });
            best.map_or(0, |(j, _)| j)
        })
        .collect()
}

/// What each stream's layers hold under learned eviction, for the rank environment and for
/// inference alike (one book, so both make the same evictions). Per step t: the model's step for
/// token t (its query sees the held tokens and itself) gives each held token's weight
/// ([`KeyScorer`]); t joins the candidates last; the observation shows every candidate's features.
/// The action of a layer is a candidate slot: once the layer holds more than `budget` tokens with t
/// pushed, that token leaves the cache from query t + 1 on (TOVA's timing); below the budget only
/// slot 0 is allowed and the action does nothing.
pub struct EvictBook {
    eviction: Eviction,
    /// The menu index of `eviction.store`.
    option: usize,
    layers: usize,
    head_dim: usize,
    scorer: KeyScorer,
    /// Per (stream, layer): the held tokens in position order (the newest last).
    held: Vec<Vec<Held>>,
    /// With a second tier: its menu index and, per (stream, layer), the positions it holds in
    /// the order they joined.
    second: Option<(usize, Vec<std::collections::VecDeque<usize>>)>,
}

/// A held token: what it drew, its stored key and (for [`EvictScore::Output`]) value.
type Held = (Drawn, Vec<f32>, Vec<f32>);

/// A token a step's actions moved: let go by the policy (to the second tier where there is one)
/// or pushed out of the second tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evicted {
    /// The stream it left.
    pub stream: usize,
    /// The layer it left.
    pub layer: usize,
    /// The position it was written at.
    pub position: usize,
    /// The menu index it was held at until now.
    pub from: usize,
    /// The menu index it is held at from the next query on (`None`: it left the cache).
    pub to: Option<usize>,
}

impl EvictBook {
    /// An empty book for `streams` streams of a model with config `cfg` (its menu must hold the
    /// eviction's store option as a plain option).
    pub fn new(cfg: &ModelConfig, streams: usize, eviction: Eviction) -> ahr_tpa::Result<Self> {
        let index = |o: StoreOption| cfg.option_index(o).map_err(|e| Error::Input(format!("[env] evict: {e}")));
        let option = index(eviction.store)?;
        eviction.check_tier2(cfg.exact_option()).map_err(|e| Error::Input(format!("[env] evict: {e}")))?;
        let second = match eviction.tier2 {
            Some(tier) => Some((index(tier.store)?, vec![std::collections::VecDeque::new(); streams * cfg.n_layers])),
            None => None,
        };
        Ok(Self {
            eviction,
            option,
            layers: cfg.n_layers,
            head_dim: cfg.head_dim,
            scorer: KeyScorer::new(cfg),
            held: vec![Vec::new(); streams * cfg.n_layers],
            second,
        })
    }

    /// The menu index every token is written at.
    pub fn option(&self) -> usize {
        self.option
    }

    /// Record step `t` (tokens `ids`): every held token draws its weight from the step's query,
    /// and the token just processed joins its layer's candidates.
    pub fn observe(&mut self, out: &StepOutput, ids: &[u32], t: usize) -> ahr_tpa::Result<()> {
        let weights = self.scorer.step(out, |_| true)?;
        let options = vec![self.option; ids.len()];
        let output = self.eviction.score == EvictScore::Output;
        for l in 0..self.layers {
            let keys = self.scorer.stored_keys(&out.pending, l, &options)?;
            let values = if output { self.scorer.stored_values(&out.pending, l, &options)? } else { Vec::new() };
            let mut values = values.into_iter();
            for (b, key) in keys.into_iter().enumerate() {
                let held = &mut self.held[b * self.layers + l];
                let decay = self.eviction.decay;
                let bonus = self.eviction.keep.map_or(0.0, |k| k.of(ids[b]));
                if !output {
                    for (drawn, k, _) in held.iter_mut() {
                        drawn.draw(weights.weight(b, l, k));
                    }
                    let w = weights.weight(b, l, &key);
                    held.push((Drawn::new(t, ids[b], w, decay).with_bonus(bonus), key, Vec::new()));
                    continue;
                }
                // The new token joins first (its own query weighs it too); each held token's
                // weight is the mean of its per-head weights, which the output score needs anyway.
                held.push((
                    Drawn::new(t, ids[b], 0.0, decay).with_bonus(bonus),
                    key,
                    values.next().unwrap_or_default(),
                ));
                let per_head: Vec<Vec<f32>> = held.iter().map(|(_, k, _)| weights.head_weights(b, l, k)).collect();
                let vals: Vec<&[f32]> = held.iter().map(|(_, _, v)| v.as_slice()).collect();
                let moved = output_moved(&per_head, &vals, self.head_dim);
                let new = held.len() - 1;
                for (j, ((drawn, _, _), (h, m))) in held.iter_mut().zip(per_head.iter().zip(moved)).enumerate() {
                    let w = h.iter().sum::<f32>() / h.len() as f32;
                    if j == new {
                        *drawn = Drawn::with_prior(t, ids[b], w, m, decay).with_bonus(bonus);
                    } else {
                        drawn.draw_with_prior(w, m);
                    }
                }
            }
        }
        Ok(())
    }

    /// The observation of step `t`: per stream [`EVICT_GLOBALS`], then per layer and slot the
    /// candidates' features (zeros past the held ones), with each layer's allowed slots.
    pub fn obs(&self, t: usize) -> ObsBatch {
        let streams = self.held.len() / self.layers;
        let (slots, f) = (self.eviction.slots(), CANDIDATE_FEATURES.len());
        let mut obs = ObsBatch { len: streams, ..Default::default() };
        obs.features.reserve(streams * (EVICT_GLOBALS.len() + self.layers * slots * f));
        for b in 0..streams {
            obs.features.extend([t as f32, (t as f32).ln_1p()]);
            for l in 0..self.layers {
                let held = &self.held[b * self.layers + l];
                for (drawn, _, _) in held {
                    obs.features.extend(drawn.features(t, l, self.layers));
                }
                obs.features.extend(std::iter::repeat_n(0.0, (slots - held.len()) * f));
                let over = held.len() > self.eviction.budget_of(l, self.layers);
                obs.masks.extend((0..slots).map(|j| if over { j < held.len() } else { j == 0 }));
            }
        }
        obs
    }

    /// Apply `actions` (a slot per stream and layer) after step t's token was pushed to `cache`:
    /// in every layer over its budget the chosen token leaves from query t + 1 on — dropped, or
    /// demoted into the second tier, whose oldest token is dropped once it holds more than its size.
    pub fn evict(&mut self, cache: &mut KvCache, actions: &[usize]) -> ahr_tpa::Result<Vec<Evicted>> {
        let mut out = Vec::new();
        for (i, held) in self.held.iter_mut().enumerate() {
            let (stream, layer) = (i / self.layers, i % self.layers);
            if held.len() <= self.eviction.budget_of(layer, self.layers) {
                continue;
            }
            let slot = actions[i];
            if slot >= held.len() {
                return Err(Error::Input(format!("evict: slot {slot} of {} candidates", held.len())));
            }
            let position = held.remove(slot).0.position;
            let from = self.option;
            match self.second.as_mut() {
                None => {
                    cache.evict(stream, layer, from, slot)?;
                    out.push(Evicted { stream, layer, position, from, to: None });
                }
                Some((to, tiers)) => {
                    cache.demote(stream, layer, from, slot, *to)?;
                    out.push(Evicted { stream, layer, position, from, to: Some(*to) });
                    let size = self.eviction.tier2.map_or(0, |t| t.size);
                    tiers[i].push_back(position);
                    while tiers[i].len() > size {
                        let position = tiers[i].pop_front().expect("a token in the second tier");
                        cache.evict(stream, layer, *to, 0)?;
                        out.push(Evicted { stream, layer, position, from: *to, to: None });
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed features of a token written at 3 that drew 0.5, then 0.1, then 0.
    #[test]
    fn features_follow_what_the_token_drew() {
        let mut d = Drawn::new(3, b'a' as u32, 0.5, SMOOTH_DECAY);
        let f = d.features(3, 0, 2);
        assert!((f[0] - 0.5f32.ln().abs() / 10.0).abs() < 1e-6);
        assert!((f[1] - 0.5f32.ln().abs() / 10.0).abs() < 1e-6);
        assert_eq!(f[7], 0.0);
        assert_eq!(f[8], 1.0);
        d.draw(0.1);
        d.draw(0.0);
        let f = d.features(5, 1, 2);
        // smooth: 0.81 ln 0.5 + 0.09 ln 0.1 + 0.1 ln 1e-30
        let d = SMOOTH_DECAY as f64;
        let smooth = d * d * 0.5f64.ln() + d * (1.0 - d) * 0.1f64.ln() + (1.0 - d) * 1e-30f64.ln();
        assert!((f[0] as f64 + smooth / 10.0).abs() < 1e-6, "smooth {}", f[0]);
        assert!((f[1] - 30.0 * 10f32.ln() / 10.0).abs() < 1e-3, "now = 0: {}", f[1]);
        assert!((f[2] - 0.1f32.ln().abs() / 10.0).abs() < 1e-6);
        let ema = 0.8 * (0.8 * 0.5 + 0.2 * 0.1);
        assert!((f[3] + (ema as f32).ln() / 10.0).abs() < 1e-6);
        assert!((f[4] - 0.5f32.ln().abs() / 10.0).abs() < 1e-6);
        assert!((f[5] + (0.6f32 / 3.0).ln() / 10.0).abs() < 1e-6);
        assert!((f[6] - 1.6f32.ln()).abs() < 1e-6);
        assert!((f[7] - 3f32.ln() / 7.0).abs() < 1e-6);
        assert_eq!(&f[8..], &[0.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(&Drawn::new(0, b' ' as u32, 1.0, SMOOTH_DECAY).features(0, 0, 1)[9..], &[0.0, 1.0, 0.0, 0.0]);
        assert_eq!(&Drawn::new(0, 300, 1.0, SMOOTH_DECAY).features(0, 0, 1)[10..], &[0.0, 0.0, 0.0]);
    }

    /// Two rows, two layers, three slots: each layer's candidates read from their own place; the
    /// highest allowed score leaves, the older on ties; a layer below budget allows slot 0 only.
    #[test]
    fn evict_by_picks_the_highest_allowed_score_per_layer() {
        let (layers, slots, f) = (2, 3, CANDIDATE_FEATURES.len());
        let mut obs = ObsBatch { len: 2, ..Default::default() };
        // Per row: globals, then per layer and slot the features, the first one set to `score`.
        let scores = [[[0.1, 0.9, 0.5], [0.2, 0.2, 0.1]], [[0.3, 0.1, 0.0], [0.0, 0.4, 0.8]]];
        for row in &scores {
            obs.features.extend([0.0; EVICT_GLOBALS.len()]);
            for layer in row {
                for &s in layer {
                    obs.features.push(s);
                    obs.features.extend(std::iter::repeat_n(0.0, f - 1));
                }
            }
        }
        obs.masks = [[true, true, true], [true, true, true], [true, false, false], [true, true, false]].concat();
        let seen: Vec<Vec<f32>> =
            candidates(&obs, layers, slots).map(|(_, x)| x.iter().map(|c| c[0]).collect()).collect();
        assert_eq!(seen, vec![vec![0.1, 0.9, 0.5], vec![0.2, 0.2, 0.1], vec![0.3, 0.1, 0.0], vec![0.0, 0.4, 0.8]]);
        assert_eq!(evict_by(&obs, layers, slots, &|_, x| x[0]), vec![1, 0, 0, 1]);
        assert_eq!(evict_by(&obs, layers, slots, &|l, x| if l == 0 { -x[0] } else { x[0] }), vec![0, 0, 0, 1]);
    }

    /// Two heads of width 1, two held keys. Head 0 weighs them 0.5 / 0.5 with values 1 / 3
    /// (output 2), head 1 0.2 / 0.8 with values 0 / 1 (output 0.8). Key 0 moves head 0 by
    /// 0.5 · |1 − 2| / 0.5 = 1 and head 1 by 0.2 · |0 − 0.8| / 0.8 = 0.2: 1.2; key 1 moves them by
    /// 0.5 · 1 / 0.5 = 1 and 0.8 · 0.2 / 0.2 = 0.8: 1.8.
    #[test]
    fn output_moved_is_the_heads_output_change_summed() {
        let weights = vec![vec![0.5, 0.2], vec![0.5, 0.8]];
        let (v0, v1) = ([1.0, 0.0], [3.0, 1.0]);
        let values: Vec<&[f32]> = vec![&v0, &v1];
        let out = head_outputs(&weights, &values, 1);
        assert!((out[0] - 2.0).abs() < 1e-6 && (out[1] - 0.8).abs() < 1e-6, "{out:?}");
        let moved = output_moved(&weights, &values, 1);
        assert!((moved[0] - 1.2).abs() < 1e-5 && (moved[1] - 1.8).abs() < 1e-5, "{moved:?}");
    }

    #[test]
    fn the_store_defaults_to_full() {
        let e: Eviction = serde_json::from_str(r#"{"budget": 51}"#).unwrap();
        assert_eq!(
            e,
            Eviction {
                budget: 51,
                store: StoreOption::Full,
                decay: SMOOTH_DECAY,
                score: EvictScore::Weight,
                tier2: None,
                keep: None,
                tilt: 0
            }
        );
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"budget":51,"store":"full","decay":0.9}"#,
            "older manifests"
        );
        let kept: Eviction =
            serde_json::from_str(r#"{"budget": 5, "keep": {"class": "not-alnum", "nats": 0.3}}"#).unwrap();
        assert_eq!(kept.keep, Some(ClassBonus { class: ByteClass::NotAlnum, nats: 0.3 }));
        assert!(serde_json::from_str::<Eviction>(r#"{"budget": 5, "keep": {"class": "vowel", "nats": 0.3}}"#).is_err());
        let keep = kept.keep.unwrap();
        assert_eq!(
            (keep.of(b' ' as u32), keep.of(b';' as u32), keep.of(b'a' as u32), keep.of(200)),
            (0.3f32 as f64, 0.3f32 as f64, 0.0, 0.0)
        );
        let out: Eviction = serde_json::from_str(r#"{"budget": 25, "decay": 0.5, "score": "output"}"#).unwrap();
        assert_eq!(out.score, EvictScore::Output);
        assert!(serde_json::to_string(&out).unwrap().contains(r#""score":"output""#));
        assert_eq!(e.slots(), 52);
        let e: Eviction = serde_json::from_str(r#"{"budget": 25, "decay": 0.5}"#).unwrap();
        assert_eq!((e.decay, e.slots()), (0.5, 26));
        assert!(serde_json::from_str::<Eviction>(r#"{"budget": 5, "kept": 3}"#).is_err(), "unknown fields");
        let tiered: Eviction =
            serde_json::from_str(r#"{"budget": 16, "store": "rank:4", "tier2": {"size": 20, "store": "rank:2"}}"#)
                .unwrap();
        assert_eq!(tiered.tier2, Some(SecondTier { size: 20, store: StoreOption::Rank(2) }));
        assert_eq!((tiered.slots(), tiered.held()), (17, 36));
        assert!(serde_json::to_string(&tiered).unwrap().contains(r#""tier2":{"size":20,"store":"rank:2"}"#));
        let tilted: Eviction = serde_json::from_str(r#"{"budget": 25, "tilt": -7}"#).unwrap();
        assert_eq!((tilted.tilt, tilted.slots(), tilted.held()), (-7, 33, 32));
        assert!(serde_json::to_string(&tilted).unwrap().contains(r#""tilt":-7"#));
    }

    /// Hand-computed tilts: on two layers the budget moves by the tilt, on four by ±tilt and
    /// ±tilt/3 (rounded half away from zero on both sides), and the layers hold L · budget together.
    #[test]
    fn a_tilt_moves_budget_between_layers_at_the_same_total() {
        assert_eq!([0, 1].map(|l| tilted(25, 7, l, 2)), [32, 18]);
        assert_eq!([0, 1].map(|l| tilted(25, -7, l, 2)), [18, 32]);
        // 4 layers, tilt 5: offsets 5, 5/3 → 2, −2, −5.
        assert_eq!([0, 1, 2, 3].map(|l| tilted(10, 5, l, 4)), [15, 12, 8, 5]);
        // 3 layers: the middle layer keeps the budget.
        assert_eq!([0, 1, 2].map(|l| tilted(10, -3, l, 3)), [7, 10, 13]);
        assert_eq!(tilted(10, 4, 0, 1), 10, "one layer has nothing to tilt against");
        for (budget, tilt, layers) in [(25, 7, 2), (21, -8, 2), (10, 5, 4), (9, 4, 5), (30, 11, 6)] {
            let sum: usize = (0..layers).map(|l| tilted(budget, tilt, l, layers)).sum();
            assert_eq!(sum, layers * budget, "budget {budget} tilt {tilt} on {layers} layers");
        }
    }
}
