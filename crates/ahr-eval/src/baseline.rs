//! The rule families of the judge (DESIGN.md §9) as types: a [`Family`] is a kind of rule, a
//! [`Baseline`] one setting of it. Every family that keeps or evicts tokens also comes with its
//! kept tokens stored at each cheaper menu option (`streaming-llm@rank:1`), so a rule can trade
//! rank for tokens as a policy can.

use std::fmt;
use std::str::FromStr;

pub use ahr_policy::evict::{ByteClass, ClassBonus};
use ahr_tpa::{ModelConfig, StoreOption, cost};
use serde::{Deserialize, Serialize};

use crate::rules::{self, NEVER};

/// A family of cache rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// One menu option for every token and layer.
    Uniform,
    /// StreamingLLM: attention sinks + a recent window (sinks-only prefix rules included).
    StreamingLlm,
    /// A recent window and a storage option chosen per layer (layer-wise budgets, as
    /// PyramidKV-style rules do; "window 6 in layer 0, everything at rank 1 in layer 1").
    LayerWindows,
    /// H2O: heavy hitters by accumulated attention + a recent window, the attention being what
    /// the rule's own cache had at each step (the paper's rule).
    H2o,
    /// TOVA: evict the key the current query attends to least, in the rule's own cache.
    Tova,
    /// TOVA with smoothed scores: evict the key whose recent weights have the least geometric
    /// mean (an exponential mean of their logs, decay 0.5, 0.8, 0.9 or 0.95 per query), in the
    /// rule's own cache — one noisy query no longer decides.
    TovaEma,
    /// `tova-ema` scored by what evicting a key would change: per query head the attention output
    /// moves by `w (o − v) / (1 − w)` (w the head's weight on the key, v its value, o the head's
    /// output); the key moving the heads' outputs least (summed norms, smoothed as `tova-ema`'s)
    /// goes, in the rule's own cache — a key whose value the head outputs anyway is cheap however
    /// much weight it draws.
    TovaOut,
    /// A two-tier cache: `tova-out` keeps its budget at a factor rank, and each key it lets go
    /// drops to a lower, nested rank (its leading components: nothing kept beside it) and leaves
    /// once a second budget of keys let go after it have followed — first in, first out
    /// ([`crate::own_cache::tiered_evictions`]). Factor stores only; opt-in ([`Family::opt_in`]).
    TovaTiers,
    /// The best one-tier (`tova-ema`, `tova-out`) and the best `tova-tiers` setting with the
    /// budget moved between layers at the same total (a straight line from layer 0 to the last,
    /// [`ahr_policy::evict::tilted`], by a share of the budget from [`crate::judge::TILTS`], either
    /// way) — per-layer budgets as PyramidKV-style rules set them. Opt-in ([`Family::opt_in`]).
    TovaLayers,
    /// The best one-tier and the best `tova-tiers` setting with one pool of keys per stream
    /// instead of a budget per layer: the layers share `L · budget` keys, the lowest-scored across
    /// them leaving (a lean from [`crate::judge::LEANS`] favouring the first or the last layers) —
    /// the split between layers decided query by query from the scores. Opt-in.
    TovaPooled,
    /// A byte-class bonus on the best one-tier (`tova-ema`, `tova-out`) and the best `tova-tiers`
    /// setting: keys of a class (whitespace; whitespace or punctuation) kept as if they scored e^b
    /// times what they did, b from a grid ([`crate::judge::CLASS_BONUSES`]) — the rule a
    /// practitioner writes once the bytes a learned evicter keeps longer are known
    /// ([`ByteClass`]). Byte text only; opt-in ([`Family::opt_in`]).
    TovaClass,
    /// H2O scored from the exact full-cache forward's attention: optimistic (no deployed cache can
    /// compute it), kept for comparison.
    H2oFullCache,
    /// TOVA scored from the exact full-cache forward's attention: optimistic, as `h2o-full-cache`.
    TovaFullCache,
    /// K-norm: keep the keys with the lowest L2 norm.
    KNorm,
    /// Keep a token when the model's next-token entropy at it is at least τ.
    Entropy,
    /// The entropy rule over two rungs of the option ladder: the richer option above τ_hi, the
    /// cheaper one between τ_lo and τ_hi, dropped below τ_lo.
    EntropyLadder,
    /// Keep a token to the end when its surprisal under the model is at most τ (content the
    /// model saw coming: repeated, copied) or, the other way, at least τ (informative content);
    /// every other token for a recent window. The surprisal is what the model predicted with
    /// the rule's own cache, as a deployed cache would compute it.
    Surprisal,
    /// Per-layer windows with content in the last layer: every layer keeps a window at its own
    /// storage option, and the last layer also keeps to the end the tokens the model predicted
    /// (surprisal ≤ τ with the rule's own cache) — "layer 0 the last token; layer 1 every token
    /// for W queries, the predicted ones for good".
    LayerSurprisal,
    /// The surprisal rule scored by the exact full-cache forward: optimistic (a cache that has
    /// evicted a fact's first statement cannot see its restatement coming), kept for comparison.
    SurprisalFullCache,
    /// Per-layer windows, and in the last layer every token until the context shows it
    /// superseded: read as the value of the token before it, it leaves once that key returns
    /// followed by a different token (a re-assignment). The rule a practitioner writes for
    /// key-value recall with re-assignments (token equality, causal); kept tokens at a plain store.
    Superseded,
    /// Per-layer windows, and in the last layer every token until a spike review drops it: one
    /// step after it topped a query's attention row (the most-attended kept token, mean over
    /// heads, with the rule's own cache) with at least a given weight, if the token that followed
    /// surprised the model — the query leaned on it and the context went elsewhere. What a
    /// policy with `review = "spike"` can do, written by hand: generic (attention and the
    /// model's own surprise, no token equality).
    Spike,
    /// `superseded` and `spike` together: in the last layer a token leaves at whichever comes
    /// first, its key's return followed by another token (token equality) or a spike review's
    /// drop (attention and surprise) — what a policy with `review = "spike-tokens"` can see,
    /// written by hand.
    SupersededSpike,
    /// A vocabulary rule fitted to data: per layer, each token class (a frequent token id, or a
    /// range of the others) at its own menu option, fitted on training sequences
    /// ([`crate::token_class`]) — what a policy that reads the token must do better than.
    TokenClass,
    /// The same fit with nearly every token id a class of its own, on 4× the training sequences
    /// ([`crate::token_class::TABLE`]): a per-byte table for text — finer than `token-class`, and
    /// opt-in ([`Family::opt_in`]).
    TokenTable,
    /// `token-class` with every class split in two by the model's next-token entropy where the
    /// token is written ([`crate::token_class::ENTROPY`]): the token and the model's uncertainty,
    /// what the 256-byte text policies read (opt-in).
    TokenEntropy,
    /// Keep each token with a probability that matches a memory target.
    Random,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 26] = [
        Family::Uniform,
        Family::StreamingLlm,
        Family::LayerWindows,
        Family::H2o,
        Family::Tova,
        Family::TovaEma,
        Family::TovaOut,
        Family::TovaTiers,
        Family::TovaLayers,
        Family::TovaPooled,
        Family::TovaClass,
        Family::H2oFullCache,
        Family::TovaFullCache,
        Family::KNorm,
        Family::Entropy,
        Family::EntropyLadder,
        Family::Surprisal,
        Family::SurprisalFullCache,
        Family::LayerSurprisal,
        Family::Superseded,
        Family::Spike,
        Family::SupersededSpike,
        Family::TokenClass,
        Family::TokenTable,
        Family::TokenEntropy,
        Family::Random,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::Uniform => "uniform",
            Family::StreamingLlm => "streaming-llm",
            Family::LayerWindows => "layer-windows",
            Family::H2o => "h2o",
            Family::Tova => "tova",
            Family::TovaEma => "tova-ema",
            Family::TovaOut => "tova-out",
            Family::TovaTiers => "tova-tiers",
            Family::TovaLayers => "tova-layers",
            Family::TovaPooled => "tova-pooled",
            Family::TovaClass => "tova-class",
            Family::H2oFullCache => "h2o-full-cache",
            Family::TovaFullCache => "tova-full-cache",
            Family::KNorm => "k-norm",
            Family::Entropy => "entropy",
            Family::EntropyLadder => "entropy-ladder",
            Family::Surprisal => "surprisal",
            Family::SurprisalFullCache => "surprisal-full-cache",
            Family::LayerSurprisal => "layer-surprisal",
            Family::Superseded => "superseded",
            Family::Spike => "spike",
            Family::SupersededSpike => "superseded-spike",
            Family::TokenClass => "token-class",
            Family::TokenTable => "token-table",
            Family::TokenEntropy => "token-entropy",
            Family::Random => "random",
        }
    }

    /// Whether the family runs only when named (`ahr eval --baselines`): left out of `eval`'s
    /// default list and the quickstart's judge — `token-table` because its fit takes an hour or
    /// more per memory target at 1024 tokens, `token-entropy` because it fits twice
    /// `token-class`'s classes, `tova-tiers` because it has settings only where the
    /// menu holds two factor ranks and doubles the decodes of `tova-out`'s grid, `tova-class`
    /// because it reads bytes (text only) and runs both those grids before its own, `tova-layers`
    /// and `tova-pooled` because they run them too.
    pub fn opt_in(self) -> bool {
        matches!(
            self,
            Family::TokenTable
                | Family::TokenEntropy
                | Family::TovaTiers
                | Family::TovaClass
                | Family::TovaLayers
                | Family::TovaPooled
        )
    }

    /// The grain of a fitted vocabulary family (`None` for the others).
    pub fn grain(self) -> Option<crate::token_class::Grain> {
        match self {
            Family::TokenClass => Some(crate::token_class::CLASSES),
            Family::TokenTable => Some(crate::token_class::TABLE),
            Family::TokenEntropy => Some(crate::token_class::ENTROPY),
            _ => None,
        }
    }

    /// Whether the family needs the attention maps (or key norms) of the full-cache forward (H2O
    /// and TOVA scored by their own cache read theirs off the decode instead: see [`Scores`]).
    pub fn needs_attention(self) -> bool {
        matches!(self, Family::H2oFullCache | Family::TovaFullCache | Family::KNorm)
    }

    /// Whether every probe of the family's memory search is a decode with the rule's own cache
    /// (the surprisal rules: their memory depends on what that cache predicts).
    pub fn search_decodes(self) -> bool {
        matches!(self, Family::Surprisal | Family::LayerSurprisal | Family::Spike | Family::SupersededSpike)
    }

    /// Where an attention family reads its scores from (`None` for the others).
    pub fn scores(self) -> Option<Scores> {
        match self {
            Family::H2o
            | Family::Tova
            | Family::TovaEma
            | Family::TovaOut
            | Family::TovaTiers
            | Family::TovaClass
            | Family::TovaLayers
            | Family::TovaPooled
            | Family::Surprisal
            | Family::LayerSurprisal
            | Family::Spike
            | Family::SupersededSpike => Some(Scores::Cache),
            Family::H2oFullCache | Family::TovaFullCache | Family::SurprisalFullCache => Some(Scores::FullCache),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            format!("unknown baseline family `{s}`; choose from {}", names.join(", "))
        })
    }
}

