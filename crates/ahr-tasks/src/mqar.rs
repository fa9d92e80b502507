//! Multi-query associative recall, as Zoology's `multiquery_ar` (`zoology/data/multiquery_ar.py`).
//!
//! Per example: D distinct keys from `[1, V/2)` and D distinct values from `[V/2, V)`; context
//! `k1 v1 … kD vD` (C = 2D tokens); D distinct gaps drawn without replacement from
//! `0..(L − C)/2` with power-law weights `p(i) ∝ a·i^(a−1)` (i = gap + 1); key `k_j` is asked
//! again at position `C + 2·gap_j`, whose label is `v_j` (next-token target; −100 elsewhere).
//! With `random_non_queries`, every other query-region token is uniform in `[0, V)`.
//! Mixed MQAR draws D per sequence from a list at one L. With `kv_placement = "random"` the
//! key-value block starts at an even offset drawn per sequence (random tokens before it), so the
//! position alone does not tell which tokens matter; queries still follow the block.
//!
//! Variants without Zoology's cheap tells (see `envs/README.md` for the exact rules, so that an
//! independent generator can reproduce them):
//! - `vocab = "shared"`: keys and values are 2D distinct tokens drawn from one range `[1, V)`,
//!   so a token's id says nothing about its role; filler is drawn from `[1, V)` minus the
//!   sequence's keys, so a key never appears outside its assignments and queries.
//! - `kv_placement = "anywhere"`: the block at an offset of any parity.
//! - `layout = "scattered"`: each pair at its own place, filler between, each key queried once
//!   after its pair (no block to find by position).
//! - `layout = "updates"`: pairs and queries interleaved through the sequence; some keys are
//!   re-assigned a new value later, and a query's answer is the latest value; superseded pairs
//!   are [`TokenRole::Stale`].
//! - `layout = "restated"`: scattered pairs, a fraction of them stated a second time (same key,
//!   same value, later); only restated keys are queried, each after its restatement, so which
//!   values matter is said by the context (a pair seen twice) — restated values are
//!   [`TokenRole::Restated`], pairs never queried [`TokenRole::Distractor`].
//! - `aliases = true` (event layouts, shared vocabulary): every key has two forms, `k` and its
//!   partner ([`MqarConfig::partner`]), and each occurrence of a key — assignment,
//!   re-assignment, restatement, query — takes one of them at random. The same key comes back
//!   under another token half the time, so token equality no longer says that a key returned;
//!   a model that learned the pairing (and the attention it pays) still does.

use rand::seq::index::sample;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, IGNORE, Split, TokenRole, rng_for};
use crate::error::{Error, Result};

/// MQAR parameters; `num_kv_pairs` holds one D (plain MQAR) or several (mixed MQAR).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqarConfig {
    /// Vocabulary V (keys below V/2, values above).
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    /// Sequence length L.
    #[serde(default = "default_len")]
    pub seq_len: usize,
    /// Key-value pairs D per sequence; several values make mixed MQAR (D drawn per sequence).
    #[serde(default = "default_pairs")]
    pub num_kv_pairs: Vec<usize>,
    /// Power-law exponent a of the query gaps.
    #[serde(default = "default_power_a")]
    pub power_a: f64,
    /// Fill non-query positions with random tokens (Zoology's default).
    #[serde(default = "default_true")]
    pub random_non_queries: bool,
    /// Held-out examples for evaluation.
    #[serde(default = "default_valid")]
    pub valid_examples: usize,
    /// Where the key-value block sits: at the start (Zoology) or at a random offset (`block`
    /// layout only).
    #[serde(default)]
    pub kv_placement: KvPlacement,
    /// Which tokens keys and values come from.
    #[serde(default)]
    pub vocab: VocabSplit,
    /// How pairs and queries are laid out.
    #[serde(default)]
    pub layout: Layout,
    /// `layout = "updates"`: re-assignments per key, as a fraction of D (rounded; each picks a
    /// random key and comes after that key's previous assignment).
    #[serde(default = "default_update_fraction")]
    pub update_fraction: f64,
    /// `layout = "restated"`: the fraction of the D pairs stated a second time (rounded, at
    /// least one); only those are queried, the others are distractors.
    #[serde(default = "default_restated_fraction")]
    pub restated_fraction: f64,
    /// Event layouts with a shared vocabulary: every key occurs in either of two forms (itself
    /// or its [`MqarConfig::partner`]), drawn per occurrence.
    #[serde(default)]
    pub aliases: bool,
}

/// Where keys and values are drawn from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VocabSplit {
    /// Keys from `[1, V/2)`, values from `[V/2, V)` (Zoology): the id tells the role.
    #[default]
    Split,
    /// Keys and values from `[1, V)`, all 2D distinct; filler never repeats a key.
    Shared,
}

/// How an MQAR sequence is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Zoology's key-value block, then queries at power-law gaps.
    #[default]
    Block,
    /// Every pair at its own uniformly random place, each key queried once after its pair.
    Scattered,
    /// Assignments, re-assignments and queries interleaved at random places; the answer is the
    /// latest value.
    Updates,
    /// Scattered pairs, some stated twice (the same key and value again, later); only the
    /// restated keys are queried, after their restatement. Which pairs matter is said by the
    /// context (a pair seen twice), not by a position or a token id.
    Restated,
}

fn default_update_fraction() -> f64 {
    0.5
}

fn default_restated_fraction() -> f64 {
    0.5
}

