//! Second decisions with hindsight (DESIGN.md §10): every token kept at a plain option comes up
//! for review when it is `age` queries old, and a policy decides again — keep it as it is, demote
//! it to a nested lower rank, or drop it — seeing what its write-time decision could not: the
//! attention it has received since.
//!
//! A review decision is expressed as an option of the menu: keeping a token written as `F`
//! leaves it `F`; demoting or dropping it makes it the schedule `F/age/then` (DESIGN.md §10's
//! schedules), which [`review_options`] adds to the menu. So the parallel forward, the cost model
//! and the judge see a reviewed token exactly as a token written with that schedule, and the
//! cache ([`crate::KvCache::review`]) moves it in place. [`ReviewBook`] keeps, per stream and
//! layer, the last `age` tokens' stored keys and the attention each has received (from the
//! decode step's per-head log-sum-exp, [`crate::StepOutput::lse`]); the rank environment and
//! `ahr-infer` both use it, so a deployed policy reviews exactly as it was trained.
//!
//! Reviews at a fixed age cannot catch the moment a token's worth changes — when its key returns
//! and what follows shows it superseded. With [`ReviewAt::Spike`] a token comes up instead one
//! step after it topped a query's attention row in its layer (the most-attended kept token, mean
//! over heads): at most one token per stream and layer per step, so the action stays one review
//! head per layer. The review sees how much that query gave it, what the query's own next token
//! turned out to be (the step's `surprisal` feature), its age and its history; it may keep the
//! token (it stays reviewable) or drop it from the next query on ([`KvCache::evict`]), which the
//! parallel forward sees as an eviction ([`crate::Choices::with_evictions`]).
//!
//! `"spike-tokens"` reviews the same tokens at the same moments and also shows the review two
//! token-equality facts about the row that brought the token up ([`SPIKE_TOKEN_FEATURES`]):
//! whether that row was a return of the token's left neighbour — the moment an induction head
//! reads a token — and whether the token after the row repeated it. Attention alone cannot tell
//! a return of the left neighbour from a row whose prediction the model was never trained on
//! (MQAR filler) that happens to land on the token; these two bits can, where the return is
//! written as the same token.

use std::collections::VecDeque;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::cache::{KvCache, PendingToken};
use crate::config::{Form, ModelConfig, StoreOption};
use crate::cost;
use crate::error::{Error, Result};
use crate::host::to_host;
use crate::model::StepOutput;

/// Per-layer features of the token under review, in order.
pub const REVIEW_FEATURES: [&str; 5] = [
    "review_present",     // 1 if a token kept at a plain option is under review in this layer
    "review_bytes",       // its bytes / the exact option's bytes
    "attn_received",      // attention it received from the `age` queries since it was written (sum, mean over heads)
    "attn_received_max",  // the most any one of those queries gave it
    "attn_received_last", // what the latest query gave it
];

/// Per-layer features of the token under review at one age of a chain (`again = true`), in order:
/// [`REVIEW_FEATURES`], then the attention it drew since its previous review.
pub const CHAIN_FEATURES: [&str; 6] = [
    "review_present",
    "review_bytes",
    "attn_received",
    "attn_received_max",
    "attn_received_last",
    "attn_since_review", // attention received since its previous review (since written at the first age)
];

/// Per-layer features of the token under a spike review ([`ReviewAt::Spike`]), in order.
pub const SPIKE_FEATURES: [&str; 7] = [
    "review_present",     // 1 if a kept token topped the previous query's row in this layer and can change
    "review_bytes",       // its bytes / the exact option's bytes
    "spike_weight",       // the weight that query gave it (mean over heads)
    "attn_received",      // attention it received from every query since it was written (sum, mean over heads)
    "attn_received_last", // what the current query gave it
    "review_log_age",     // ln(1 + queries since it was written)
    "review_spikes",      // ln(1 + rows it has topped so far, this one included)
];

/// [`SPIKE_FEATURES`], then the token-equality facts of `"spike-tokens"` reviews.
pub const SPIKE_TOKEN_FEATURES: [&str; 9] = [
    "review_present",
    "review_bytes",
    "spike_weight",
    "attn_received",
    "attn_received_last",
    "review_log_age",
    "review_spikes",
    "review_prefix_match", // 1 if the row that topped it holds the token written just before it
    "review_next_match",   // 1 if the token after that row is its own token again
];

/// The most later ages a review may keep its token to ([`KeepAges`]).
pub const MAX_KEEP_AGES: usize = 6;

/// The later ages an age review may keep its token to, then drop it (`keep = [32, 64]`): "keep it
/// for a while longer" as a second decision, so a byte kept exactly while recent is neither
/// dropped at its review nor kept to the end of the sequence. Increasing, each above the review
/// age, at most [`MAX_KEEP_AGES`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepAges([u32; MAX_KEEP_AGES]);

impl KeepAges {
    /// No later ages: a review keeps (to the end), demotes or drops.
    pub const NONE: KeepAges = KeepAges([0; MAX_KEEP_AGES]);

    /// The ages `ages` after a review at `age`, checked.
    pub fn new(age: usize, ages: &[usize]) -> std::result::Result<Self, String> {
        if ages.len() > MAX_KEEP_AGES {
            return Err(format!("at most {MAX_KEEP_AGES} keep ages, found {}", ages.len()));
        }
        let mut prev = age;
        let mut out = [0u32; MAX_KEEP_AGES];
        for (slot, &a) in out.iter_mut().zip(ages) {
            if a <= prev {
                return Err(format!(
                    "keep ages must increase and lie above the review age {age}, found {a} after {prev}"
                ));
            }
            *slot = u32::try_from(a).map_err(|_| format!("keep age {a} is too large"))?;
            prev = a;
        }
        Ok(Self(out))
    }

