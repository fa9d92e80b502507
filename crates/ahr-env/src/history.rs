//! A wrapper that stacks the last `window` observations of every row (oldest first), as gym's
//! `FrameStack`, for policies that attend over recent meta-features. History restarts with
//! zeros at every episode start.

use std::collections::VecDeque;

use ahr_policy::{ObsBatch, ObsSpec};

use crate::vec_env::{VecEnv, VecStep};

/// The last `window` observations of each row of an inner environment.
pub struct History {
    inner: Box<dyn VecEnv>,
    window: usize,
    dim: usize,
    rows: Vec<VecDeque<Vec<f32>>>,
}

impl History {
    /// Wrap `inner` with a window of `window ≥ 1` observations.
    pub fn new(inner: Box<dyn VecEnv>, window: usize) -> Self {
        let dim = inner.obs_spec().dim();
        Self { inner, window: window.max(1), dim, rows: Vec::new() }
    }

    fn fresh(&self, obs: &[f32]) -> VecDeque<Vec<f32>> {
        let mut q: VecDeque<Vec<f32>> = (1..self.window).map(|_| vec![0.0; self.dim]).collect();
        q.push_back(obs.to_vec());
        q
    }

    fn stack(&self, base: &ObsBatch, rows: &[VecDeque<Vec<f32>>]) -> ObsBatch {
        ObsBatch { features: rows.iter().flat_map(|q| q.iter().flatten().copied()).collect(), ..base.clone() }
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

    fn reset(&mut self, seed: u64) -> ObsBatch {
        let obs = self.inner.reset(seed);
        self.rows = obs.features.chunks(self.dim).map(|o| self.fresh(o)).collect();
        self.stack(&obs, &self.rows)
    }

    fn set_lambda_mem(&mut self, lambda: f64) {
        self.inner.set_lambda_mem(lambda);
    }

    fn step(&mut self, actions: &[usize]) -> VecStep {
        let mut step = self.inner.step(actions);
        let mut finals = Vec::new();
        let mut k = 0;
        for r in 0..self.rows.len() {
            let ended = step.done[r] || step.truncated[r];
            if step.truncated[r] {
                let mut q = self.rows[r].clone();
                q.pop_front();
                q.push_back(step.final_obs.features[k * self.dim..(k + 1) * self.dim].to_vec());
                finals.push(q);
                k += 1;
            }
            let obs = &step.obs.features[r * self.dim..(r + 1) * self.dim];
            if ended {
                self.rows[r] = self.fresh(obs);
            } else {
                self.rows[r].pop_front();
                self.rows[r].push_back(obs.to_vec());
            }
        }
        if !finals.is_empty() {
            step.final_obs = self.stack(&step.final_obs, &finals);
        }
        step.obs = self.stack(&step.obs, &self.rows);
        step
    }
}
