//! The vectorised-environment interface trainers use (burn-rl's vocabulary, batched).

use ahr_policy::ObsBatch;
use ahr_policy::ObsSpec;

/// Summary of a finished episode of one stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpisodeStats {
    /// Undiscounted return.
    pub ret: f64,
    /// Steps.
    pub len: u64,
    /// Mean task loss over labelled positions (rank envs).
    pub task_loss: f64,
    /// Accuracy over labelled positions (rank envs).
    pub accuracy: f64,
    /// Summed task loss over labelled positions (rank envs; pooled metrics add these up).
    pub loss_sum: f64,
    /// Labelled positions (rank envs).
    pub labelled: u64,
    /// Labelled positions predicted exactly (rank envs).
    pub correct: u64,
    /// Time-averaged KV bytes held relative to the exact choice's (rank envs): the reward's
    /// memory term, [`ahr_tpa::cost::charged_bytes`] summed over the episode — the one memory
    /// measure, which evaluation reports too.
    pub mem_frac: f64,
    /// The most bytes the cache held at once over the sequence length, relative to the exact
    /// choice's bytes per token (rank envs): the peak, reported beside `mem_frac`.
    pub peak_frac: f64,
    /// Attention FLOPs relative to the exact choice (rank envs).
    pub flops_frac: f64,
    /// Chosen option counts `[layer][option]` (rank envs; with reviews, what the tokens ended as).
    pub option_counts: Vec<Vec<u64>>,
    /// Chosen option counts by token position, summed over layers, `[position][option]`
    /// (per-token rank envs).
    pub position_counts: Vec<Vec<u64>>,
    /// Review decisions taken, over tokens and layers (rank envs with `[env] review`).
    pub reviews: u64,
    /// Review decisions that changed the write-time option (demoted or dropped the token).
    pub review_changes: u64,
    /// Tokens a spike review dropped, `(layer, position, first query that no longer sees it)`
    /// (their option counts say `drop`; this says when).
    pub evictions: Vec<(usize, usize, usize)>,
    /// Tokens a learned evicter let go into its second tier, `(layer, position, at)`, `at` the
    /// first query that sees them at the tier's rank (their final leave is in `evictions`).
    pub demotions: Vec<(usize, usize, usize)>,
}

impl EpisodeStats {
    /// Loss and accuracy sums pooled over every labelled position of `episodes` (the judge's
    /// metric, not a mean of per-episode values).
    pub fn pooled(episodes: &[EpisodeStats]) -> ahr_tasks::Metrics {
        let mut m = ahr_tasks::Metrics::default();
        for e in episodes {
            let s = e.metrics();
            m.add(s.loss_sum, s.correct, s.count);
        }
        m
    }

    /// This episode's loss and accuracy sums.
    pub fn metrics(&self) -> ahr_tasks::Metrics {
        ahr_tasks::Metrics { loss_sum: self.loss_sum, correct: self.correct, count: self.labelled }
    }
}

/// The result of stepping every environment once.
#[derive(Clone, Debug)]
pub struct VecStep {
    /// Next observations; for an environment that just finished, the first observation of
    /// its next episode (auto-reset).
    pub obs: ObsBatch,
    /// Rewards `[N]`.
    pub reward: Vec<f32>,
    /// Episode ended by the environment (no bootstrap) `[N]`.
    pub done: Vec<bool>,
    /// Episode cut by a time limit (bootstrap from the value of `final_obs`) `[N]`.
    pub truncated: Vec<bool>,
    /// Last observations of truncated episodes (rows in `truncated` order; empty if none).
    pub final_obs: ObsBatch,
    /// Episodes that finished at this step.
    pub episodes: Vec<EpisodeStats>,
    /// The part of `reward` that this step's action alone caused and that no other step's
    /// action changes — a rank environment's charge for the bytes just written `[N]`; empty when
    /// the environment does not split its reward. Trainers may credit it to this step only
    /// (`ahr_ppo::Credit::Split`).
    pub immediate: Vec<f32>,
}

impl VecStep {
    /// Every row's episode ended at this step (rank environments end all streams together);
    /// `obs` is the first observation of the next episode.
    pub fn all_done(obs: ObsBatch, reward: Vec<f32>, episodes: Vec<EpisodeStats>) -> Self {
        Self::together(obs, reward, true, episodes)
    }

    /// No row's episode ended.
    pub fn running(obs: ObsBatch, reward: Vec<f32>) -> Self {
        Self::together(obs, reward, false, Vec::new())
    }

    /// Every row's episode ended (`done`) or none did; nothing truncated.
    fn together(obs: ObsBatch, reward: Vec<f32>, done: bool, episodes: Vec<EpisodeStats>) -> Self {
        let n = reward.len();
        Self {
            obs,
            reward,
            done: vec![done; n],
            truncated: vec![false; n],
            final_obs: ObsBatch::default(),
            episodes,
            immediate: Vec::new(),
        }
    }

    /// This step with `immediate` as the part of each reward its action alone caused.
    pub fn with_immediate(mut self, immediate: Vec<f32>) -> Self {
        debug_assert_eq!(immediate.len(), self.reward.len());
        self.immediate = immediate;
        self
    }
}

/// Why an environment could not step: the frozen model refused the input (its message says
/// why), or an external simulator failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The model (shapes, tokens, the cache).
    #[error(transparent)]
    Model(#[from] ahr_tpa::Error),
    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

/// A batch of environments that step together. Seeds go to `reset`; everything after is
/// deterministic.
pub trait VecEnv: Send {
    /// Environments (streams) stepped together.
    fn num_envs(&self) -> usize;
    /// What each observation holds.
    fn obs_spec(&self) -> ObsSpec;
    /// Categorical heads per action (layers).
    fn heads(&self) -> usize;
    /// Options per head.
    fn options(&self) -> usize;
    /// Start from `seed`; returns the first observations.
    fn reset(&mut self, seed: u64) -> Result<ObsBatch, EnvError>;
    /// Apply `actions` `[N, heads]` (row-major) and advance one step.
    fn step(&mut self, actions: &[usize]) -> Result<VecStep, EnvError>;
    /// Set the memory weight (budget mode's Lagrange multiplier); environments without one ignore it.
    fn set_lambda_mem(&mut self, _lambda: f64) {}
    /// Rows come in groups of this many neighbours that share every episode's input (and end
    /// their episodes together): 2 for a paired rank environment, else 1.
    fn group(&self) -> usize {
        1
    }
}

/// Run `env` with actions from `act` (one option per row and head) until `episodes` episodes
/// have finished; returns the first `episodes` in finishing order. Evaluation of a trained
/// policy and of any hand-written rule goes through here.
pub fn run_episodes(
    env: &mut dyn VecEnv,
    episodes: usize,
    seed: u64,
    mut act: impl FnMut(&ObsBatch) -> Vec<usize>,
) -> Result<Vec<EpisodeStats>, EnvError> {
    let mut obs = env.reset(seed)?;
    let mut done = Vec::new();
    while done.len() < episodes {
        let step = env.step(&act(&obs))?;
        done.extend(step.episodes);
        obs = step.obs;
    }
    done.truncate(episodes);
    Ok(done)
}
