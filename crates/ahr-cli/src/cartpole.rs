//! CartPole-v1 from the `gmgn` crate (Gymnasium's dynamics and 500-step limit) as a [`VecEnv`],
//! to validate the PPO code on a standard task.

use ahr_env::{EnvError, EpisodeStats, VecEnv, VecStep};
use ahr_policy::{ObsBatch, ObsSpec};
use gmgn::prelude::*;

type CartPole = gmgn::wrappers::TimeLimit<gmgn::envs::classic_control::CartPoleEnv>;

/// `n` CartPole-v1 environments with auto-reset.
pub struct CartPoleVec {
    envs: Vec<CartPole>,
    returns: Vec<f64>,
    lengths: Vec<u64>,
}

impl CartPoleVec {
    /// `n` environments.
    pub fn new(n: usize) -> Self {
        let envs = (0..n)
            .map(|_| {
                let env = gmgn::envs::classic_control::CartPoleEnv::new(Default::default())
                    .expect("CartPole should build with its default config");
                gmgn::wrappers::TimeLimit::new(env, 500)
            })
            .collect();
        Self { envs, returns: vec![0.0; n], lengths: vec![0; n] }
    }

    fn batch(obs: &[Vec<f32>]) -> ObsBatch {
        ObsBatch { features: obs.concat(), tokens: Vec::new(), masks: vec![true; obs.len() * 2], len: obs.len() }
    }
}

impl VecEnv for CartPoleVec {
    fn num_envs(&self) -> usize {
        self.envs.len()
    }

    fn obs_spec(&self) -> ObsSpec {
        ObsSpec::plain(4)
    }

    fn heads(&self) -> usize {
        1
    }

    fn options(&self) -> usize {
        2
    }

    fn reset(&mut self, seed: u64) -> std::result::Result<ObsBatch, EnvError> {
        let obs: Vec<Vec<f32>> = self
            .envs
            .iter_mut()
            .enumerate()
            .map(|(i, e)| e.reset(Some(seed.wrapping_add(i as u64))).map(|r| r.obs).map_err(gym_error))
            .collect::<std::result::Result<_, _>>()?;
        self.returns.iter_mut().for_each(|r| *r = 0.0);
        self.lengths.iter_mut().for_each(|l| *l = 0);
        Ok(Self::batch(&obs))
    }

    fn step(&mut self, actions: &[usize]) -> std::result::Result<VecStep, EnvError> {
        let n = self.envs.len();
        let (mut obs, mut reward, mut done, mut truncated) =
            (Vec::with_capacity(n), vec![0f32; n], vec![false; n], vec![false; n]);
        let mut finals = Vec::new();
        let mut episodes = Vec::new();
        for (i, env) in self.envs.iter_mut().enumerate() {
            let r = env.step(&(actions[i] as i64)).map_err(gym_error)?;
            reward[i] = r.reward as f32;
            self.returns[i] += r.reward;
            self.lengths[i] += 1;
            done[i] = r.terminated;
            truncated[i] = r.truncated && !r.terminated;
            if r.terminated || r.truncated {
                if truncated[i] {
                    finals.push(r.obs.clone());
                }
                episodes.push(EpisodeStats { ret: self.returns[i], len: self.lengths[i], ..Default::default() });
                self.returns[i] = 0.0;
                self.lengths[i] = 0;
                obs.push(env.reset(None).map_err(gym_error)?.obs);
            } else {
                obs.push(r.obs);
            }
        }
        let final_obs = if finals.is_empty() { ObsBatch::default() } else { Self::batch(&finals) };
        Ok(VecStep { obs: Self::batch(&obs), reward, done, truncated, final_obs, episodes, immediate: Vec::new() })
    }
}

fn gym_error(e: impl std::fmt::Debug) -> EnvError {
    EnvError::Other(format!("CartPole: {e:?}"))
}