    /// The ages, in increasing order.
    pub fn ages(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().take_while(|&&a| a > 0).map(|&a| a as usize)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

/// When a kept token comes up for its second decision (`[env] review`): `16` (an age),
/// `{ age = 16, keep = [32, 64] }` (an age whose review may also keep the token to a later age),
/// `{ age = 16, keep = [32, 64], again = true }` (a chain: a token kept to a later age comes up
/// again there), `"spike"` or `"spike-tokens"`, in configs and manifests alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewAt {
    /// `age` queries after it was written (DESIGN.md §10); the review may also keep the token
    /// exactly as it is to each of `keep`'s later ages, and drop it there. With `again`, a chain:
    /// the review at `age` may keep the token to the first later age only, and a token kept to a
    /// later age comes up for review again there — to be dropped, kept to the next age, or kept
    /// to the end — so a kept token is re-decided at every age of `[age, keep…]` with what it drew
    /// since.
    Age {
        /// The review age.
        age: usize,
        /// Later ages the review may keep the token to.
        keep: KeepAges,
        /// Whether a token kept to a later age is reviewed again there (needs `keep`).
        again: bool,
    },
    /// One step after it topped a query's attention row in its layer; with `tokens`, the review
    /// also sees [`SPIKE_TOKEN_FEATURES`]' token-equality facts.
    Spike {
        /// Whether the review also sees the token-equality facts.
        tokens: bool,
    },
}

impl Serialize for ReviewAt {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ReviewAt::Age { age, keep, .. } if keep.is_empty() => s.serialize_u64(*age as u64),
            ReviewAt::Age { age, keep, again } => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(2 + usize::from(*again)))?;
                m.serialize_entry("age", age)?;
                m.serialize_entry("keep", &keep.ages().collect::<Vec<_>>())?;
                if *again {
                    m.serialize_entry("again", again)?;
                }
                m.end()
            }
            ReviewAt::Spike { tokens: false } => s.serialize_str("spike"),
            ReviewAt::Spike { tokens: true } => s.serialize_str("spike-tokens"),
        }
    }
}

