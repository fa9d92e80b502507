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
    /// Where the key-value block sits: at the start (Zoology) or at a random offset.
    #[serde(default)]
    pub kv_placement: KvPlacement,
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
        if v <= l || v < 4 {
            return Err(Error::Config(format!("mqar: vocab_size ({v}) must exceed seq_len ({l})")));
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
        }
        Ok(())
    }

    /// One example of D pairs: (inputs, labels, roles), each of length L.
    pub fn example(&self, d: usize, rng: &mut impl Rng) -> (Vec<u32>, Vec<i64>, Vec<TokenRole>) {
        let (v, l) = (self.vocab_size, self.seq_len);
        let half = v / 2;
        let keys: Vec<u32> = sample(rng, half - 1, d).into_iter().map(|k| (k + 1) as u32).collect();
        let values: Vec<u32> = sample(rng, v - half, d).into_iter().map(|x| (x + half) as u32).collect();
        let c = 2 * d;
        // Zoology's layout draws nothing here, so `start` sequences are unchanged by the option.
        let o = match self.kv_placement {
            KvPlacement::Start => 0,
            KvPlacement::Random => 2 * rng.random_range(0..=(l - 2 * c) / 2),
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
            for x in inputs.iter_mut().filter(|x| **x == 0) {
                *x = rng.random_range(0..v as u32);
            }
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
}