/// Placement of the key-value block in an MQAR sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvPlacement {
    /// Positions `0..2D` (Zoology's layout).
    #[default]
    Start,
    /// An even offset `o ∈ [0, L − 4D]` drawn per sequence; queries at `o + 2D + 2·gap`.
    Random,
    /// An offset `o ∈ [0, L − 4D]` of any parity; queries at `o + 2D + 2·gap`.
    Anywhere,
}

fn default_vocab() -> usize {
    8192
}
fn default_len() -> usize {
    128
}
fn default_pairs() -> Vec<usize> {
    vec![8]
}
fn default_power_a() -> f64 {
    0.01
}
fn default_true() -> bool {
    true
}
fn default_valid() -> usize {
    1000
}

impl Default for MqarConfig {
    fn default() -> Self {
        Self {
            vocab_size: default_vocab(),
            seq_len: default_len(),
            num_kv_pairs: default_pairs(),
            power_a: default_power_a(),
            random_non_queries: true,
            valid_examples: default_valid(),
            kv_placement: KvPlacement::Start,
            vocab: VocabSplit::Split,
            layout: Layout::Block,
            update_fraction: default_update_fraction(),
            restated_fraction: default_restated_fraction(),
            aliases: false,
        }
    }
}

impl MqarConfig {
    /// Check Zoology's preconditions for every D.
    pub fn validate(&self) -> Result<()> {
        let (v, l) = (self.vocab_size, self.seq_len);
        if self.num_kv_pairs.is_empty() {
            return Err(Error::Config("mqar: `num_kv_pairs` must list at least one D".into()));
        }
        if v < 4 {
            return Err(Error::Config(format!("mqar: vocab_size ({v}) must be at least 4")));
        }
        // Zoology's generator asserts it for its layout; the scattered layouts need only enough
        // distinct tokens for their pairs (checked per D below).
        if self.layout == Layout::Block && v <= l {
            return Err(Error::Config(format!("mqar: layout = \"block\" needs vocab_size ({v}) > seq_len ({l})")));
        }
        if l % 2 != 0 {
            return Err(Error::Config(format!("mqar: seq_len ({l}) must be even")));
        }
        if self.power_a.is_nan() || self.power_a <= 0.0 {
            return Err(Error::Config(format!("mqar: power_a must be > 0, found {}", self.power_a)));
        }
        for &d in &self.num_kv_pairs {
            if d == 0 || 4 * d > l || d >= v / 2 {
                return Err(Error::Config(format!(
                    "mqar: num_kv_pairs = {d} needs 1 ≤ D, 4·D ≤ seq_len ({l}) and D < vocab_size/2"
                )));
            }
            let assignments = d + self.updates(d) + self.restated(d);
            let queries = if self.layout == Layout::Restated { self.restated(d) } else { d };
            if self.layout != Layout::Block && 2 * assignments + queries > l {
                return Err(Error::Config(format!(
                    "mqar: {assignments} assignments and {queries} queries do not fit in seq_len = {l}"
                )));
            }
            if self.vocab == VocabSplit::Shared && v <= 2 * assignments + 1 {
                return Err(Error::Config(format!(
                    "mqar: vocab = \"shared\" needs more than {} tokens for D = {d}",
                    2 * assignments + 1
                )));
            }
        }
        if !(0.0..=4.0).contains(&self.update_fraction) {
            return Err(Error::Config(format!(
                "mqar: update_fraction must lie in [0, 4], found {}",
                self.update_fraction
            )));
        }
        if !(self.restated_fraction > 0.0 && self.restated_fraction <= 1.0) {
            return Err(Error::Config(format!(
                "mqar: restated_fraction must lie in (0, 1], found {}",
                self.restated_fraction
            )));
        }
        if self.aliases {
            if self.layout == Layout::Block || self.vocab != VocabSplit::Shared {
                return Err(Error::Config(
                    "mqar: aliases need an event layout (scattered, updates, restated) and vocab = \"shared\"".into(),
                ));
            }
            for &d in &self.num_kv_pairs {
                // Both forms of D keys, D + re-assignments distinct values, and one filler token.
                let need = 3 * d + self.updates(d) + 1;
                if v - 1 < need {
                    return Err(Error::Config(format!(
                        "mqar: aliases with D = {d} need vocab_size > {need} (two forms per key, the values, filler)"
                    )));
                }
            }
        }
        if self.layout != Layout::Block && self.kv_placement != KvPlacement::Start {
            return Err(Error::Config("mqar: kv_placement applies to layout = \"block\" only".into()));
        }
        Ok(())
    }

    /// Re-assignments in a sequence of D pairs.
    fn updates(&self, d: usize) -> usize {
        match self.layout {
            Layout::Updates => (self.update_fraction * d as f64).round() as usize,
            _ => 0,
        }
    }

    /// Restated (and queried) pairs in a sequence of D pairs.
    fn restated(&self, d: usize) -> usize {
        match self.layout {
            Layout::Restated => ((self.restated_fraction * d as f64).round() as usize).clamp(1, d),
            _ => 0,
        }
    }

    /// The other form of key token `x` under `aliases`: with `H = ⌊(V − 1)/2⌋`, tokens `1 … H`
    /// pair with `H + 1 … 2H` (`x ↔ x + H`); the last token of an even vocabulary (`V − 1`) and
    /// token 0 have none and are never keys.
    pub fn partner(&self, x: u32) -> Option<u32> {
        let h = ((self.vocab_size - 1) / 2) as u32;
        if (1..=h).contains(&x) {
            Some(x + h)
        } else if (h + 1..=2 * h).contains(&x) {
            Some(x - h)
        } else {
            None
        }
    }