impl<'de> Deserialize<'de> for ReviewAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'v> serde::de::Visitor<'v> for Visitor {
            type Value = ReviewAt;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a review age in queries (e.g. 16), { age = 16, keep = [32, 64] } (with `again = true`: \
                     reviewed again at each), \"spike\" or \"spike-tokens\"",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<ReviewAt, E> {
                Ok(ReviewAt::at_age(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<ReviewAt, E> {
                usize::try_from(v)
                    .map(ReviewAt::at_age)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(self, mut map: A) -> std::result::Result<ReviewAt, A::Error> {
                use serde::de::Error as _;
                let (mut age, mut keep, mut again): (Option<usize>, Option<Vec<usize>>, bool) = (None, None, false);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "age" => age = Some(map.next_value()?),
                        "keep" => keep = Some(map.next_value()?),
                        "again" => again = map.next_value()?,
                        other => return Err(A::Error::unknown_field(other, &["age", "keep", "again"])),
                    }
                }
                let age = age.ok_or_else(|| A::Error::missing_field("age"))?;
                let keep = KeepAges::new(age, &keep.unwrap_or_default()).map_err(A::Error::custom)?;
                if again && keep.is_empty() {
                    return Err(A::Error::custom(
                        "`again = true` reviews a token again at each keep age: it needs `keep` ages",
                    ));
                }
                Ok(ReviewAt::Age { age, keep, again })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<ReviewAt, E> {
                match v {
                    "spike" => Ok(ReviewAt::SPIKE),
                    "spike-tokens" => Ok(ReviewAt::Spike { tokens: true }),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl ReviewAt {
    /// Spike-triggered reviews.
    pub const SPIKE: ReviewAt = ReviewAt::Spike { tokens: false };

    /// Reviews at `age` that keep (to the end), demote or drop.
    pub fn at_age(age: usize) -> Self {
        ReviewAt::Age { age, keep: KeepAges::NONE, again: false }
    }

    /// The ages at which one token may come up for review, in order: `[age]`, or for a chain
    /// (`again`) `[age, keep…]`; empty for spike reviews. Each is one review head per layer.
    pub fn stage_ages(self) -> Vec<usize> {
        match self {
            ReviewAt::Age { age, keep, again: true } => std::iter::once(age).chain(keep.ages()).collect(),
            ReviewAt::Age { age, .. } => vec![age],
            ReviewAt::Spike { .. } => Vec::new(),
        }
    }

    /// Review heads (and feature groups) per layer: one, or one per age of a chain.
    pub fn stages(self) -> usize {
        self.stage_ages().len().max(1)
    }

    /// Action heads per stream of a model with `layers` layers: a write head per layer, then a
    /// review head per layer and stage.
    pub fn heads(self, layers: usize) -> usize {
        layers * (1 + self.stages())
    }

    /// Whether a token kept to a later age is reviewed again there.
    pub fn is_chain(self) -> bool {
        matches!(self, ReviewAt::Age { again: true, .. })
    }

    /// The review age (`None` for spike reviews).
    pub fn age(self) -> Option<usize> {
        match self {
            ReviewAt::Age { age, .. } => Some(age),
            ReviewAt::Spike { .. } => None,
        }
    }

    /// The names of the review features this trigger observes per layer and stage.
    pub fn features(self) -> &'static [&'static str] {
        match self {
            ReviewAt::Age { again: true, .. } => &CHAIN_FEATURES,
            ReviewAt::Age { .. } => &REVIEW_FEATURES,
            ReviewAt::Spike { tokens: false } => &SPIKE_FEATURES,
            ReviewAt::Spike { tokens: true } => &SPIKE_TOKEN_FEATURES,
        }
    }

    /// The schedules only reviews produce (added to the menu; writes are masked off them).
    pub fn menu_extras(self, cfg: &ModelConfig) -> Vec<StoreOption> {
        match self {
            ReviewAt::Age { age, keep, .. } => review_options(cfg, age, keep),
            ReviewAt::Spike { .. } => Vec::new(),
        }
    }
}

impl std::fmt::Display for ReviewAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReviewAt::Age { age, keep, .. } if keep.is_empty() => write!(f, "{age}"),
            ReviewAt::Age { age, keep, again } => {
                write!(f, "{age}, keep to {}", keep.ages().map(|a| a.to_string()).collect::<Vec<_>>().join("/"))?;
                if *again {
                    write!(f, ", reviewed again at each")?;
                }
                Ok(())
            }
            ReviewAt::Spike { tokens: false } => write!(f, "spike"),
            ReviewAt::Spike { tokens: true } => write!(f, "spike-tokens"),
        }
    }
}

/// The schedules a review at `age` can turn a plain kept option of the menu into: `F/age/drop`
/// for every kept `F`, `rank:ρ/age/rank:ρ'` for each menu rank ρ' < ρ (a dense token can be
/// kept or dropped: its factors are not kept beside it), and `F/W/drop` for each later age `W` in
/// `keep` (kept as it is to age W, then dropped).
pub fn review_options(cfg: &ModelConfig, age: usize, keep: KeepAges) -> Vec<StoreOption> {
    let ranks: Vec<usize> =
        cfg.menu.iter().filter_map(|o| if let StoreOption::Rank(r) = o { Some(*r) } else { None }).collect();
    let mut out = Vec::new();
    for first in cfg.menu.iter().filter_map(|o| Form::of(*o)).filter(|f| *f != Form::Drop) {
        out.push(StoreOption::Schedule { first, window: age, then: Form::Drop, then_for: None });
        if let Form::Rank(rho) = first {
            for &lower in ranks.iter().filter(|&&r| r < rho) {
                out.push(StoreOption::Schedule { first, window: age, then: Form::Rank(lower), then_for: None });
            }
        }
        for window in keep.ages() {
            out.push(StoreOption::Schedule { first, window, then: Form::Drop, then_for: None });
        }
    }
    out
}

/// One recent (age reviews) or kept (spike reviews) token of one stream and layer.
#[derive(Clone, Debug)]
struct Entry {
    /// Its position.
    position: usize,
    /// Its write option (menu index).
    option: usize,
    /// Its stored key `[h · d_h]` as later queries see it (empty when nothing is kept).
    key: Vec<f32>,
    /// Attention received so far: sum, max, latest, sum since its previous review (means over heads).
    sum: f32,
    max: f32,
    last: f32,
    since: f32,
    /// Rows it has topped (spike reviews).
    spikes: u32,
}

impl Entry {
    /// Take in the weight one more query gave it.
    fn drew(&mut self, w: f32) {
        self.sum += w;
        self.max = self.max.max(w);
        self.last = w;
        self.since += w;
    }
}

/// A token's review: where it stood and what it became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reviewed {
    /// Its position.
    pub position: usize,
    /// Its write option (menu index).
    pub written: usize,
    /// Its option after the review (menu index; `written` when kept or not reviewable).
    pub effective: usize,
    /// Whether it could change (kept at a plain option); `false` also where no token was under
    /// review (`position` is then `usize::MAX`).
    pub reviewable: bool,
    /// The first query that no longer sees it, when the review dropped it at a moment of its own
    /// (spike reviews); age reviews express a drop through `effective`'s schedule instead.
    pub evicted_at: Option<usize>,
    /// Its stream.
    pub stream: usize,
    /// Its layer.
    pub layer: usize,
    /// Its review stage: the index of its age in [`ReviewAt::stage_ages`] (0 for spike reviews
    /// and single-age reviews).
    pub stage: usize,
}

impl Reviewed {
    /// No token under review at stage `stage` of stream b, layer l.
    fn none(exact: usize, stream: usize, layer: usize, stage: usize) -> Self {
        Self {
            position: usize::MAX,
            written: exact,
            effective: exact,
            reviewable: false,
            evicted_at: None,
            stream,
            layer,
            stage,
        }
    }
}

/// Per option, the review actions it allows; per option, whether a write may choose it; per
/// option, the chain stage a token kept at it comes up at next.
type AgeActions = (Vec<Vec<usize>>, Vec<bool>, Vec<Option<usize>>);

/// Hindsight bookkeeping for a batch of streams (see the module docs).
#[derive(Clone, Debug)]
pub struct ReviewBook {
    at: ReviewAt,
    scorer: KeyScorer,
    exact_index: usize,
    exact_bytes: f32,
    bytes: Vec<f32>,
    /// Per option a token under review holds, the review actions it allows (menu indices, its
    /// own first).
    allowed: Vec<Vec<usize>>,
    /// Options a write may choose (review-only schedules excluded).
    write_allowed: Vec<bool>,
    /// The ages a token may come up at ([`ReviewAt::stage_ages`]; empty for spike reviews).
    ages: Vec<usize>,
    /// Per option, the chain stage a token kept at it comes up at next (`F/W/drop` with W a later
    /// age of a chain); `None` elsewhere.
    stage_of: Vec<Option<usize>>,
    /// `[stream][layer]`, oldest first: the last `age` tokens (age reviews) or every kept token
    /// (spike reviews).
    entries: Vec<Vec<VecDeque<Entry>>>,
    /// Chains: `[stream][layer][k − 1]`, the tokens kept to the chain's k-th age, oldest first.
    later: Vec<Vec<Vec<VecDeque<Entry>>>>,
    /// Spike reviews (unused at an age), `[stream][layer]`: the position of the kept token that topped the latest
    /// row and its weight there, and the one that topped the row before (under review now).
    top: Vec<Vec<Option<(usize, f32)>>>,
    under: Vec<Vec<Option<(usize, f32)>>>,
    /// `[stream]`: the tokens of the rows observed so far (`"spike-tokens"` reviews only).
    tokens: Vec<Vec<u32>>,
}

impl ReviewBook {
    /// A book for `batch` streams of a model whose menu holds `at`'s
    /// [`ReviewAt::menu_extras`] (which only reviews may produce: writes are masked off them);
    /// spike reviews need `drop` in the menu.
    pub fn new(cfg: &ModelConfig, batch: usize, at: ReviewAt) -> Result<Self> {
        let (allowed, write_allowed, stage_of) = match at {
            ReviewAt::Age { age, keep, again } => Self::age_actions(cfg, age, keep, again)?,
            ReviewAt::Spike { .. } => {
                let (allowed, write_allowed) = Self::spike_actions(cfg)?;
                (allowed, write_allowed, vec![None; cfg.menu.len()])
            }
        };
        let stages = at.stages();
        Ok(Self {
            at,
            ages: at.stage_ages(),
            stage_of,
            later: vec![vec![vec![VecDeque::new(); stages - 1]; cfg.n_layers]; batch],
            scorer: KeyScorer::new(cfg),
            exact_index: cfg.exact_index(),
            exact_bytes: cost::bytes_per_token(cfg, cfg.exact_option()) as f32,
            bytes: cfg.menu.iter().map(|o| cost::bytes_per_token(cfg, *o) as f32).collect(),
            allowed,
            write_allowed,
            entries: vec![vec![VecDeque::new(); cfg.n_layers]; batch],
            top: vec![vec![None; cfg.n_layers]; batch],
            under: vec![vec![None; cfg.n_layers]; batch],
            tokens: vec![Vec::new(); batch],
        })
    }

