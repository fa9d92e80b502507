//! The rollout buffer: chunks from the workers flattened in `[step][env][stream]` order, with GAE
//! advantages and returns computed per environment row.

use ahr_env::EpisodeStats;
use ahr_policy::ObsBatch;

use crate::config::{AdvantageBaseline, Credit, PpoConfig};
use crate::gae::gae;
use crate::workers::Chunk;

/// The flattened rollout of one iteration, rows ordered `[step][env][stream]`.
pub(crate) struct Rollout {
    pub(crate) obs: ObsBatch,
    pub(crate) actions: Vec<usize>,
    pub(crate) logprobs: Vec<f32>,
    pub(crate) values: Vec<f32>,
    pub(crate) advantages: Vec<f32>,
    pub(crate) returns: Vec<f32>,
    pub(crate) episodes: Vec<EpisodeStats>,
}

/// Flatten `chunks` and estimate advantages. With [`Credit::Split`] each reward's immediate part
/// is credited to its own step only: GAE runs on the rest (what the value learns), and the
/// immediate part is added to that step's advantage.
/// With [`AdvantageBaseline::Partner`] the advantage of row i is its return-to-go less its
/// partner's (row i ^ 1, the same sequence).
pub(crate) fn flatten(chunks: Vec<Chunk>, heads: usize, cfg: &PpoConfig) -> Rollout {
    let (gamma, lambda, credit) = (cfg.gamma, cfg.gae_lambda, cfg.credit);
    let n: usize = chunks.iter().map(|c| c.rows).sum();
    let steps = chunks.first().map_or(0, |c| c.obs.len());
    let mut r = Rollout {
        obs: ObsBatch::default(),
        actions: Vec::with_capacity(steps * n * heads),
        logprobs: Vec::with_capacity(steps * n),
        values: Vec::with_capacity(steps * n),
        advantages: Vec::new(),
        returns: Vec::new(),
        episodes: Vec::new(),
    };
    let (mut rewards, mut dones) = (Vec::with_capacity(steps * n), Vec::with_capacity(steps * n));
    let mut immediate = Vec::with_capacity(steps * n);
    for t in 0..steps {
        for c in &chunks {
            r.obs.extend(&c.obs[t]);
            let rows = t * c.rows..(t + 1) * c.rows;
            r.actions.extend_from_slice(&c.actions[rows.start * heads..rows.end * heads]);
            r.logprobs.extend_from_slice(&c.logprobs[rows.clone()]);
            r.values.extend_from_slice(&c.values[rows.clone()]);
            rewards.extend_from_slice(&c.rewards[rows.clone()]);
            immediate.extend_from_slice(&c.immediate[rows.clone()]);
            dones.extend_from_slice(&c.dones[rows]);
        }
    }
    let next_value: Vec<f32> = chunks.iter().flat_map(|c| c.next_value.iter().copied()).collect();
    let next_done: Vec<bool> = chunks.iter().flat_map(|c| c.next_done.iter().copied()).collect();
    if credit == Credit::Split {
        for (r, i) in rewards.iter_mut().zip(&immediate) {
            *r -= i;
        }
    }
    (r.advantages, r.returns) = match cfg.baseline {
        AdvantageBaseline::Value => gae(&rewards, &r.values, &dones, &next_value, &next_done, n, gamma, lambda),
        AdvantageBaseline::Partner => {
            // Returns-to-go: GAE with λ = 1 against zero values, bootstrapped after the last step.
            let (ret, _) = gae(&rewards, &vec![0.0; rewards.len()], &dones, &next_value, &next_done, n, gamma, 1.0);
            ((0..ret.len()).map(|i| ret[i] - ret[i ^ 1]).collect(), ret)
        }
    };
    if credit == Credit::Split {
        for (a, i) in r.advantages.iter_mut().zip(&immediate) {
            *a += i;
        }
    }
    r.episodes = chunks.into_iter().flat_map(|c| c.episodes).collect();
    r
}

pub(crate) fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(rewards: &[f32], immediate: &[f32]) -> Chunk {
        let steps = rewards.len();
        Chunk {
            rows: 1,
            obs: vec![ObsBatch::default(); steps],
            actions: vec![0; steps],
            logprobs: vec![0.0; steps],
            values: vec![0.0; steps],
            rewards: rewards.to_vec(),
            immediate: immediate.to_vec(),
            dones: vec![false; steps],
            next_value: vec![0.0],
            next_done: vec![true],
            ..Default::default()
        }
    }

    #[test]
    fn split_credit_gives_each_immediate_reward_to_its_own_step_only() {
        // Rewards 1, 2, 3 of which 0.5, 0, 1 are immediate; values 0; γ = λ = 1; the episode ends.
        // Return credit: advantages are the returns-to-go 6, 5, 3.
        // Split: GAE on 0.5, 2, 2 gives 4.5, 4, 2 (what the value learns); adding each step's own
        // immediate part gives 5, 4, 3.
        let (rewards, immediate) = ([1.0, 2.0, 3.0], [0.5, 0.0, 1.0]);
        let cfg = |credit| PpoConfig { gamma: 1.0, gae_lambda: 1.0, credit, ..Default::default() };
        let whole = flatten(vec![chunk(&rewards, &immediate)], 1, &cfg(Credit::Return));
        assert_eq!(whole.advantages, [6.0, 5.0, 3.0]);
        assert_eq!(whole.returns, [6.0, 5.0, 3.0]);
        let split = flatten(vec![chunk(&rewards, &immediate)], 1, &cfg(Credit::Split));
        assert_eq!(split.advantages, [5.0, 4.0, 3.0]);
        assert_eq!(split.returns, [4.5, 4.0, 2.0]);
    }

    #[test]
    fn a_partner_baseline_is_the_partner_stream_return_to_go() {
        // Two paired rows over 3 steps, γ = 0.5; row 0 is rewarded 1, 0, 2, row 1 0, 0, 4. An
        // episode starts at step 2 (dones), and after the last step the rollout is cut mid-episode
        // (values 2 and 6 bootstrap). Returns-to-go: row 0: step 2: 2 + 0.5·2 = 3, step 1: 0
        // (the episode ended), step 0: 1 + 0.5·0 = 1; row 1: 4 + 0.5·6 = 7, 0, 0.
        let c = Chunk {
            rows: 2,
            obs: vec![ObsBatch::default(); 3],
            actions: vec![0; 6],
            logprobs: vec![0.0; 6],
            values: vec![0.0; 6],
            rewards: vec![1.0, 0.0, 0.0, 0.0, 2.0, 4.0],
            immediate: vec![0.0; 6],
            dones: vec![false, false, false, false, true, true],
            next_value: vec![2.0, 6.0],
            next_done: vec![false, false],
            ..Default::default()
        };
        let cfg = PpoConfig { gamma: 0.5, baseline: AdvantageBaseline::Partner, ..Default::default() };
        let r = flatten(vec![c], 1, &cfg);
        assert_eq!(r.returns, [1.0, 0.0, 0.0, 0.0, 3.0, 7.0]);
        assert_eq!(r.advantages, [1.0, -1.0, 0.0, 0.0, -4.0, 4.0]);
    }
}