    /// The key a token names: under `aliases`, the smaller of its two forms (so both forms give
    /// the same class); otherwise the token itself.
    pub fn key_class(&self, x: u32) -> u32 {
        match self.partner(x).filter(|_| self.aliases) {
            Some(p) => p.min(x),
            None => x,
        }
    }

    /// The token key `k` is written as at one occurrence: itself, or under `aliases` either form
    /// with equal probability (no draw without aliases).
    fn key_form(&self, k: u32, rng: &mut impl Rng) -> u32 {
        match self.partner(k).filter(|_| self.aliases) {
            Some(p) if rng.random_bool(0.5) => p,
            _ => k,
        }
    }

    /// Tokens filler must avoid: the keys, and under `aliases` their partners too.
    fn key_tokens(&self, keys: &[u32]) -> Vec<u32> {
        let partners = keys.iter().filter_map(|&k| self.partner(k).filter(|_| self.aliases));
        keys.iter().copied().chain(partners).collect()
    }

    /// Keys and (enough) values for D pairs and `extra` re-assignments: distinct tokens, from
    /// the vocabulary split's ranges; under `aliases`, D keys from `[1, H]` (one per pair of
    /// forms) and the values from the rest of `[1, V)` (neither form of any key).
    fn draw_tokens(&self, d: usize, extra: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<u32>) {
        let v = self.vocab_size;
        if self.aliases {
            let h = (v - 1) / 2;
            let keys: Vec<u32> = sample(rng, h, d).into_iter().map(|k| (k + 1) as u32).collect();
            let taken = self.key_tokens(&keys);
            let free: Vec<u32> = (1..v as u32).filter(|t| !taken.contains(t)).collect();
            let values = sample(rng, free.len(), d + extra).into_iter().map(|i| free[i]).collect();
            return (keys, values);
        }
        match self.vocab {
            VocabSplit::Split => {
                let half = v / 2;
                let keys = sample(rng, half - 1, d).into_iter().map(|k| (k + 1) as u32).collect();
                let values = sample(rng, v - half, d + extra).into_iter().map(|x| (x + half) as u32).collect();
                (keys, values)
            }
            VocabSplit::Shared => {
                let mut all: Vec<u32> = sample(rng, v - 1, 2 * d + extra).into_iter().map(|x| (x + 1) as u32).collect();
                let values = all.split_off(d);
                (all, values)
            }
        }
    }

    /// One example of D pairs: (inputs, labels, roles), each of length L.
    pub fn example(&self, d: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<i64>, Vec<TokenRole>) {
        match self.layout {
            Layout::Block => self.block_example(d, rng),
            Layout::Scattered | Layout::Updates | Layout::Restated => self.event_example(d, rng),
        }
    }

    /// Zoology's layout: the key-value block, then queries at power-law gaps.
    fn block_example(&self, d: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<i64>, Vec<TokenRole>) {
        let l = self.seq_len;
        let (keys, values) = self.draw_tokens(d, 0, rng);
        let c = 2 * d;
        // Zoology's layout draws nothing here, so `start` sequences are unchanged by the option.
        let o = match self.kv_placement {
            KvPlacement::Start => 0,
            KvPlacement::Random => 2 * rng.random_range(0..=(l - 2 * c) / 2),
            KvPlacement::Anywhere => rng.random_range(0..=l - 2 * c),
        };
        let space = (l - c - o) / 2;
        let gaps = power_law_gaps(space, d, self.power_a, rng);

        let mut seq = vec![0u32; l + 1];
        let mut labels = vec![IGNORE; l + 1];
        let mut roles = vec![TokenRole::Filler; l];
        for j in 0..d {
            seq[o + 2 * j] = keys[j];
            seq[o + 2 * j + 1] = values[j];
            seq[o + c + 2 * gaps[j]] = keys[j];
            labels[o + c + 2 * gaps[j] + 1] = values[j] as i64;
            roles[o + 2 * j] = TokenRole::Key;
            roles[o + 2 * j + 1] = TokenRole::Value;
            roles[o + c + 2 * gaps[j]] = TokenRole::Query;
        }
        let mut inputs: Vec<u32> = seq[..l].to_vec();
        let labels: Vec<i64> = labels[1..].to_vec();
        if self.random_non_queries {
            self.fill(&mut inputs, &roles, &keys, rng);
        }
        (inputs, labels, roles)
    }

    /// Filler tokens for the positions whose role is filler: uniform in `[0, V)` (Zoology) or,
    /// with a shared vocabulary, in `[1, V)` without the sequence's keys.
    fn fill(&self, inputs: &mut [u32], roles: &[TokenRole], keys: &[u32], rng: &mut impl Rng) {
        let v = self.vocab_size as u32;
        let keys = &self.key_tokens(keys);
        let shared = self.vocab == VocabSplit::Shared || self.layout != Layout::Block;
        for (x, r) in inputs.iter_mut().zip(roles) {
            if *r != TokenRole::Filler {
                continue;
            }
            *x = if shared {
                loop {
                    let t = rng.random_range(1..v);
                    if !keys.contains(&t) {
                        break t;
                    }
                }
            } else {
                rng.random_range(0..v)
            };
        }
    }

