//! Evaluation without learning: a trained policy's deterministic decisions (argmax over valid
//! options), or any other rule that maps observations to actions, run to a number of episodes.

use ahr_env::{EnvError, EpisodeStats, VecEnv, run_episodes};
use ahr_policy::{ActorCritic, RunningNorm};
use burn::tensor::Device;

/// Run `env` with the policy's most probable options until `episodes` episodes have finished.
pub fn evaluate_deterministic(
    env: &mut dyn VecEnv,
    net: &ActorCritic,
    norm: &RunningNorm,
    episodes: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<EpisodeStats>, EnvError> {
    run_episodes(env, episodes, seed, |obs| net.act_deterministic(obs, norm, device))
}