/// The attention H2O and TOVA score keys by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scores {
    /// What the rule's own cache had at each step: evicted keys absent, kept keys at the rule's
    /// storage option, every later position computed from that cache — the rules as published.
    Cache,
    /// The exact full-cache forward's attention, whatever the rule evicted: optimistic.
    FullCache,
}

/// Layers a [`PerLayer`] setting can describe.
pub const MAX_RULE_LAYERS: usize = 4;

/// StreamingLLM per layer: in layer l < `layers` the first `sinks[l]` tokens stay to the end, any
/// other key k is seen by the `windows[l]` queries after it (a window of at least T keeps every
/// token), and kept keys are stored at `stores[l]`; deeper layers repeat the last entry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PerLayer {
    /// Layers described.
    pub layers: usize,
    /// Window per layer.
    pub windows: [usize; MAX_RULE_LAYERS],
    /// Attention sinks (a prefix kept to the end) per layer.
    pub sinks: [usize; MAX_RULE_LAYERS],
    /// Storage per layer.
    pub stores: [StoreOption; MAX_RULE_LAYERS],
}

impl PerLayer {
    /// `layers` layers: `head` (window, store) for every layer before the last, `last` for the last.
    pub fn split(layers: usize, head: (usize, StoreOption), last: (usize, StoreOption)) -> Self {
        let (mut windows, mut stores) = ([head.0; MAX_RULE_LAYERS], [head.1; MAX_RULE_LAYERS]);
        (windows[layers - 1], stores[layers - 1]) = last;
        Self { layers, windows, sinks: [0; MAX_RULE_LAYERS], stores }
    }