    /// Scattered, updates and restated layouts: a random order of events — assignments (key,
    /// value: two tokens), restatements (the key's pair again) and queries (a key: one token,
    /// labelled with its latest value) — each key's first assignment before its other events,
    /// placed at uniformly random positions with filler between (every arrangement of events and
    /// filler equally likely).
    fn event_example(&self, d: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<i64>, Vec<TokenRole>) {
        #[derive(Clone, Copy)]
        enum Event {
            Assign(usize),
            Restate(usize),
            Query(usize),
        }
        let l = self.seq_len;
        let u = self.updates(d);
        let (keys, values) = self.draw_tokens(d, u, rng);
        // The event order: each key's first assignment, then its other events, in a random
        // interleaving. Re-assignments pick random keys; each key is queried once — or, restated,
        // only the restated keys, each after its restatement.
        let mut per_key: Vec<Vec<Event>> = (0..d).map(|k| vec![Event::Assign(k)]).collect();
        let mut tails: Vec<Vec<Event>> = if self.layout == Layout::Restated {
            let restated = sample(rng, d, self.restated(d));
            let mut tails = vec![Vec::new(); d];
            for k in restated {
                // The restatement, then the query (the shuffle below leaves this tail alone).
                tails[k] = vec![Event::Restate(k), Event::Query(k)];
            }
            tails
        } else {
            (0..d).map(|k| vec![Event::Query(k)]).collect()
        };
        for _ in 0..u {
            let k = rng.random_range(0..d);
            tails[k].push(Event::Assign(k));
        }
        for (k, tail) in tails.iter_mut().enumerate() {
            // Shuffle the key's later events so a query may come before or after re-assignments
            // (a restatement keeps its place before its query).
            if self.layout != Layout::Restated {
                for i in (1..tail.len()).rev() {
                    tail.swap(i, rng.random_range(0..=i));
                }
            }
            per_key[k].append(tail);
        }
        let total: usize = per_key.iter().map(Vec::len).sum();
        let mut order = Vec::with_capacity(total);
        let mut next = vec![0usize; d];
        for n in (1..=total).rev() {
            // Pick a key with probability proportional to its events left: a uniform interleaving.
            let mut r = rng.random_range(0..n);
            let k = (0..d)
                .find(|&k| {
                    let left = per_key[k].len() - next[k];
                    if r < left {
                        true
                    } else {
                        r -= left;
                        false
                    }
                })
                .expect("some key has events left");
            order.push(per_key[k][next[k]]);
            next[k] += 1;
        }
        // Positions: choose which of the (filler + events) slots hold events; an assignment takes
        // two tokens, a query one.
        let tokens: usize = order.iter().map(|e| if matches!(e, Event::Query(_)) { 1 } else { 2 }).sum();
        let slots = l - tokens + order.len();
        let mut picks: Vec<usize> = sample(rng, slots, order.len()).into_vec();
        picks.sort_unstable();
        let mut inputs = vec![0u32; l];
        let mut labels = vec![IGNORE; l];
        let mut roles = vec![TokenRole::Filler; l];
        let mut latest: Vec<Option<(usize, u32)>> = vec![None; d];
        let (mut shift, mut next_value) = (0usize, 0usize);
        for (event, slot) in order.iter().zip(picks) {
            let p = slot + shift;
            match *event {
                Event::Assign(k) => {
                    if let Some((old, _)) = latest[k] {
                        roles[old] = TokenRole::Stale;
                        roles[old + 1] = TokenRole::Stale;
                    }
                    let value = values[next_value];
                    next_value += 1;
                    inputs[p] = self.key_form(keys[k], rng);
                    inputs[p + 1] = value;
                    roles[p] = TokenRole::Key;
                    roles[p + 1] = TokenRole::Value;
                    latest[k] = Some((p, value));
                    shift += 1;
                }
                Event::Restate(k) => {
                    let (first, value) = latest[k].expect("a key is stated before it is restated");
                    inputs[p] = self.key_form(keys[k], rng);
                    inputs[p + 1] = value;
                    roles[p] = TokenRole::Key;
                    roles[p + 1] = TokenRole::Restated;
                    debug_assert_eq!(roles[first], TokenRole::Key);
                    shift += 1;
                }
                Event::Query(k) => {
                    let (_, value) = latest[k].expect("a key is assigned before it is queried");
                    inputs[p] = self.key_form(keys[k], rng);
                    labels[p] = value as i64;
                    roles[p] = TokenRole::Query;
                }
            }
        }
        if self.layout == Layout::Restated {
            // Pairs never restated are never queried: distractors.
            for k in 0..d {
                if let Some((p, _)) = latest[k].filter(|_| !per_key[k].iter().any(|e| matches!(e, Event::Query(_)))) {
                    roles[p] = TokenRole::Distractor;
                    roles[p + 1] = TokenRole::Distractor;
                }
            }
        }
        if self.random_non_queries {
            self.fill(&mut inputs, &roles, &keys, rng);
        }
        (inputs, labels, roles)
    }

