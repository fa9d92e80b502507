//! Building environments from an env spec: the one place that decides which environment an env
//! file and a policy's observation window ask for, and that a task fits a model.

use std::path::Path;

use ahr_policy::Granularity;
use ahr_tasks::Task;
use ahr_tpa::{Model, ModelConfig};
use burn::tensor::Device;

use crate::history::History;
use crate::layer::LayerEnv;
use crate::rank::RankEnv;
use crate::spec::EnvSpec;
use crate::vec_env::VecEnv;

/// A rank environment of the spec's granularity (`held_out`: episodes from the held-out set),
/// stacking the last `window` observations when the policy attends over them.
pub fn make_env(
    model: &Model,
    task: &Task,
    spec: &EnvSpec,
    held_out: bool,
    window: usize,
    dev: &Device,
) -> Box<dyn VecEnv> {
    let (m, t, r, s, d) = (model.clone(), task.clone(), spec.reward.clone(), spec.env.streams, dev.clone());
    let (v, p) = (spec.env.obs_version, spec.env.positions_seen);
    let rank = |m, t, r, s, d| {
        let env = RankEnv::new(m, t, r, s, d).with_obs_version(v).with_positions_seen(p).with_pairs(spec.env.paired);
        let env = match spec.env.evict {
            Some(eviction) => env.with_eviction(eviction),
            None => env,
        };
        match spec.env.review {
            Some(at) => env.with_review(at),
            None => env,
        }
    };
    let env: Box<dyn VecEnv> = match (spec.env.granularity, held_out) {
        (Granularity::PerToken, false) => Box::new(rank(m, t, r, s, d)),
        (Granularity::PerToken, true) => Box::new(rank(m, t, r, s, d).held_out()),
        (Granularity::PerLayer, held_out) => {
            let env = LayerEnv::new(m, t, r, s, d).with_obs_version(v).with_positions_seen(p);
            Box::new(if held_out { env.held_out() } else { env })
        }
    };
    if window > 1 { Box::new(History::new(env, window)) } else { env }
}

/// The env spec's task, checked against the model's vocabulary; `env_path` names the file in
/// messages.
pub fn load_task(spec: &EnvSpec, env_path: &Path, model: &ModelConfig) -> Result<Task, String> {
    let task = Task::load(&spec.task).map_err(|e| format!("{}: cannot load the task: {e}", env_path.display()))?;
    if task.vocab_needed() > model.vocab_size {
        return Err(format!(
            "{} needs a vocabulary of at least {} but the model has vocab_size = {}",
            env_path.display(),
            task.vocab_needed(),
            model.vocab_size
        ));
    }
    Ok(task)
}
