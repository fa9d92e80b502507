//! Deterministic evaluation of a trained policy: argmax over valid options, no exploration.

use ahr_env::{EpisodeStats, VecEnv};
use ahr_policy::dist::argmax_host;
use ahr_policy::{ActorCritic, MaskedMultiCategorical, RunningNorm};
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
    let options = env.options();
    let mut obs = env.reset(seed);
    let mut done = Vec::new();
    while done.len() < episodes {
        let t = net.obs_tensors(&obs, norm, device);
        let dist = MaskedMultiCategorical::new(net.logits(&t), t.masks.clone());
        let actions = argmax_host(&dist.probs_host(), options);
        let step = env.step(&actions);
        done.extend(step.episodes);
        obs = step.obs;
    }
    done.truncate(episodes);
    done
}