    /// Batch `index` of `split`: example `index·batch_size + i` is drawn from an RNG seeded by
    /// (seed, split, example number), so a held-out set does not depend on the batch size.
    pub fn batch(&self, seed: u64, split: Split, index: u64, batch_size: usize) -> Batch {
        let mut batch = Batch {
            inputs: Vec::with_capacity(batch_size * self.seq_len),
            labels: Vec::with_capacity(batch_size * self.seq_len),
            batch_size,
            seq_len: self.seq_len,
            difficulty: Vec::with_capacity(batch_size),
            roles: Vec::with_capacity(batch_size * self.seq_len),
        };
        for i in 0..batch_size {
            let mut rng = rng_for(seed, split, index * batch_size as u64 + i as u64);
            let d = self.num_kv_pairs[rng.random_range(0..self.num_kv_pairs.len())];
            let (x, y, roles) = self.example(d, &mut rng);
            batch.inputs.extend(x);
            batch.labels.extend(y);
            batch.roles.extend(roles);
            batch.difficulty.push(Some(d));
        }
        batch
    }
}

/// D distinct gaps from `0..space`, drawn one by one without replacement with weights
/// `a·(g+1)^(a−1)` renormalised over the gaps not yet taken (numpy's `choice(replace=False, p)`
/// keeps first appearances of i.i.d. draws, which has the same distribution).
fn power_law_gaps(space: usize, d: usize, a: f64, rng: &mut impl Rng) -> Vec<usize> {
    let mut weights: Vec<f64> = (1..=space).map(|i| a * (i as f64).powf(a - 1.0)).collect();
    let mut gaps = Vec::with_capacity(d);
    for _ in 0..d {
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = weights.iter().rposition(|w| *w > 0.0).expect("enough gaps remain");
        for (g, w) in weights.iter().enumerate() {
            if u < *w {
                pick = g;
                break;
            }
            u -= w;
        }
        weights[pick] = 0.0;
        gaps.push(pick);
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(d: usize) -> MqarConfig {
        MqarConfig { num_kv_pairs: vec![d], ..MqarConfig::default() }
    }

    #[test]
    fn examples_follow_zoology_layout() {
        let c = MqarConfig { random_non_queries: false, ..cfg(8) };
        let b = c.batch(5, Split::Train, 0, 16);
        for s in 0..16 {
            let x = &b.inputs[s * 128..(s + 1) * 128];
            let y = &b.labels[s * 128..(s + 1) * 128];
            let keys: Vec<u32> = (0..8).map(|j| x[2 * j]).collect();
            let vals: Vec<u32> = (0..8).map(|j| x[2 * j + 1]).collect();
            assert!(keys.iter().all(|&k| (1..4096).contains(&k)));
            assert!(vals.iter().all(|&v| (4096..8192).contains(&v)));
            let mut uniq = keys.clone();
            uniq.sort();
            uniq.dedup();
            assert_eq!(uniq.len(), 8, "keys are distinct");
            let labelled: Vec<usize> = (0..128).filter(|&i| y[i] != IGNORE).collect();
            assert_eq!(labelled.len(), 8);
            for &i in &labelled {
                assert!(i >= 16 && (i - 16) % 2 == 0, "queries sit at C + 2·gap");
                let j = keys.iter().position(|&k| k == x[i]).expect("query is a context key");
                assert_eq!(y[i], vals[j] as i64, "label is the key's value");
            }
            let r = &b.roles[s * 128..(s + 1) * 128];
            for i in 0..128 {
                let want = if i < 16 {
                    if i % 2 == 0 { TokenRole::Key } else { TokenRole::Value }
                } else if y[i] != IGNORE {
                    TokenRole::Query
                } else {
                    TokenRole::Filler
                };
                assert_eq!(r[i], want, "role of position {i}");
            }
            // Without random fill, every other query-region token is 0.
            assert_eq!(x[16..].iter().filter(|&&t| t != 0).count(), 8);
        }
    }

    #[test]
    fn random_placement_moves_the_block_and_keeps_every_label_recallable() {
        let c = MqarConfig { kv_placement: KvPlacement::Random, ..cfg(8) };
        let b = c.batch(9, Split::Train, 0, 64);
        let mut offsets = std::collections::BTreeSet::new();
        for s in 0..64 {
            let x = &b.inputs[s * 128..(s + 1) * 128];
            let y = &b.labels[s * 128..(s + 1) * 128];
            let labelled: Vec<usize> = (0..128).filter(|&i| y[i] != IGNORE).collect();
            assert_eq!(labelled.len(), 8);
            // The block is the 8 (key, value) pairs just before the first query's earliest key.
            let first_query = labelled[0];
            let o = (0..first_query).step_by(2).find(|&o| {
                (0..8).all(|j| (1..4096).contains(&x[o + 2 * j]) && (4096..8192).contains(&x[o + 2 * j + 1]))
                    && labelled.iter().all(|&i| (0..8).any(|j| x[o + 2 * j] == x[i] && y[i] == x[o + 2 * j + 1] as i64))
            });
            let o = o.expect("every query's key and value appear as a pair in an earlier block");
            assert!(o % 2 == 0 && o <= 128 - 32 && labelled.iter().all(|&i| i >= o + 16));
            offsets.insert(o);
        }
        assert!(offsets.len() > 10, "offsets vary: {offsets:?}");
    }

    #[test]
    fn random_fill_replaces_only_zeros_and_batches_are_deterministic() {
        let c = cfg(8);
        let a = c.batch(5, Split::Train, 3, 4);
        assert_eq!(a, c.batch(5, Split::Train, 3, 4));
        assert_ne!(a, c.batch(5, Split::Train, 4, 4));
        assert_ne!(a.inputs, c.batch(5, Split::Valid, 3, 4).inputs);
        let whole = c.batch(5, Split::Valid, 0, 8);
        let halves = [c.batch(5, Split::Valid, 0, 4), c.batch(5, Split::Valid, 1, 4)];
        assert_eq!(whole.inputs, [halves[0].inputs.clone(), halves[1].inputs.clone()].concat());
        assert_eq!(a.labelled(), 32);
        assert!(a.inputs.iter().all(|&t| t < 8192));
    }

    #[test]
    fn gaps_are_power_law_heavy_at_small_gaps() {
        let c = cfg(1);
        let mut rng = rng_for(1, Split::Train, 0);
        let mut first = 0;
        for _ in 0..4000 {
            let g = power_law_gaps(56, 1, c.power_a, &mut rng)[0];
            first += (g == 0) as usize;
        }
        // p(gap = 0) = 1 / Σ_{i≤56} i^(−0.99) ≈ 0.2153
        let expect: f64 = 1.0 / (1..=56).map(|i| (i as f64).powf(-0.99)).sum::<f64>();
        let got = first as f64 / 4000.0;
        assert!((got - expect).abs() < 0.03, "p(gap=0) = {got}, expected {expect}");
    }

    #[test]
    fn mixed_draws_each_difficulty_and_bad_configs_fail() {
        let c = MqarConfig { seq_len: 256, num_kv_pairs: vec![4, 16, 32], ..MqarConfig::default() };
        c.validate().unwrap();
        let b = c.batch(1, Split::Train, 0, 60);
        for d in [4, 16, 32] {
            assert!(b.difficulty.contains(&Some(d)));
        }
        for s in 0..60 {
            let d = b.difficulty[s].unwrap();
            assert_eq!(b.labels[s * 256..(s + 1) * 256].iter().filter(|&&l| l != IGNORE).count(), d);
        }
        assert!(cfg(40).validate().is_err());
        assert!(MqarConfig { vocab_size: 100, ..cfg(8) }.validate().is_err());
    }

    /// Checks every sequence of a batch against what the layouts promise: a query's label is
    /// the value of the latest assignment of its key before it, assignments are (key, value)
    /// pairs with those roles, and filler never repeats a key (no ambiguity).
    fn check_recall(c: &MqarConfig, b: &Batch) {
        let l = c.seq_len;
        // Under aliases a key is its pair of forms.
        let class = |t: u32| c.key_class(t);
        for s in 0..b.batch_size {
            let (x, y, r) =
                (&b.inputs[s * l..(s + 1) * l], &b.labels[s * l..(s + 1) * l], &b.roles[s * l..(s + 1) * l]);
            let mut latest = std::collections::HashMap::new();
            let mut i = 0;
            while i < l {
                match r[i] {
                    TokenRole::Key | TokenRole::Stale | TokenRole::Distractor => {
                        assert!(
                            matches!(r[i + 1], TokenRole::Value | TokenRole::Stale | TokenRole::Restated)
                                || r[i + 1] == r[i],
                            "a key is followed by its value"
                        );
                        if r[i + 1] == TokenRole::Restated {
                            assert_eq!(latest.get(&class(x[i])), Some(&x[i + 1]), "a restatement repeats its pair");
                        }
                        latest.insert(class(x[i]), x[i + 1]);
                        i += 2;
                        continue;
                    }
                    TokenRole::Query => {
                        let v = latest.get(&class(x[i])).expect("a query's key was assigned before");
                        assert_eq!(y[i], *v as i64, "the label is the latest value");
                    }
                    TokenRole::Filler => {
                        assert!(
                            !latest.contains_key(&class(x[i])) && y[i] == IGNORE,
                            "filler repeats no key and is unlabelled"
                        );
                        if c.random_non_queries {
                            let keys: Vec<u32> =
                                (0..l).filter(|&j| r[j] == TokenRole::Query).map(|j| class(x[j])).collect();
                            assert!(!keys.contains(&class(x[i])), "filler repeats no key");
                        }
                    }
                    TokenRole::Value | TokenRole::Restated => panic!("a value without its key at {i}"),
                }
                i += 1;
            }
        }
    }

    #[test]
    fn shared_vocabulary_gives_no_id_tell() {
        let c = MqarConfig { vocab: VocabSplit::Shared, kv_placement: KvPlacement::Anywhere, ..cfg(8) };
        c.validate().unwrap();
        let b = c.batch(2, Split::Train, 0, 400);
        check_recall(&c, &b);
        let (mut keys, mut values, mut parity) = (Vec::new(), Vec::new(), [0usize; 2]);
        for s in 0..400 {
            for i in 0..128 {
                match b.roles[s * 128 + i] {
                    TokenRole::Key => {
                        keys.push(b.inputs[s * 128 + i] as f64);
                        parity[i % 2] += 1;
                    }
                    TokenRole::Value => values.push(b.inputs[s * 128 + i] as f64),
                    _ => {}
                }
            }
        }
        let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
        // Both uniform on [1, V): means near V/2 and each other (3200 draws, sd ≈ V/√12/√3200).
        assert!((mean(&keys) - mean(&values)).abs() < 0.03 * 8192.0, "{} vs {}", mean(&keys), mean(&values));
        assert!(keys.iter().chain(&values).all(|&t| (1.0..8192.0).contains(&t)));
        assert!(keys.iter().any(|&k| k >= 4096.0) && values.iter().any(|&v| v < 4096.0));
        // Offsets of both parities: keys sit at even and at odd positions.
        assert!(parity[0] > 800 && parity[1] > 800, "{parity:?}");
    }

    #[test]
    fn scattered_pairs_are_anywhere_and_each_query_follows_its_pair() {
        let c = MqarConfig { vocab: VocabSplit::Shared, layout: Layout::Scattered, seq_len: 256, ..cfg(8) };
        c.validate().unwrap();
        let b = c.batch(4, Split::Valid, 0, 200);
        check_recall(&c, &b);
        // A vocabulary smaller than the length is fine while the pairs' tokens fit (not for
        // Zoology's block layout), and the sequences keep every promise.
        let small = MqarConfig { vocab_size: 20, ..c.clone() };
        small.validate().unwrap();
        check_recall(&small, &small.batch(4, Split::Valid, 0, 200));
        assert!(MqarConfig { vocab_size: 17, ..c.clone() }.validate().is_err());
        assert!(MqarConfig { layout: Layout::Block, vocab_size: 200, ..c.clone() }.validate().is_err());
        let mut first_key = Vec::new();
        for s in 0..200 {
            let r = &b.roles[s * 256..(s + 1) * 256];
            assert_eq!(r.iter().filter(|&&x| x == TokenRole::Key).count(), 8);
            assert_eq!(r.iter().filter(|&&x| x == TokenRole::Query).count(), 8);
            assert_eq!(b.labels[s * 256..(s + 1) * 256].iter().filter(|&&y| y != IGNORE).count(), 8);
            first_key.push(r.iter().position(|&x| x == TokenRole::Key).unwrap());
            // Pairs are not one block: some filler lies between the first and the last key.
            let keys: Vec<usize> = (0..256).filter(|&i| r[i] == TokenRole::Key).collect();
            assert!(keys[7] - keys[0] > 14 || s > 190, "a block at {keys:?}");
        }
        first_key.sort_unstable();
        assert!(first_key[150] > 10, "the first pair is not pinned to the start: {first_key:?}");
    }

    #[test]
    fn restated_pairs_alone_are_queried_after_their_restatement() {
        let c = MqarConfig {
            vocab: VocabSplit::Shared,
            layout: Layout::Restated,
            restated_fraction: 0.25,
            vocab_size: 64,
            seq_len: 256,
            num_kv_pairs: vec![16],
            ..MqarConfig::default()
        };
        c.validate().unwrap();
        let b = c.batch(3, Split::Valid, 0, 200);
        check_recall(&c, &b);
        let (mut first_pair_at, mut restated_gap) = (Vec::new(), Vec::new());
        for s in 0..200 {
            let (x, r, y) = (
                &b.inputs[s * 256..(s + 1) * 256],
                &b.roles[s * 256..(s + 1) * 256],
                &b.labels[s * 256..(s + 1) * 256],
            );
            let count = |role| r.iter().filter(|&&t| t == role).count();
            // D = 16 pairs: 4 restated and queried (key, value, the key again, its value again,
            // query), 12 distractors.
            assert_eq!((count(TokenRole::Key), count(TokenRole::Value)), (8, 4));
            assert_eq!((count(TokenRole::Restated), count(TokenRole::Query)), (4, 4));
            assert_eq!(count(TokenRole::Distractor), 24);
            assert_eq!(y.iter().filter(|&&t| t != IGNORE).count(), 4);
            for q in (0..256).filter(|&i| r[i] == TokenRole::Query) {
                // The query's key occurs exactly twice before it, both times followed by the answer.
                let before: Vec<usize> = (0..q).filter(|&i| x[i] == x[q]).collect();
                assert_eq!(before.len(), 2, "stated, restated");
                assert!(before.iter().all(|&i| x[i + 1] as i64 == y[q]));
                assert_eq!((r[before[0] + 1], r[before[1] + 1]), (TokenRole::Value, TokenRole::Restated));
                restated_gap.push(before[1] - before[0]);
            }
            for d in (0..256).filter(|&i| r[i] == TokenRole::Distractor).step_by(2) {
                assert_eq!((0..256).filter(|&i| x[i] == x[d]).count(), 1, "a distractor key occurs once");
            }
            first_pair_at.push((0..256).find(|&i| r[i] != TokenRole::Filler).unwrap());
        }
        // Nothing pins the pairs or their restatements to a place.
        restated_gap.sort_unstable();
        assert!(restated_gap[0] < 20 && restated_gap[restated_gap.len() - 1] > 150, "{restated_gap:?}");
        assert!(first_pair_at.iter().any(|&p| p > 20));
        assert!(MqarConfig { restated_fraction: 0.0, ..c.clone() }.validate().is_err());
        assert!(MqarConfig { num_kv_pairs: vec![40], seq_len: 128, ..c.clone() }.validate().is_err());
    }

    #[test]
    fn updates_answer_with_the_latest_value_and_mark_stale_pairs() {
        let c = MqarConfig {
            vocab: VocabSplit::Shared,
            layout: Layout::Updates,
            update_fraction: 1.0,
            seq_len: 256,
            num_kv_pairs: vec![4, 8],
            ..MqarConfig::default()
        };
        c.validate().unwrap();
        let b = c.batch(7, Split::Train, 0, 200);
        check_recall(&c, &b);
        let (mut stale, mut answered_by_update) = (0, 0);
        for s in 0..200 {
            let d = b.difficulty[s].unwrap();
            let (x, r) = (&b.inputs[s * 256..(s + 1) * 256], &b.roles[s * 256..(s + 1) * 256]);
            let assignments = r.iter().filter(|&&t| t == TokenRole::Key).count()
                + r.iter().filter(|&&t| t == TokenRole::Stale).count() / 2;
            assert_eq!(assignments, 2 * d, "D assignments and D re-assignments");
            stale += r.iter().filter(|&&t| t == TokenRole::Stale).count();
            for q in (0..256).filter(|&i| r[i] == TokenRole::Query) {
                let first = (0..q).find(|&i| x[i] == x[q] && r[i] != TokenRole::Query).unwrap();
                answered_by_update += (b.labels[s * 256 + q] != x[first + 1] as i64) as usize;
            }
        }
        assert!(
            stale > 0 && answered_by_update > 100,
            "stale tokens {stale}, answers from updates {answered_by_update}"
        );
        // Too many events for the length, or a block placement on another layout, are errors.
        assert!(MqarConfig { seq_len: 16, ..c.clone() }.validate().is_err());
        assert!(MqarConfig { kv_placement: KvPlacement::Random, ..c }.validate().is_err());
    }

    #[test]
    fn aliases_bring_keys_back_under_either_form_and_filler_never_uses_one() {
        let c = MqarConfig {
            vocab_size: 64,
            vocab: VocabSplit::Shared,
            layout: Layout::Updates,
            update_fraction: 1.0,
            seq_len: 512,
            num_kv_pairs: vec![8, 12, 15],
            aliases: true,
            ..MqarConfig::default()
        };
        c.validate().unwrap();
        // The pairing: 1 ↔ 32, 31 ↔ 62; 63 (and 0) have no partner.
        assert_eq!(
            (c.partner(1), c.partner(32), c.partner(31), c.partner(62)),
            (Some(32), Some(1), Some(62), Some(31))
        );
        assert_eq!((c.partner(63), c.partner(0)), (None, None));
        let b = c.batch(3, Split::Train, 0, 100);
        check_recall(&c, &b);
        // Per returning occurrence of a key (re-assignment or query): is it the form its
        // previous occurrence had? Token equality sees only those.
        let (mut same, mut other) = (0usize, 0usize);
        for s in 0..100 {
            let (x, r) = (&b.inputs[s * 512..(s + 1) * 512], &b.roles[s * 512..(s + 1) * 512]);
            let mut last: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
            let mut i = 0;
            while i < 512 {
                let key = matches!(r[i], TokenRole::Key | TokenRole::Stale | TokenRole::Query);
                if key {
                    let class = c.partner(x[i]).expect("keys have two forms").min(x[i]);
                    if let Some(prev) = last.insert(class, x[i]) {
                        if prev == x[i] { same += 1 } else { other += 1 }
                    }
                }
                // An assignment is two tokens (key, value); a query one.
                i += if key && r[i] != TokenRole::Query { 2 } else { 1 };
            }
            // Filler and values use neither form of any key of the sequence.
            let keys: Vec<u32> = (0..512).filter(|&i| r[i] == TokenRole::Query).map(|i| x[i]).collect();
            for i in (0..512).filter(|&i| matches!(r[i], TokenRole::Filler | TokenRole::Value)) {
                assert!(keys.iter().all(|&k| x[i] != k && Some(x[i]) != c.partner(k)), "token {} at {i}", x[i]);
            }
        }
        let frac = other as f64 / (same + other) as f64;
        assert!((0.4..0.6).contains(&frac), "{other} of {} returns change form", same + other);
        // Aliases need the shared vocabulary and an event layout, and room for both forms.
        assert!(MqarConfig { layout: Layout::Block, ..c.clone() }.validate().is_err());
        assert!(MqarConfig { vocab: VocabSplit::Split, ..c.clone() }.validate().is_err());
        assert!(MqarConfig { vocab_size: 48, ..c.clone() }.validate().is_err());
        // Without aliases the generator draws exactly what it drew before the option
        // (fingerprint of the first held-out batch taken with the previous generator).
        let plain = MqarConfig { aliases: false, ..c };
        let b = plain.batch(0, Split::Valid, 0, 4);
        let sum: u64 = b.inputs.iter().enumerate().map(|(i, &t)| (i as u64 + 1) * t as u64).sum::<u64>()
            + b.labels.iter().enumerate().map(|(i, &t)| (i as u64 + 1) * (t + 100) as u64).sum::<u64>();
        assert_eq!(sum, 73_144_923, "the updates generator changed");
    }

    #[test]
    fn zoology_sequences_are_unchanged_by_the_new_options() {
        // The default block layout with the split vocabulary (start, random offset, mixed D)
        // draws exactly what it drew before the variants existed: fingerprints of the first
        // held-out batch taken with the previous generator.
        let configs = [
            cfg(8),
            MqarConfig { kv_placement: KvPlacement::Random, ..cfg(8) },
            MqarConfig { seq_len: 256, num_kv_pairs: vec![4, 16, 32], ..MqarConfig::default() },
        ];
        for (c, want) in configs.iter().zip([570_113_914u64, 578_435_399, 2_338_313_372]) {
            let b = c.batch(0, Split::Valid, 0, 4);
            let sum: u64 = b.inputs.iter().enumerate().map(|(i, &t)| (i as u64 + 1) * t as u64).sum::<u64>()
                + b.labels.iter().enumerate().map(|(i, &t)| (i as u64 + 1) * (t + 100) as u64).sum::<u64>();
            assert_eq!(sum, want, "the generator changed for {c:?}");
        }
    }
}