    /// Reviews at `age`: per write option, the review actions it allows (itself, and the schedules
    /// [`review_options`] makes of it); writes may not choose those schedules. A chain (`again`)
    /// lets the first review keep a token to the first later age only, and a token kept to a later
    /// age W (`F/W/drop`) be dropped there (its own option), kept to the next age, or kept to the
    /// end (`F`).
    fn age_actions(cfg: &ModelConfig, age: usize, keep: KeepAges, again: bool) -> Result<AgeActions> {
        if age == 0 {
            return Err(Error::Input("a review age must be at least 1 query".into()));
        }
        let index = |o: StoreOption| cfg.option_index(o).map_err(|e| Error::Input(format!("review at age {age}: {e}")));
        let review_only = review_options(cfg, age, keep);
        let later: Vec<usize> = keep.ages().collect();
        let kept_to =
            |first: Form, window: usize| StoreOption::Schedule { first, window, then: Form::Drop, then_for: None };
        let mut allowed = Vec::with_capacity(cfg.menu.len());
        let mut stage_of = vec![None; cfg.menu.len()];
        for (i, o) in cfg.menu.iter().enumerate() {
            let mut ok = vec![i];
            if let Some(first) = Form::of(*o).filter(|f| *f != Form::Drop) {
                for &s in &review_only {
                    if let StoreOption::Schedule { first: f, window, .. } = s
                        && f == first
                        && (!again || window == age || Some(&window) == later.first())
                    {
                        ok.push(index(s)?);
                    }
                }
            } else if let StoreOption::Schedule { first, window, then: Form::Drop, then_for: None } = *o
                && again
                && review_only.contains(o)
                && let Some(k) = later.iter().position(|&w| w == window)
            {
                if let Some(&next) = later.get(k + 1) {
                    ok.push(index(kept_to(first, next))?);
                }
                ok.push(index(first.option())?);
                stage_of[i] = Some(k + 1);
            }
            allowed.push(ok);
        }
        let write_allowed = cfg.menu.iter().map(|o| !review_only.contains(o)).collect();
        Ok((allowed, write_allowed, stage_of))
    }

