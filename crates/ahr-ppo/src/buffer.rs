//! The rollout buffer: chunks from the workers flattened in `[step][env][stream]` order, with GAE
//! advantages and returns computed per environment row.

use ahr_env::EpisodeStats;
use ahr_policy::ObsBatch;

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

pub(crate) fn flatten(chunks: Vec<Chunk>, heads: usize, gamma: f64, lambda: f64) -> Rollout {
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
    for t in 0..steps {
        for c in &chunks {
            r.obs.extend(&c.obs[t]);
            let rows = t * c.rows..(t + 1) * c.rows;
            r.actions.extend_from_slice(&c.actions[rows.start * heads..rows.end * heads]);
            r.logprobs.extend_from_slice(&c.logprobs[rows.clone()]);
            r.values.extend_from_slice(&c.values[rows.clone()]);
            rewards.extend_from_slice(&c.rewards[rows.clone()]);
            dones.extend_from_slice(&c.dones[rows]);
        }
    }
    let next_value: Vec<f32> = chunks.iter().flat_map(|c| c.next_value.iter().copied()).collect();
    let next_done: Vec<bool> = chunks.iter().flat_map(|c| c.next_done.iter().copied()).collect();
    (r.advantages, r.returns) = gae(&rewards, &r.values, &dones, &next_value, &next_done, n, gamma, lambda);
    r.episodes = chunks.into_iter().flat_map(|c| c.episodes).collect();
    r
}

pub(crate) fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}
