//! A wrapper that stacks the last `window` observations of every row (oldest first), as gym's
//! `FrameStack`, for policies that attend over recent meta-features. History restarts with
//! zeros at every episode start.

use ahr_policy::obs::FeatureWindow;
use ahr_policy::{ObsBatch, ObsSpec};

use crate::vec_env::{EnvError, VecEnv, VecStep};

/// The last `window` observations of each row of an inner environment.
pub struct History {
    inner: Box<dyn VecEnv>,
    window: usize,
    dim: usize,
    rows: Vec<FeatureWindow>,
}

impl History {
    /// Wrap `inner` with a window of `window ≥ 1` observations.
    pub fn new(inner: Box<dyn VecEnv>, window: usize) -> Self {
        let dim = inner.obs_spec().dim();
        Self { inner, window: window.max(1), dim, rows: Vec::new() }
    }

    fn stack(&self, base: &ObsBatch, rows: &[FeatureWindow]) -> ObsBatch {
        ObsBatch { features: rows.iter().flat_map(FeatureWindow::stacked).collect(), ..base.clone() }
    }
}

impl VecEnv for History {
    fn num_envs(&self) -> usize {
        self.inner.num_envs()
    }

    fn obs_spec(&self) -> ObsSpec {
        self.inner.obs_spec().windowed(self.window)
    }

    fn heads(&self) -> usize {
        self.inner.heads()
    }

    fn options(&self) -> usize {
        self.inner.options()
    }

    fn reset(&mut self, seed: u64) -> Result<ObsBatch, EnvError> {
        let obs = self.inner.reset(seed)?;
        self.rows = obs.features.chunks(self.dim).map(|o| FeatureWindow::new(self.window, o)).collect();
        Ok(self.stack(&obs, &self.rows))
    }

    fn set_lambda_mem(&mut self, lambda: f64) {
        self.inner.set_lambda_mem(lambda);
    }

    fn group(&self) -> usize {
        self.inner.group()
    }

    fn step(&mut self, actions: &[usize]) -> Result<VecStep, EnvError> {
        let mut step = self.inner.step(actions)?;
        let mut finals = Vec::new();
        let mut k = 0;
        for r in 0..self.rows.len() {
            let ended = step.done[r] || step.truncated[r];
            if step.truncated[r] {
                finals.push(self.rows[r].pushed(&step.final_obs.features[k * self.dim..(k + 1) * self.dim]));
                k += 1;
            }
            let obs = &step.obs.features[r * self.dim..(r + 1) * self.dim];
            self.rows[r] = if ended { FeatureWindow::new(self.window, obs) } else { self.rows[r].pushed(obs) };
        }
        if !finals.is_empty() {
            step.final_obs = self.stack(&step.final_obs, &finals);
        }
        step.obs = self.stack(&step.obs, &self.rows);
        Ok(step)
    }
}