    /// Spike reviews: a token kept at a plain option may be kept or dropped; every option is
    /// writable.
    fn spike_actions(cfg: &ModelConfig) -> Result<(Vec<Vec<usize>>, Vec<bool>)> {
        let drop = cfg.option_index(StoreOption::Drop).map_err(|_| {
            Error::Input(format!(
                "review = \"spike\" needs `drop` in the menu (a review keeps or drops its token); the menu is [{}]",
                cfg.menu.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        let allowed = cfg
            .menu
            .iter()
            .enumerate()
            .map(|(i, o)| match Form::of(*o) {
                Some(f) if f != Form::Drop => vec![i, drop],
                _ => vec![i],
            })
            .collect();
        Ok((allowed, vec![true; cfg.menu.len()]))
    }

    /// When this book's tokens come up for review.
    pub fn at(&self) -> ReviewAt {
        self.at
    }

    fn is_spike(&self) -> bool {
        matches!(self.at, ReviewAt::Spike { .. })
    }

    /// Take in the attention of the step just decoded (query t, whose tokens per stream are `ids`)
    /// to every recent token: a key's weight is `exp(q·k/√d_h − lse)` per head, averaged over
    /// heads.
    pub fn observe(&mut self, out: &StepOutput, ids: &[u32]) -> Result<()> {
        let l_n = self.entries.first().map_or(0, Vec::len);
        if ids.len() != self.tokens.len() {
            return Err(Error::Input(format!("review: {} token ids for {} streams", ids.len(), self.tokens.len())));
        }
        if self.at == (ReviewAt::Spike { tokens: true }) {
            self.tokens.iter_mut().zip(ids).for_each(|(seen, &id)| seen.push(id));
        }
        let entries = &self.entries;
        let later = &self.later;
        let weights = self.scorer.step(out, |l| {
            entries.iter().any(|s| !s[l].is_empty()) || later.iter().any(|s| s[l].iter().any(|q| !q.is_empty()))
        })?;
        let spike = self.is_spike();
        for l in 0..l_n {
            for (b, stream) in self.entries.iter_mut().enumerate() {
                let mut top: Option<(usize, f32)> = None;
                for (i, e) in stream[l].iter_mut().enumerate() {
                    let w = weights.weight(b, l, &e.key);
                    e.drew(w);
                    if top.is_none_or(|(_, best)| w > best) {
                        top = Some((i, w));
                    }
                }
                for e in self.later[b][l].iter_mut().flatten() {
                    e.drew(weights.weight(b, l, &e.key));
                }
                if spike {
                    let top = top.map(|(i, w)| {
                        stream[l][i].spikes += 1;
                        (stream[l][i].position, w)
                    });
                    self.under[b][l] = std::mem::replace(&mut self.top[b][l], top);
                }
            }
        }
        Ok(())
    }

    /// Action heads per stream: L writes, then L reviews per stage.
    fn heads(&self) -> usize {
        self.at.heads(self.entries.first().map_or(0, Vec::len))
    }

    /// The entry under review at step t in stream b, layer l, stage `stage`, and where it is held
    /// (its index in the book's first queue; `None` for a later stage, whose entry is the front of
    /// its queue): the token written at t − age, the token kept to the stage's age written that
    /// long ago, or (spike reviews) the one that topped the previous row, while it is held.
    fn under(&self, b: usize, l: usize, t: usize, stage: usize) -> Option<(&Entry, Option<usize>)> {
        let entries = &self.entries[b][l];
        match self.at {
            ReviewAt::Spike { .. } => {
                let (position, _) = self.under[b][l]?;
                let i = entries.binary_search_by_key(&position, |e| e.position).ok()?;
                Some((&entries[i], Some(i)))
            }
            ReviewAt::Age { age, .. } if stage == 0 => {
                (t >= age && entries.len() == age).then(|| (&entries[0], Some(0)))
            }
            ReviewAt::Age { .. } => {
                let age = self.ages[stage];
                let e = self.later[b][l][stage - 1].front().filter(|e| t >= age && e.position == t - age)?;
                Some((e, None))
            }
        }
    }

    /// The entry under review at step t in stream b, layer l, stage `stage`.
    fn under_review(&self, b: usize, l: usize, t: usize, stage: usize) -> Option<&Entry> {
        self.under(b, l, t, stage).map(|(e, _)| e)
    }

    /// Whether the token under review can change (kept at a plain option, or kept to an age of a
    /// chain).
    fn reviewable(&self, e: &Entry) -> bool {
        self.allowed[e.option].len() > 1
    }

    /// `[B][stages × L × features]` features of the tokens under review at step t (zeros where
    /// none), stage by stage: [`REVIEW_FEATURES`], [`CHAIN_FEATURES`] for a chain, or
    /// [`SPIKE_FEATURES`] / [`SPIKE_TOKEN_FEATURES`] for spike reviews.
    pub fn features(&self, t: usize) -> Vec<f32> {
        let l_n = self.entries.first().map_or(0, Vec::len);
        let (per, stages) = (self.at.features().len(), self.at.stages());
        let mut out = Vec::with_capacity(self.entries.len() * stages * l_n * per);
        for b in 0..self.entries.len() {
            for stage in 0..stages {
                for l in 0..l_n {
                    let Some(e) = self.under_review(b, l, t, stage).filter(|e| self.reviewable(e)) else {
                        out.extend(std::iter::repeat_n(0.0, per));
                        continue;
                    };
                    let bytes = self.bytes[e.option] / self.exact_bytes;
                    if self.is_spike() {
                        let spike = self.under[b][l].map_or(0.0, |(_, w)| w);
                        let age = ((t - e.position) as f32).ln_1p();
                        out.extend([1.0, bytes, spike, e.sum, e.last, age, (e.spikes as f32).ln_1p()]);
                        if self.at == (ReviewAt::Spike { tokens: true }) {
                            // The row that topped it is t − 1; the token after that row is t's.
                            let seen = &self.tokens[b];
                            let at = |i: usize| seen.get(i).copied();
                            let prefix = e.position > 0 && t > 0 && at(t - 1) == at(e.position - 1);
                            let next = at(t) == at(e.position);
                            out.extend([f32::from(u8::from(prefix)), f32::from(u8::from(next))]);
                        }
                    } else if self.at.is_chain() {
                        out.extend([1.0, bytes, e.sum, e.max, e.last, e.since]);
                    } else {
                        out.extend([1.0, bytes, e.sum, e.max, e.last]);
                    }
                }
            }
        }
        out
    }

    /// Action masks `[B][L · (1 + stages)][menu]` at step t: L write heads (review-only schedules
    /// masked), then L review heads per stage (the options the token under review may become; its
    /// own option alone when it cannot change, the exact option when there is none).
    pub fn masks(&self, t: usize) -> Vec<bool> {
        let (m, l_n) = (self.scorer.menu.len(), self.entries.first().map_or(0, Vec::len));
        let mut out = Vec::with_capacity(self.entries.len() * self.heads() * m);
        for b in 0..self.entries.len() {
            for _ in 0..l_n {
                out.extend_from_slice(&self.write_allowed);
            }
            for stage in 0..self.at.stages() {
                for l in 0..l_n {
                    let allowed: &[usize] = match self.under_review(b, l, t, stage) {
                        Some(e) => &self.allowed[e.option],
                        None => std::slice::from_ref(&self.exact_index),
                    };
                    out.extend((0..m).map(|o| allowed.contains(&o)));
                }
            }
        }
        out
    }

    /// Record step t's decisions: `actions[b]` holds L write options then L review actions per
    /// stage. The tokens under review leave their queue (returned stream by stream, stage by
    /// stage, with what each became: a review action outside its allowed set keeps the token as
    /// it is; a spike review's kept token stays; a chain's token kept to its next age joins that
    /// age's queue) and token t enters the book with its stored key (read from `pending` before
    /// the cache takes it).
    pub fn record(&mut self, pending: &PendingToken, actions: &[usize], t: usize) -> Result<Vec<Reviewed>> {
        let (l_n, heads, stages) = (self.entries.first().map_or(0, Vec::len), self.heads(), self.at.stages());
        if actions.len() != self.entries.len() * heads {
            return Err(Error::Input(format!(
                "review: {} actions, expected streams × layers × (1 + review stages) = {}",
                actions.len(),
                self.entries.len() * heads
            )));
        }
        let spike = self.is_spike();
        let mut reviewed = Vec::with_capacity(self.entries.len() * stages * l_n);
        for b in 0..self.entries.len() {
            for stage in 0..stages {
                for l in 0..l_n {
                    reviewed.push(Reviewed::none(self.exact_index, b, l, stage));
                }
            }
            // Later stages first: a token a review keeps to the next age joins that age's queue
            // behind the one it reviews now.
            for stage in (0..stages).rev() {
                for l in 0..l_n {
                    let action = actions[b * heads + l_n * (1 + stage) + l];
                    let Some((e, index)) = self.under(b, l, t, stage) else { continue };
                    let (position, option, reviewable) = (e.position, e.option, self.reviewable(e));
                    let effective = if self.allowed[option].contains(&action) { action } else { option };
                    let r = &mut reviewed[(b * stages + stage) * l_n + l];
                    r.position = position;
                    r.written = option;
                    r.effective = effective;
                    r.reviewable = reviewable;
                    let mut taken = None;
                    if !spike {
                        taken = match index {
                            Some(_) => self.entries[b][l].pop_front(),
                            None => self.later[b][l][stage - 1].pop_front(),
                        };
                    } else if effective != option {
                        r.evicted_at = Some(t + 1);
                        self.entries[b][l].remove(index.expect("spike reviews read the first queue"));
                    }
                    // Kept on to the next age of a chain (not left at its own `F/W/drop`, whose
                    // token expires at W): it joins that age's queue.
                    if let Some(mut e) = taken.filter(|_| self.stage_of[effective] == Some(stage + 1)) {
                        e.option = effective;
                        e.since = 0.0;
                        self.later[b][l][stage].push_back(e);
                    }
                }
            }
        }
        for l in 0..l_n {
            let keys = self.scorer.stored_keys(
                pending,
                l,
                &(0..self.entries.len()).map(|b| actions[b * heads + l]).collect::<Vec<_>>(),
            )?;
            for (b, key) in keys.into_iter().enumerate() {
                let option = actions[b * heads + l];
                if spike && self.allowed[option].len() == 1 {
                    continue; // dropped or timed: nothing to review
                }
                let entry = Entry { position: t, option, key, sum: 0.0, max: 0.0, last: 0.0, since: 0.0, spikes: 0 };
                self.entries[b][l].push_back(entry);
            }
        }
        Ok(reviewed)
    }

    /// Store step t in `cache` in the one order reviews need: record the decisions (reading
    /// `pending` before the cache takes it), move the tokens a chain's later reviews keep on,
    /// push the token with its L write options per stream, then apply the first reviews (they
    /// hold from the next query on). Returns the write options (`[B·L]`) and the reviews.
    pub fn store(
        &mut self,
        cache: &mut KvCache,
        pending: PendingToken,
        actions: &[usize],
        t: usize,
    ) -> Result<(Vec<usize>, Vec<Reviewed>)> {
        let reviewed = self.record(&pending, actions, t)?;
        let l_n = self.entries.first().map_or(0, Vec::len);
        let writes: Vec<usize> = actions.chunks(self.heads().max(1)).flat_map(|a| a[..l_n].to_vec()).collect();
        // A chain's later reviews move their tokens before the push, in which a token dropped at
        // its age expires.
        let again: Vec<(usize, usize, usize, usize)> = reviewed
            .iter()
            .filter(|r| r.stage > 0 && r.reviewable && r.effective != r.written)
            .map(|r| (r.stream, r.layer, r.written, r.effective))
            .collect();
        cache.review_again(&again)?;
        cache.push(pending, &writes)?;
        if self.is_spike() {
            // A dropped token leaves the cache by its place among those held at its option, oldest
            // first: the book's older tokens at that option (the book holds every kept token).
            for r in reviewed.iter().filter(|r| r.evicted_at.is_some()) {
                let older = self.entries[r.stream][r.layer].iter().take_while(|e| e.position < r.position);
                let place = older.filter(|e| e.option == r.written).count();
                cache.evict(r.stream, r.layer, r.written, place)?;
            }
        } else {
            cache.review(&reviewed.iter().filter(|r| r.stage == 0).map(|r| r.effective).collect::<Vec<_>>())?;
        }
        Ok((writes, reviewed))
    }
}

/// The attention a decode step gave to cached keys, read off its output: a key's weight is
/// `exp(q·k/√d_h − lse)` per head ([`StepOutput::lse`]), averaged over heads. Shared by
/// [`ReviewBook`] (hindsight features) and the judge's cache-scored H2O and TOVA.
#[derive(Clone, Debug)]
pub struct KeyScorer {
    menu: Vec<StoreOption>,
    exact: StoreOption,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// One decode step's queries and log-sum-exps on the host, to weigh keys with.
#[derive(Clone, Debug)]
pub struct StepWeights {
    heads: usize,
    head_dim: usize,
    layers: usize,
    /// Per layer, `[B, h, d_h]`.
    queries: Vec<Vec<f32>>,
    /// `[B, L, h]`.
    lse: Vec<f32>,
}

impl StepWeights {
    /// The weight the step's query gave `key` (`[h · d_h]`, as stored) in stream b, layer l; 0 for
    /// an empty key (nothing kept).
    pub fn weight(&self, b: usize, l: usize, key: &[f32]) -> f32 {
        if key.is_empty() {
            return 0.0;
        }
        (0..self.heads).map(|hh| self.head_weight(b, l, key, hh)).sum::<f32>() / self.heads as f32
    }

    /// The weight each query head gave `key` (`[h]`; zeros for an empty key).
    pub fn head_weights(&self, b: usize, l: usize, key: &[f32]) -> Vec<f32> {
        if key.is_empty() {
            return vec![0.0; self.heads];
        }
        (0..self.heads).map(|hh| self.head_weight(b, l, key, hh)).collect()
    }

    /// The weight query head `hh` gave a (non-empty) `key` in stream b, layer l.
    fn head_weight(&self, b: usize, l: usize, key: &[f32], hh: usize) -> f32 {
        let (h, dh) = (self.heads, self.head_dim);
        let q = &self.queries[l][(b * h + hh) * dh..(b * h + hh + 1) * dh];
        let lse = self.lse[(b * self.layers + l) * h + hh];
        let s: f32 = q.iter().zip(&key[hh * dh..(hh + 1) * dh]).map(|(a, k)| a * k).sum();
        let scale = 1.0 / (dh as f32).sqrt();
        (s * scale - lse).exp()
    }
}

impl KeyScorer {
    /// A scorer for a model with config `cfg` (its menu decides how each option stores a key).
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            menu: cfg.menu.clone(),
            exact: cfg.exact_option(),
            heads: cfg.n_heads,
            kv_heads: cfg.kv_heads(),
            head_dim: cfg.head_dim,
        }
    }

    /// The step's queries (the layers in `layers`; others left empty) and log-sum-exps.
    pub fn step(&self, out: &StepOutput, layers: impl Fn(usize) -> bool) -> Result<StepWeights> {
        let l_n = out.pending.layers.len();
        let queries = (0..l_n).map(|l| if layers(l) { query(&out.pending, l) } else { Ok(Vec::new()) });
        Ok(StepWeights {
            heads: self.heads,
            head_dim: self.head_dim,
            layers: l_n,
            queries: queries.collect::<Result<_>>()?,
            lse: to_host(out.lse.clone())?,
        })
    }

    /// Each stream's stored key `[h · d_h]` of the token in `pending` for layer l under its
    /// write option (empty for drop).
    pub fn stored_keys(&self, pending: &PendingToken, l: usize, options: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.stored(pending, l, options, false)
    }

    /// The same for the stored values (`[h · d_h]` per stream, empty for drop).
    pub fn stored_values(&self, pending: &PendingToken, l: usize, options: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.stored(pending, l, options, true)
    }

    fn stored(&self, pending: &PendingToken, l: usize, options: &[usize], values: bool) -> Result<Vec<Vec<f32>>> {
        let (h, kvh, dh) = (self.heads, self.kv_heads, self.head_dim);
        let p = &pending.layers[l];
        let factors = match &p.kv_factors {
            Some([ak, bk, av, bv]) => {
                let (a, b) = if values { (av, bv) } else { (ak, bk) };
                Some((to_host(a.clone())?, to_host(b.clone())?, a.dims()[3]))
            }
            None => None,
        };
        let dense = match &p.kv_dense {
            Some((k, v)) => Some(to_host(if values { v.clone() } else { k.clone() })?),
            None => None,
        };
        let mut out = Vec::with_capacity(options.len());
        for (b, &o) in options.iter().enumerate() {
            let key = match self.menu[o].stored_as(self.exact) {
                StoreOption::Rank(rho) => {
                    let (ak, bk, r) =
                        factors.as_ref().ok_or_else(|| Error::Input("rank options need TPA factors".into()))?;
                    let (a, bb) = (&ak[b * h * r..(b + 1) * h * r], &bk[b * r * dh..(b + 1) * r * dh]);
                    let mut k = vec![0f32; h * dh];
                    for hh in 0..h {
                        for j in 0..rho {
                            let w = a[hh * r + j] / rho as f32;
                            for d in 0..dh {
                                k[hh * dh + d] += w * bb[j * dh + d];
                            }
                        }
                    }
                    k
                }
                StoreOption::Full => {
                    let k = dense.as_ref().ok_or_else(|| Error::Input("the full option needs dense K/V".into()))?;
                    let kb = &k[b * kvh * dh..(b + 1) * kvh * dh];
                    (0..h).flat_map(|hh| kb[(hh / (h / kvh)) * dh..(hh / (h / kvh) + 1) * dh].iter().copied()).collect()
                }
                _ => Vec::new(),
            };
            out.push(key);
        }
        Ok(out)
    }
}

/// The materialised, rotated query of the token in `pending` for layer l, `[B, h, d_h]` on the host.
fn query(pending: &PendingToken, l: usize) -> Result<Vec<f32>> {
    let p = &pending.layers[l];
    let q: Tensor<4> = match (&p.q_factors, &p.q_dense) {
        (Some((a, bq)), _) => {
            let rq = a.dims()[3];
            a.clone().matmul(bq.clone()) / rq as f32
        }
        (None, Some(q)) => q.clone(),
        (None, None) => return Err(Error::Input("every family projects a query".into())),
    };
    to_host(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct Env {
        review: ReviewAt,
    }

    fn parse(s: &str) -> std::result::Result<ReviewAt, String> {
        toml::from_str::<Env>(s).map(|e| e.review).map_err(|e| e.to_string())
    }

    #[test]
    fn keep_ages_read_and_write_as_a_table_and_plain_ages_as_a_number() {
        let at = parse("review = { age = 16, keep = [32, 64] }").unwrap();
        assert_eq!(at, ReviewAt::Age { age: 16, keep: KeepAges::new(16, &[32, 64]).unwrap(), again: false });
        let json = serde_json::to_string(&Env { review: at }).unwrap();
        assert_eq!(json, r#"{"review":{"age":16,"keep":[32,64]}}"#);
        assert_eq!(serde_json::from_str::<Env>(&json).unwrap().review, at);
        assert_eq!(at.to_string(), "16, keep to 32/64");
        let plain = parse("review = 16").unwrap();
        assert_eq!(plain, ReviewAt::at_age(16));
        assert_eq!(parse("review = { age = 16 }").unwrap(), plain);
        assert_eq!(serde_json::to_string(&Env { review: plain }).unwrap(), r#"{"review":16}"#);
    }

    #[test]
    fn a_chain_reads_and_writes_with_again_and_reviews_at_each_age() {
        let at = parse("review = { age = 16, keep = [32, 64], again = true }").unwrap();
        assert_eq!(at, ReviewAt::Age { age: 16, keep: KeepAges::new(16, &[32, 64]).unwrap(), again: true });
        let json = serde_json::to_string(&Env { review: at }).unwrap();
        assert_eq!(json, r#"{"review":{"age":16,"keep":[32,64],"again":true}}"#);
        assert_eq!(serde_json::from_str::<Env>(&json).unwrap().review, at);
        assert_eq!(at.to_string(), "16, keep to 32/64, reviewed again at each");
        assert_eq!((at.stage_ages(), at.stages(), at.features().len()), (vec![16, 32, 64], 3, 6));
        let once = parse("review = { age = 16, keep = [32, 64], again = false }").unwrap();
        assert_eq!((once.stage_ages(), once.stages(), once.features().len()), (vec![16], 1, 5));
        assert_eq!(ReviewAt::SPIKE.stages(), 1);
        assert_eq!((at.heads(2), once.heads(2), ReviewAt::SPIKE.heads(3)), (8, 4, 6));
    }

    /// In a chain the first review keeps a token to the first later age only; a token kept to an
    /// age may be dropped there (its own option), kept to the next age or kept to the end; the
    /// last age has no next. Writes stay off every review-only schedule.
    #[test]
    fn a_chain_allows_one_age_more_at_each_review() {
        let base = ModelConfig::tiny();
        let at = parse("review = { age = 3, keep = [5, 9], again = true }").unwrap();
        let cfg = base.with_timed(&at.menu_extras(&base)).unwrap();
        let book = ReviewBook::new(&cfg, 1, at).unwrap();
        let name = |i: &usize| cfg.menu[*i].to_string();
        let full = cfg.option_index(StoreOption::Full).unwrap();
        let allowed = |o: &str| {
            book.allowed[cfg.menu.iter().position(|m| m.to_string() == o).unwrap()].iter().map(name).collect::<Vec<_>>()
        };
        assert_eq!(allowed("full"), ["full", "full/3/drop", "full/5/drop"]);
        assert_eq!(allowed("full/5/drop"), ["full/5/drop", "full/9/drop", "full"]);
        assert_eq!(allowed("full/9/drop"), ["full/9/drop", "full"]);
        assert_eq!(allowed("full/3/drop"), ["full/3/drop"]);
        assert!(allowed("rank:2").contains(&"rank:2/3/rank:1".to_string()));
        assert_eq!(book.stage_of[cfg.option_index("full/9/drop".parse().unwrap()).unwrap()], Some(2));
        assert!(
            book.write_allowed[full] && !book.write_allowed[cfg.option_index("full/5/drop".parse().unwrap()).unwrap()]
        );
    }

    #[test]
    fn bad_keep_ages_are_clear_errors() {
        for (text, says) in [
            ("review = { age = 16, keep = [16] }", "above the review age 16, found 16"),
            ("review = { age = 16, keep = [64, 32] }", "found 32 after 64"),
            ("review = { age = 4, keep = [5, 6, 7, 8, 9, 10, 11] }", "at most 6 keep ages"),
            ("review = { keep = [32] }", "missing field `age`"),
            ("review = { age = 16, kept = [32] }", "unknown field `kept`"),
            ("review = { age = 16, again = true }", "needs `keep` ages"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn keep_ages_add_a_drop_at_each_later_age_for_every_kept_form() {
        let cfg = ModelConfig::tiny();
        let keep = KeepAges::new(3, &[8]).unwrap();
        let names: Vec<String> = review_options(&cfg, 3, keep).iter().map(|o| o.to_string()).collect();
        let kept: Vec<String> = cfg.menu.iter().filter(|o| **o != StoreOption::Drop).map(|o| o.to_string()).collect();
        for f in &kept {
            assert!(names.contains(&format!("{f}/3/drop")), "{names:?}");
            assert!(names.contains(&format!("{f}/8/drop")), "{names:?}");
        }
        assert_eq!(names.len(), review_options(&cfg, 3, KeepAges::NONE).len() + kept.len());
    }
}
