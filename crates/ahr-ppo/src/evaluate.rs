//! Evaluation without learning: a trained policy's deterministic decisions (argmax over valid
//! options), or any other rule that maps observations to actions, run to a number of episodes.

use ahr_env::{EpisodeStats, VecEnv};
use ahr_policy::{ActorCritic, ObsBatch, RunningNorm};
use burn::tensor::Device;

/// Run `env` with the policy's most probable options until `episodes` episodes have finished.
pub fn evaluate_deterministic(
    env: &mut dyn VecEnv,
    net: &ActorCritic,
    norm: &RunningNorm,
    episodes: usize,
    seed: u64,
    device: &Device,
) -> Vec<EpisodeStats> {
    evaluate_with(env, episodes, seed, |obs| net.act_deterministic(obs, norm, device))
}

/// Run `env` with actions from `act` (one menu index per row and head) until `episodes`
/// episodes have finished; returns the first `episodes` in finishing order.
pub fn evaluate_with(
    env: &mut dyn VecEnv,
    episodes: usize,
    seed: u64,
    mut act: impl FnMut(&ObsBatch) -> Vec<usize>,
) -> Vec<EpisodeStats> {
    let mut obs = env.reset(seed);
    let mut done = Vec::new();
    while done.len() < episodes {
        let step = env.step(&act(&obs));
        done.extend(step.episodes);
        obs = step.obs;
    }
    done.truncate(episodes);
    done
}