    /// The window of `layer`.
    pub fn window(&self, layer: usize) -> usize {
        self.windows[layer.min(self.layers - 1)]
    }

    /// The storage option of `layer`.
    pub fn store(&self, layer: usize) -> StoreOption {
        self.stores[layer.min(self.layers - 1)]
    }

    /// The sinks of `layer`.
    pub fn sinks(&self, layer: usize) -> usize {
        self.sinks[layer.min(self.layers - 1)]
    }

    /// Per key of `layer` in a sequence of `seq_len`: the first query that no longer sees it.
    pub fn evictions(&self, seq_len: usize, layer: usize) -> Vec<u32> {
        match self.window(layer) {
            w if w >= seq_len => vec![NEVER; seq_len],
            w => rules::window_evictions(seq_len, self.sinks(layer), w),
        }
    }

    /// `L0: window=1@rank:1; L1: sinks=16,window=4@full` (`all`: every token).
    pub fn setting(&self) -> String {
        (0..self.layers)
            .map(|l| {
                let (w, s) = (self.windows[l], self.sinks[l]);
                let window = if w == usize::MAX { "all".into() } else { format!("window={w}") };
                let sinks = if s > 0 && w != usize::MAX { format!("sinks={s},") } else { String::new() };
                format!("L{l}: {sinks}{window}@{}", self.stores[l])
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One setting of a rule family. `store` is the option kept tokens are stored at.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum Baseline {
    /// Every token and layer at `option`.
    Uniform {
        /// The option.
        option: StoreOption,
    },
    /// The first `sinks` tokens stay; any other key is seen by the `window` queries after it.
    StreamingLlm {
        /// Attention sinks (a prefix kept to the end).
        sinks: usize,
        /// Recent window.
        window: usize,
        /// Storage of kept tokens.
        store: StoreOption,
    },
    /// A window and a storage option per layer.
    LayerWindows(PerLayer),
    /// At most `heavy + recent` keys: the `recent` newest and the heaviest by accumulated attention.
    H2o {
        /// Heavy hitters kept.
        heavy: usize,
        /// Recent tokens kept.
        recent: usize,
        /// Storage of kept tokens.
        store: StoreOption,
        /// The attention the scores come from.
        scores: Scores,
    },
    /// At most `budget` keys; over budget, the key the current query attends to least goes.
    Tova {
        /// Keys kept.
        budget: usize,
        /// Storage of kept tokens.
        store: StoreOption,
        /// The attention the scores come from.
        scores: Scores,
        /// 0: TOVA. Otherwise `tova-ema`: each key scored by the exponential mean of the log of
        /// its weights with this decay per query ([`rules::Held::smoothed`]).
        decay: f32,
        /// A log-weight floor ([`rules::Held::with_floor`]): keys scored below it leave too, so
        /// `budget` is a cap and the memory varies (`None`: a fixed budget).
        floor: Option<f32>,
        /// Score keys by the attention output they move instead of their weight (`tova-out`,
        /// [`crate::own_cache::output_moved`]; own cache only).
        output: bool,
        /// A second tier (`tova-tiers`, own cache only): each key let go drops to this lower rank
        /// of `store` and leaves once this many keys let go after it have joined (`None`: keys
        /// let go leave at once).
        tier2: Option<(usize, StoreOption)>,
        /// A byte class kept longer (`tova-class`, own cache only; `None`: every key scored alike).
        keep: Option<ClassBonus>,
        /// The budget tilted across layers (`tova-layers`): layer l keeps
        /// [`ahr_policy::evict::tilted`]`(budget, tilt, l, L)` keys, L · budget in all; the second
        /// tier's size is the same in every layer (0: every layer keeps `budget`).
        tilt: i32,
        /// One pool per stream (`tova-pooled`, own cache only): the layers share `L · budget` keys,
        /// the lowest-scored across them leaving, layer l's log scores raised by this lean ·
        /// `(L − 1 − 2l) / (L − 1)` nats ([`rules::pooled_victims`]); `None`: a budget per layer.
        pooled: Option<f32>,
    },
    /// At most `budget` keys; over budget, the held key with the largest L2 norm goes (Devoto
    /// et al. 2024: low-norm keys draw attention).
    KNorm {
        /// Keys kept.
        budget: usize,
        /// Storage of kept tokens.
        store: StoreOption,
    },
    /// Keep a token (at `store`) when its normalised next-token entropy is at least `tau`.
    Entropy {
        /// Threshold on entropy / ln V.
        tau: f32,
        /// Storage of kept tokens.
        store: StoreOption,
    },
    /// Per token: at `high` when the exact forward's next-token entropy / ln V at it is at least
    /// `hi`, at `low` when it is at least `lo`, dropped below `lo` (`lo ≤ hi`).
    EntropyLadder {
        /// Threshold of the cheaper rung.
        lo: f32,
        /// Threshold of the richer rung.
        hi: f32,
        /// The richer option.
        high: StoreOption,
        /// The cheaper option.
        low: StoreOption,
    },
    /// Keep a token (at `store`) to the end when its normalised surprisal is at most `tau`
    /// (`predictable`) or at least `tau` (not `predictable`); every other token is seen by the
    /// `window` queries after it.
    Surprisal {
        /// Threshold on −ln p(token | before) / ln V.
        tau: f32,
        /// Which side of `tau` is kept: the predictable tokens (≤) or the surprising ones (≥).
        predictable: bool,
        /// Recent window for the tokens not kept.
        window: usize,
        /// Storage of kept tokens.
        store: StoreOption,
        /// The forward the surprisal comes from.
        scores: Scores,
    },
    /// A window and a storage option per layer; in the last layer a token whose surprisal with
    /// the rule's own cache is at most `tau` is kept to the end.
    LayerSurprisal {
        /// Windows and storage.
        per_layer: PerLayer,
        /// Threshold on −ln p(token | before) / ln V for the last layer.
        tau: f32,
    },
    /// A window and a storage option per layer before the last; the last layer keeps every token
    /// (at its store) until the context shows it superseded ([`rules::superseded_evictions`]).
    Superseded(PerLayer),
    /// A window and a storage option per layer before the last; the last layer keeps every token
    /// (at its store) until a spike review drops it: one step after it topped a query's row with
    /// at least `weight`, if the next token's surprisal is above `tau` (both with the rule's own
    /// cache, [`crate::own_cache::spike_evictions`]).
    Spike {
        /// Windows and storage (the last layer's window is unused: it keeps every token).
        per_layer: PerLayer,
        /// The least weight (mean over heads) of the spike that brings a token up.
        weight: f32,
        /// Threshold on −ln p(next token) / ln V above which the token goes.
        tau: f32,
        /// Whether a token also leaves once superseded ([`rules::superseded_evictions`]; the
        /// `superseded-spike` family).
        superseded: bool,
    },
    /// Keep each (token, layer) at `store` with probability `keep` (seeded draws).
    Random {
        /// Keep probability.
        keep: f64,
        /// Storage of kept tokens.
        store: StoreOption,
    },
}

/// What a rule may read about one sequence: its length, and (for attention and entropy rules)
/// the full-cache forward's attention (`[layer][T·T]`, mean over heads) and normalised entropies.
pub struct SequenceView<'a> {
    /// Sequence length T.
    pub seq_len: usize,
    /// `[layer]` → `[T, T]` attention of the exact full-cache forward, mean over heads (empty
    /// when no full-cache attention rule runs).
    pub attention: &'a [Vec<f32>],
    /// `[layer]` → `[T]` L2 norms of the exact keys (empty when no attention rule runs).
    pub key_norms: &'a [Vec<f32>],
    /// `[T]` next-token entropy / ln V of the exact forward.
    pub entropy: &'a [f32],
    /// `[T]` surprisal of each token, −ln p(token t | tokens < t) / ln V, of the exact forward
    /// (1 at t = 0).
    pub surprisal: &'a [f32],
    /// `[T, layer]` uniform draws in [0, 1) for random rules (fixed per sequence).
    pub draws: &'a [f32],
    /// `[T]` the sequence's tokens (for rules that read the context: `superseded`).
    pub inputs: &'a [u32],
}

impl SequenceView<'_> {
    /// A sequence of `seq_len` tokens with nothing else to read (for rules whose memory does not
    /// depend on the data, and for tests that fill in one field).
    pub fn blank(seq_len: usize) -> Self {
        SequenceView { seq_len, attention: &[], key_norms: &[], entropy: &[], surprisal: &[], draws: &[], inputs: &[] }
    }
}

impl Baseline {
    /// Its family.
    pub fn family(&self) -> Family {
        match self {
            Baseline::Uniform { .. } => Family::Uniform,
            Baseline::StreamingLlm { .. } => Family::StreamingLlm,
            Baseline::LayerWindows(_) => Family::LayerWindows,
            Baseline::H2o { scores: Scores::Cache, .. } => Family::H2o,
            Baseline::Tova { scores: Scores::Cache, keep: Some(_), .. } => Family::TovaClass,
            Baseline::Tova { scores: Scores::Cache, pooled: Some(_), .. } => Family::TovaPooled,
            Baseline::Tova { scores: Scores::Cache, tilt, .. } if *tilt != 0 => Family::TovaLayers,
            Baseline::Tova { scores: Scores::Cache, tier2: Some(_), .. } => Family::TovaTiers,
            Baseline::Tova { scores: Scores::Cache, output: true, .. } => Family::TovaOut,
            Baseline::Tova { scores: Scores::Cache, decay, .. } if *decay > 0.0 => Family::TovaEma,
            Baseline::Tova { scores: Scores::Cache, .. } => Family::Tova,
            Baseline::H2o { scores: Scores::FullCache, .. } => Family::H2oFullCache,
            Baseline::Tova { scores: Scores::FullCache, .. } => Family::TovaFullCache,
            Baseline::KNorm { .. } => Family::KNorm,
            Baseline::Entropy { .. } => Family::Entropy,
            Baseline::EntropyLadder { .. } => Family::EntropyLadder,
            Baseline::Surprisal { scores: Scores::Cache, .. } => Family::Surprisal,
            Baseline::Surprisal { scores: Scores::FullCache, .. } => Family::SurprisalFullCache,
            Baseline::LayerSurprisal { .. } => Family::LayerSurprisal,
            Baseline::Superseded(_) => Family::Superseded,
            Baseline::Spike { superseded: false, .. } => Family::Spike,
            Baseline::Spike { superseded: true, .. } => Family::SupersededSpike,
            Baseline::Random { .. } => Family::Random,
        }
    }

    /// Whether the rule scores keys by the attention of its own cache (the harness runs it token by
    /// token with that cache; [`Baseline::evictions`] would score it from the full cache).
    pub fn reads_its_cache(&self) -> bool {
        matches!(
            self,
            Baseline::H2o { scores: Scores::Cache, .. }
                | Baseline::Tova { scores: Scores::Cache, .. }
                | Baseline::Surprisal { scores: Scores::Cache, .. }
                | Baseline::LayerSurprisal { .. }
                | Baseline::Spike { .. }
        )
    }

    /// The option kept tokens of `layer` are stored at.
    pub fn store_at(&self, layer: usize) -> StoreOption {
        match *self {
            Baseline::LayerWindows(p)
            | Baseline::Superseded(p)
            | Baseline::LayerSurprisal { per_layer: p, .. }
            | Baseline::Spike { per_layer: p, .. } => p.store(layer),
            _ => self.store(),
        }
    }

    /// The option token `t` of `layer` is stored at (per token for the entropy ladder).
    pub fn store_of(&self, view: &SequenceView, t: usize, layer: usize) -> StoreOption {
        match *self {
            Baseline::EntropyLadder { hi, high, low, .. } => {
                if view.entropy[t] >= hi {
                    high
                } else {
                    low
                }
            }
            _ => self.store_at(layer),
        }
    }

    /// The option kept tokens are stored at (layer 0's for per-layer rules; the richer rung of the
    /// entropy ladder).
    pub fn store(&self) -> StoreOption {
        match *self {
            Baseline::Uniform { option } => option,
            Baseline::EntropyLadder { high, .. } => high,
            Baseline::LayerWindows(p)
            | Baseline::Superseded(p)
            | Baseline::LayerSurprisal { per_layer: p, .. }
            | Baseline::Spike { per_layer: p, .. } => p.stores[0],
            Baseline::StreamingLlm { store, .. }
            | Baseline::H2o { store, .. }
            | Baseline::Tova { store, .. }
            | Baseline::KNorm { store, .. }
            | Baseline::Entropy { store, .. }
            | Baseline::Surprisal { store, .. }
            | Baseline::Random { store, .. } => store,
        }
    }

    /// TOVA (`decay = 0`) or `tova-ema` at a fixed `budget`, with its own cache.
    pub fn tova_ema(budget: usize, store: StoreOption, decay: f32) -> Self {
        Baseline::Tova {
            budget,
            store,
            scores: Scores::Cache,
            decay,
            floor: None,
            output: false,
            tier2: None,
            keep: None,
            tilt: 0,
            pooled: None,
        }
    }

    /// `tova-out` at a fixed `budget`: keys scored by the attention output they move, smoothed
    /// with `decay`, with its own cache.
    pub fn tova_out(budget: usize, store: StoreOption, decay: f32) -> Self {
        let mut rule = Baseline::tova_ema(budget, store, decay);
        if let Baseline::Tova { output, .. } = &mut rule {
            *output = true;
        }
        rule
    }

    /// `tova-tiers`: `tova-out` at `budget` keys stored at `store` (a factor rank), each key it lets
    /// go kept at the lower rank `to` until `size` keys let go after it have followed.
    pub fn tova_tiers(budget: usize, store: StoreOption, decay: f32, size: usize, to: StoreOption) -> Self {
        let mut rule = Baseline::tova_out(budget, store, decay);
        if let Baseline::Tova { tier2, .. } = &mut rule {
            *tier2 = Some((size, to));
        }
        rule
    }

    /// [`Baseline::tova_tiers`] with `tova-ema`'s score (the smoothed weight) in the first tier —
    /// where the weights, not the output a key moves, are the better score.
    pub fn tova_ema_tiers(budget: usize, store: StoreOption, decay: f32, size: usize, to: StoreOption) -> Self {
        let mut rule = Baseline::tova_tiers(budget, store, decay, size, to);
        if let Baseline::Tova { output, .. } = &mut rule {
            *output = false;
        }
        rule
    }

    /// The rule a learned evicter with these settings starts from ([`ahr_policy::evict::Eviction`]):
    /// `tova-ema` or `tova-out` at its budget and decay, with its second tier, its byte class kept
    /// longer and its tilt — the judge's `tova-tiers`, `tova-class` or `tova-layers` setting that
    /// an untrained evicter decides as.
    pub fn of_eviction(e: &ahr_policy::evict::Eviction) -> Self {
        let mut rule = match e.score {
            ahr_policy::evict::EvictScore::Weight => Baseline::tova_ema(e.budget, e.store, e.decay),
            ahr_policy::evict::EvictScore::Output => Baseline::tova_out(e.budget, e.store, e.decay),
        };
        if let (Baseline::Tova { tier2, .. }, Some(t)) = (&mut rule, e.tier2) {
            *tier2 = Some((t.size, t.store));
        }
        if let Some(k) = e.keep {
            rule = rule.keeping(k);
        }
        rule.tilted(e.tilt)
    }

    /// This TOVA rule scoring keys from `from` (its own cache or the full one); other rules as
    /// they are.
    pub fn scored_from(mut self, from: Scores) -> Self {
        if let Baseline::Tova { scores, .. } = &mut self {
            *scores = from;
        }
        self
    }

    /// This TOVA rule keeping `keep`'s class longer (`tova-class`); other rules as they are.
    pub fn keeping(mut self, bonus: ClassBonus) -> Self {
        if let Baseline::Tova { keep, .. } = &mut self {
            *keep = Some(bonus);
        }
        self
    }

    /// This TOVA rule with its budget tilted across layers by `by` (`tova-layers`); other rules as
    /// they are.
    pub fn tilted(mut self, by: i32) -> Self {
        if let Baseline::Tova { tilt, .. } = &mut self {
            *tilt = by;
        }
        self
    }

    /// This TOVA rule (or K-norm) keeping `keys` per layer before any tilt; other rules as they are.
    pub fn at_budget(mut self, keys: usize) -> Self {
        if let Baseline::Tova { budget, .. } | Baseline::KNorm { budget, .. } = &mut self {
            *budget = keys;
        }
        self
    }

    /// This TOVA rule with one pool of keys per stream leaning `lean` nats towards the first
    /// layers (`tova-pooled`); other rules as they are.
    pub fn pooling(mut self, lean: f32) -> Self {
        if let Baseline::Tova { pooled, .. } = &mut self {
            *pooled = Some(lean);
        }
        self
    }

    /// This TOVA rule with a budget per layer instead of a pool (`tova-pooled` undone); other
    /// rules as they are.
    fn unpooled(mut self) -> Self {
        if let Baseline::Tova { pooled, .. } = &mut self {
            *pooled = None;
        }
        self
    }

    /// The keys a TOVA rule keeps in layer `layer` of `layers` (its tilted budget; a pooled rule's
    /// layers share theirs); `None` for other rules.
    pub fn budget_at(&self, layer: usize, layers: usize) -> Option<usize> {
        match *self {
            Baseline::Tova { budget, tilt, .. } => Some(ahr_policy::evict::tilted(budget, tilt, layer, layers)),
            _ => None,
        }
    }

    /// The byte class a TOVA rule keeps longer (`tova-class`).
    pub fn keep(&self) -> Option<ClassBonus> {
        match *self {
            Baseline::Tova { keep, .. } => keep,
            _ => None,
        }
    }

    /// The second tier of a two-tier rule (`tova-tiers`): its size and rank.
    pub fn tier2(&self) -> Option<(usize, StoreOption)> {
        match *self {
            Baseline::Tova { tier2, .. } => tier2,
            _ => None,
        }
    }

    /// The point's name: the family, with the storage of kept tokens (`streaming-llm@rank:1`).
    pub fn name(&self) -> String {
        match self {
            Baseline::Uniform { .. } => "uniform".into(),
            Baseline::LayerWindows(_)
            | Baseline::Superseded(_)
            | Baseline::LayerSurprisal { .. }
            | Baseline::Spike { .. } => self.family().to_string(),
            Baseline::EntropyLadder { high, low, .. } => format!("{}@{high}+{low}", self.family()),
            b => format!("{}@{}", b.family(), b.store()),
        }
    }

    /// The setting, as reports print it.
    pub fn setting(&self) -> String {
        if let Baseline::Tova { keep: Some(k), .. } = *self {
            let mut plain = *self;
            if let Baseline::Tova { keep, .. } = &mut plain {
                *keep = None;
            }
            return format!("{},{}+{}", plain.setting(), k.class.name(), k.nats);
        }
        if let Baseline::Tova { tilt, .. } = *self
            && tilt != 0
        {
            return format!("{},tilt={tilt:+}", self.tilted(0).setting());
        }
        if let Baseline::Tova { pooled: Some(lean), .. } = *self {
            let lean = if lean == 0.0 { String::new() } else { format!("{lean:+}") };
            return format!("{},pooled{lean}", self.unpooled().setting());
        }
        match *self {
            Baseline::Uniform { option } => option.to_string(),
            Baseline::StreamingLlm { sinks, window, .. } => format!("sinks={sinks},window={window}"),
            Baseline::LayerWindows(p) => p.setting(),
            Baseline::Superseded(p) => format!("{}, until superseded", p.setting()),
            Baseline::Spike { per_layer, weight, tau, superseded } => format!(
                "{}; L{}: every token until it tops a row (weight at least {weight}) and the next token surprises (above {tau}){}",
                per_layer.setting(),
                per_layer.layers - 1,
                if superseded { " or it is superseded" } else { "" }
            ),
            Baseline::LayerSurprisal { per_layer, tau } => {
                format!("{}; L{}: predicted (at most {tau:.4}) to the end", per_layer.setting(), per_layer.layers - 1)
            }
            Baseline::H2o { heavy, recent, .. } => format!("heavy={heavy},recent={recent}"),
            Baseline::Tova { budget, decay, tier2: Some((size, to)), output, .. } => {
                let score = if output { "" } else { ",score=weight" };
                format!("budget={budget},decay={decay}{score},then {size} at {to}")
            }
            Baseline::Tova { budget, decay, floor: Some(f), .. } => format!("budget={budget},decay={decay},floor={f}"),
            Baseline::Tova { budget, decay, .. } if decay > 0.0 => format!("budget={budget},decay={decay}"),
            Baseline::Tova { budget, .. } | Baseline::KNorm { budget, .. } => format!("budget={budget}"),
            Baseline::Entropy { tau, .. } => format!("tau={tau:.4}"),
            Baseline::EntropyLadder { lo, hi, .. } => format!("lo={lo:.4},hi={hi:.4}"),
            Baseline::Surprisal { tau, predictable, window, .. } => {
                format!("{}{tau:.4},window={window}", if predictable { "at most " } else { "at least " })
            }
            Baseline::Random { keep, .. } => format!("keep={keep:.4}"),
        }
    }

    /// Per key of one layer of one sequence: the first query that no longer sees it.
    pub fn evictions(&self, view: &SequenceView, layer: usize) -> Vec<u32> {
        let t_n = view.seq_len;
        match *self {
            Baseline::Uniform { .. } => vec![NEVER; t_n],
            Baseline::StreamingLlm { sinks, window, .. } => rules::window_evictions(t_n, sinks, window),
            Baseline::LayerWindows(p) => p.evictions(t_n, layer),
            Baseline::Superseded(p) if layer + 1 < p.layers => p.evictions(t_n, layer),
            Baseline::Superseded(_) => rules::superseded_evictions(view.inputs),
            // The last layer's spikes exist only in the rule's own cache (`reads_its_cache`): the
            // harness takes them from `own_cache::spike_evictions`, never from here.
            Baseline::Spike { per_layer, .. } if layer + 1 < per_layer.layers => per_layer.evictions(t_n, layer),
            Baseline::Spike { .. } => vec![NEVER; t_n],
            Baseline::H2o { heavy, recent, .. } => {
                rules::heavy_hitter_evictions(&view.attention[layer], t_n, heavy, recent)
            }
            Baseline::Tova { decay, floor, .. } => {
                let budget = self.budget_at(layer, view.attention.len()).expect("a TOVA rule");
                rules::map_evictions(rules::Held::tova(budget, decay, floor), &view.attention[layer], t_n)
            }
            Baseline::KNorm { budget, .. } => rules::key_norm_evictions(&view.key_norms[layer], budget),
            Baseline::Entropy { tau, .. } => rules::threshold_evictions(view.entropy, tau),
            Baseline::EntropyLadder { lo, .. } => rules::threshold_evictions(view.entropy, lo),
            Baseline::LayerSurprisal { per_layer, tau } => {
                let recent = per_layer.evictions(t_n, layer);
                if layer + 1 < per_layer.layers {
                    recent
                } else {
                    view.surprisal.iter().zip(recent).map(|(&s, e)| if s <= tau { NEVER } else { e }).collect()
                }
            }
            Baseline::Surprisal { tau, predictable, window, .. } => {
                let recent = rules::window_evictions(t_n, 0, window);
                let kept = |s: f32| if predictable { s <= tau } else { s >= tau };
                view.surprisal.iter().zip(recent).map(|(&s, e)| if kept(s) { NEVER } else { e }).collect()
            }
            Baseline::Random { keep, .. } => {
                let l_n = view.draws.len() / t_n.max(1);
                let scores: Vec<f32> = (0..t_n).map(|t| 1.0 - view.draws[t * l_n + layer]).collect();
                rules::threshold_evictions(&scores, (1.0 - keep) as f32)
            }
        }
    }

    /// Time-averaged KV bytes per token of the setting when its memory does not depend on the
    /// data (every family but entropy; random in expectation): the number of keys an eviction
    /// rule holds at each step is fixed by its budget, whatever the attention says.
    pub fn memory(&self, cfg: &ModelConfig, seq_len: usize) -> Option<f64> {
        let t_n = seq_len;
        let store = self.store();
        // Pooled: one tier holds the same keys in all as a budget per layer would; how a second
        // tier fills depends on which layers the pool drains (measured, not known in advance).
        if let Baseline::Tova { pooled: Some(_), tier2, .. } = *self {
            return if tier2.is_some() { None } else { self.unpooled().memory(cfg, t_n) };
        }
        // A tilted budget: each layer as the untilted rule at that layer's budget would hold it.
        if let Baseline::Tova { tilt, .. } = *self
            && tilt != 0
        {
            let n = cfg.n_layers;
            let per_layer = |l: usize| {
                let layer = self.tilted(0).at_budget(self.budget_at(l, n).expect("a TOVA rule"));
                layer.memory(cfg, t_n).map(|m| m / n as f64)
            };
            return (0..n).map(per_layer).sum();
        }
        if let Baseline::LayerWindows(_) = self {
            let view = SequenceView::blank(t_n);
            let mut one = cfg.clone();
            one.n_layers = 1;
            return Some(
                (0..cfg.n_layers)
                    .map(|l| {
                        let (ev, s) = (self.evictions(&view, l), self.store_at(l));
                        cost::sequence_cost(&one, t_n, |t, _| (s, (ev[t] != NEVER).then_some(ev[t] as usize)))
                            .kv_bytes_per_token
                    })
                    .sum(),
            );
        }
        // One layer whose key t leaves at `ev[t]` and, with a second tier, drops to its rank at
        // `demoted[t]`.
        let layer_bytes = |ev: &[u32], demoted: Option<(&[u32], StoreOption)>| {
            let mut one = cfg.clone();
            one.n_layers = 1;
            let at = |e: u32| (e != NEVER).then_some(e as usize);
            let demoted = |t: usize| demoted.and_then(|(d, to)| at(d[t]).map(|d| (d, to)));
            cost::sequence_cost_demoted(&one, t_n, |t, _| (store, at(ev[t]), demoted(t))).kv_bytes_per_token
        };
        let bytes = match *self {
            Baseline::Entropy { .. }
            | Baseline::EntropyLadder { .. }
            | Baseline::Surprisal { .. }
            | Baseline::LayerSurprisal { .. }
            | Baseline::Spike { .. }
            | Baseline::Superseded(_) => return None,
            Baseline::Random { keep, .. } => keep * cost::bytes_per_token(cfg, store) as f64,
            Baseline::LayerWindows(_) => unreachable!("returned above"),
            Baseline::Uniform { .. } | Baseline::StreamingLlm { .. } => {
                layer_bytes(&self.evictions(&SequenceView::blank(t_n), 0), None)
            }
            Baseline::KNorm { .. } => {
                // Any norms give the same counts.
                let norms = [vec![0.0; t_n]];
                let view = SequenceView { key_norms: &norms, ..SequenceView::blank(t_n) };
                layer_bytes(&self.evictions(&view, 0), None)
            }
            Baseline::H2o { .. } | Baseline::Tova { .. } => {
                // Any attention gives the same counts; a causal uniform one will do.
                let mut attn = vec![0f32; t_n * t_n];
                for q in 0..t_n {
                    for k in 0..=q {
                        attn[q * t_n + k] = 1.0 / (q + 1) as f32;
                    }
                }
                let maps = [attn];
                let view = SequenceView { attention: &maps, ..SequenceView::blank(t_n) };
                let first = self.evictions(&view, 0);
                match self.tier2() {
                    None => layer_bytes(&first, None),
                    Some((size, to)) => layer_bytes(&rules::second_tier(&first, size, |_| true), Some((&first, to))),
                }
            }
        };
        Some(bytes * cfg.n_layers as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_families_round_trip() {
        for f in Family::ALL {
            assert_eq!(f.name().parse::<Family>(), Ok(f));
        }
        assert!("window".parse::<Family>().unwrap_err().contains("streaming-llm"));
        let b = Baseline::StreamingLlm { sinks: 16, window: 0, store: StoreOption::Rank(1) };
        assert_eq!(b.name(), "streaming-llm@rank:1");
        assert_eq!(b.setting(), "sinks=16,window=0");
    }

    /// Memory of a two-tier setting by hand: T = 8, the mqar preset (rank 2: 304 B per layer,
    /// rank 1: 152 B), budget 2 at rank 2 with 2 more at rank 1. The first tier holds 1, 2, 3, 3, …
    /// keys at queries 0–7 (the budget and the newest: 21 key-steps), one key leaving it after each
    /// query from 2 on, so the second holds 0, 0, 0, 1, 2, 2, 2, 2 (9); over (T+1)/2 · T = 36, two
    /// layers. With no second tier, `tova-out`'s memory.
    #[test]
    fn memory_of_two_tiers_by_hand() {
        let cfg = ModelConfig::mqar();
        let (r1, r2) = (StoreOption::Rank(1), StoreOption::Rank(2));
        let tiers = Baseline::tova_tiers(2, r2, 0.5, 2, r1).memory(&cfg, 8).unwrap();
        assert!((tiers - 2.0 * (21.0 * 304.0 + 9.0 * 152.0) / 36.0).abs() < 1e-9, "{tiers}");
        let none = Baseline::tova_tiers(2, r2, 0.5, 0, r1).memory(&cfg, 8).unwrap();
        let tova = Baseline::tova_out(2, r2, 0.5).memory(&cfg, 8).unwrap();
        assert!((none - tova).abs() < 1e-9 && (tova - 2.0 * 21.0 * 304.0 / 36.0).abs() < 1e-9, "{none} {tova}");
        let b = Baseline::tova_tiers(2, r2, 0.5, 2, r1);
        assert_eq!(
            (b.family(), b.name(), b.setting()),
            (Family::TovaTiers, "tova-tiers@rank:2".into(), "budget=2,decay=0.5,then 2 at rank:1".into())
        );
        let w = Baseline::tova_ema_tiers(2, r2, 0.5, 2, r1);
        assert_eq!(
            (w.family(), w.name(), w.setting()),
            (Family::TovaTiers, "tova-tiers@rank:2".into(), "budget=2,decay=0.5,score=weight,then 2 at rank:1".into())
        );
        assert_eq!(w.memory(&cfg, 8), b.memory(&cfg, 8), "the score does not change what the tiers hold");
        assert!(Family::TovaTiers.opt_in());
    }

    /// Memory of data-independent settings, by hand: T = 8, 1 sink + window 1 at rank:1 (152 B
    /// per layer on the mqar preset). Held keys per step: 1, 2, 3, 3, 3, 3, 3, 3 tokens — the sink,
    /// the previous token and the current one — 21 token-steps over (T+1)/2 · T = 36.
    #[test]
    fn memory_of_a_window_and_of_its_budget_twins() {
        let cfg = ModelConfig::mqar();
        let store = StoreOption::Rank(1);
        let w = Baseline::StreamingLlm { sinks: 1, window: 1, store };
        let expect = 152.0 * 21.0 / 36.0 * 2.0;
        assert!((w.memory(&cfg, 8).unwrap() - expect).abs() < 1e-9, "{:?}", w.memory(&cfg, 8));
        // TOVA with budget 2 holds 1, 2, then 3 keys at every later step: the same counts.
        let tova = Baseline::tova_ema(2, store, 0.0);
        assert!((tova.memory(&cfg, 8).unwrap() - expect).abs() < 1e-9);
        let h2o = Baseline::H2o { heavy: 1, recent: 1, store, scores: Scores::FullCache };
        assert!((h2o.memory(&cfg, 8).unwrap() - expect).abs() < 1e-9);
        let knorm = Baseline::KNorm { budget: 2, store };
        assert!((knorm.memory(&cfg, 8).unwrap() - expect).abs() < 1e-9);
        // Per layer: layer 0 a window of 1 at rank:1 without sinks (held 1, 2, 2, … = 15 token-steps
        // of 36), layer 1 every token at full (384 B per token).
        let mut stores = [store; MAX_RULE_LAYERS];
        stores[1] = StoreOption::Full;
        let mut windows = [1; MAX_RULE_LAYERS];
        windows[1] = usize::MAX;
        let mut layered = PerLayer { layers: 2, windows, sinks: [0; MAX_RULE_LAYERS], stores };
        let rule = Baseline::LayerWindows(layered);
        assert!((rule.memory(&cfg, 8).unwrap() - (152.0 * 15.0 / 36.0 + 384.0)).abs() < 1e-9);
        assert_eq!(rule.name(), "layer-windows");
        assert_eq!(rule.setting(), "L0: window=1@rank:1; L1: all@full");
        // Layer 1 now keeps 2 sinks and a window of 1: tokens 0 and 1 to the end (held 7 and 6
        // steps after their own), every later token for one query (held 2 steps, the last 1):
        // 8 + 7 + 5 · 2 + 1 = 26 token-steps of 36 at full.
        (layered.sinks[1], layered.windows[1]) = (2, 1);
        assert_eq!(layered.evictions(8, 1), vec![NEVER, NEVER, 4, 5, 6, 7, 8, 9]);
        assert_eq!(layered.evictions(8, 0), vec![2, 3, 4, 5, 6, 7, 8, 9], "layer 0 has no sinks");
        let rule = Baseline::LayerWindows(layered);
        assert!((rule.memory(&cfg, 8).unwrap() - (152.0 * 15.0 / 36.0 + 384.0 * 26.0 / 36.0)).abs() < 1e-9);
        assert_eq!(rule.setting(), "L0: window=1@rank:1; L1: sinks=2,window=1@full");
        let uniform = Baseline::Uniform { option: StoreOption::Full };
        assert!((uniform.memory(&cfg, 8).unwrap() - 768.0).abs() < 1e-9);
        let random = Baseline::Random { keep: 0.25, store: StoreOption::Full };
        assert!((random.memory(&cfg, 8).unwrap() - 192.0).abs() < 1e-9);
        assert_eq!(Baseline::Entropy { tau: 0.5, store }.memory(&cfg, 8), None);
    }

    /// The surprisals of the hand-computed rule tests.
    const SURPRISALS: [f32; 5] = [1.0, 0.1, 0.9, 0.05, 0.5];

    /// A sequence with these surprisals and nothing else.
    fn surprisal_view(surprisal: &[f32]) -> SequenceView<'_> {
        SequenceView { surprisal, ..SequenceView::blank(surprisal.len()) }
    }

    /// The surprisal rule, by hand: surprisals 1, 0.1, 0.9, 0.05, 0.5 and τ = 0.2 keep tokens 1
    /// and 3 to the end on the predictable side (the others for one query: evicted at k + 2),
    /// tokens 0 and 2 on the other side at τ = 0.9.
    #[test]
    fn the_surprisal_rule_keeps_one_side_of_its_threshold() {
        let view = surprisal_view(&SURPRISALS);
        let store = StoreOption::Rank(1);
        let low = Baseline::Surprisal { tau: 0.2, predictable: true, window: 1, store, scores: Scores::FullCache };
        assert_eq!(low.evictions(&view, 0), vec![2, NEVER, 4, NEVER, 6]);
        let high = Baseline::Surprisal { tau: 0.9, predictable: false, window: 0, store, scores: Scores::FullCache };
        assert_eq!(high.evictions(&view, 1), vec![NEVER, 2, NEVER, 4, 5]);
        assert_eq!((low.name().as_str(), low.family()), ("surprisal-full-cache@rank:1", Family::SurprisalFullCache));
        assert!(!low.reads_its_cache());
        let own = Baseline::Surprisal { tau: 0.2, predictable: true, window: 1, store, scores: Scores::Cache };
        assert!(own.reads_its_cache() && own.family() == Family::Surprisal);
        assert_eq!(low.setting(), "at most 0.2000,window=1");
        assert_eq!(low.memory(&ModelConfig::mqar(), 5), None, "its memory depends on the data");
    }

    /// Per-layer windows with content, by hand: two layers, layer 0 a window of 1, layer 1 a
    /// window of 2 keeping tokens of surprisal ≤ 0.2 (tokens 1 and 3) to the end.
    #[test]
    fn layer_surprisal_keeps_content_in_the_last_layer_only() {
        let view = surprisal_view(&SURPRISALS);
        let per_layer = PerLayer::split(2, (1, StoreOption::Full), (2, StoreOption::Rank(1)));
        let rule = Baseline::LayerSurprisal { per_layer, tau: 0.2 };
        assert_eq!(rule.evictions(&view, 0), vec![2, 3, 4, 5, 6]);
        assert_eq!(rule.evictions(&view, 1), vec![3, NEVER, 5, NEVER, 7]);
        assert_eq!((rule.store_at(0), rule.store_at(1)), (StoreOption::Full, StoreOption::Rank(1)));
        assert!(rule.reads_its_cache() && rule.memory(&ModelConfig::mqar(), 5).is_none());
        assert_eq!(rule.setting(), "L0: window=1@full; L1: window=2@rank:1; L1: predicted (at most 0.2000) to the end");
    }

    /// The entropy ladder, by hand: entropies 0.9, 0.5, 0.1, 0.7 with lo = 0.3, hi = 0.6 put
    /// tokens 0 and 3 at full, token 1 at rank 1, and drop token 2 (seen by its own query only).
    #[test]
    fn the_entropy_ladder_stores_by_rung() {
        let (full, rank1) = (StoreOption::Full, StoreOption::Rank(1));
        let ladder = Baseline::EntropyLadder { lo: 0.3, hi: 0.6, high: full, low: rank1 };
        let entropy = [0.9, 0.5, 0.1, 0.7];
        let view = SequenceView { entropy: &entropy, ..SequenceView::blank(4) };
        let stores: Vec<StoreOption> = (0..4).map(|t| ladder.store_of(&view, t, 1)).collect();
        assert_eq!(stores, [full, rank1, rank1, full]);
        assert_eq!(ladder.evictions(&view, 0), [NEVER, NEVER, 3, NEVER]);
        assert_eq!((ladder.name().as_str(), ladder.family()), ("entropy-ladder@full+rank:1", Family::EntropyLadder));
        assert_eq!(ladder.setting(), "lo=0.3000,hi=0.6000");
        assert_eq!(ladder.memory(&ModelConfig::mqar(), 4), None, "measured on the data");
    }
}
