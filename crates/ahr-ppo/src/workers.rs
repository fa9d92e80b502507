//! Rollout workers: threads that own their environments, receive a policy snapshot per
//! iteration over a crossbeam channel and send back one rollout chunk per environment.
//!
//! Every environment's rollout depends only on the snapshot, its own index and seed, and the
//! iteration: the policy runs on each environment's rows separately and samples with an RNG
//! seeded by (seed, env, iteration). So 1 worker and N workers give the same numbers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;

use ahr_env::{EpisodeStats, VecEnv};
use ahr_policy::dist::sample_host;
use ahr_policy::{ActorCritic, MaskedMultiCategorical, ObsBatch, RunningNorm};
use burn::tensor::Device;
use crossbeam::channel::{Receiver, Sender, unbounded};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// What workers act with during one iteration.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The policy on the inference device.
    pub net: ActorCritic,
    /// Observation normalisation in force for this rollout.
    pub norm: RunningNorm,
    /// Memory weight for the environments (budget mode's λ).
    pub lambda_mem: f64,
    /// Iteration number (seeds the sampling RNG).
    pub iteration: u64,
    /// Index of the first environment (environment i of the pool is environment `first_env + i`
    /// of the run: what seeds it). DD-PPO rank r starts at r × its environment count, so N ranks
    /// sample exactly what one process with all their environments samples.
    pub first_env: usize,
}

/// One environment's rollout of `num_steps` steps; arrays are `[num_steps, rows]` row-major.
#[derive(Clone, Debug, Default)]
pub struct Chunk {
    /// Index of the environment.
    pub env_index: usize,
    /// Rows (streams) of the environment.
    pub rows: usize,
    /// Observations, one batch per step.
    pub obs: Vec<ObsBatch>,
    /// Actions `[num_steps, rows, heads]`.
    pub actions: Vec<usize>,
    /// Log-probabilities of the actions.
    pub logprobs: Vec<f32>,
    /// Value estimates.
    pub values: Vec<f32>,
    /// Rewards (truncated episodes already bootstrapped with γ·V(final)).
    pub rewards: Vec<f32>,
    /// The part of each reward its step's action alone caused ([`ahr_env::VecStep::immediate`];
    /// 0 where the environment does not split its reward).
    pub immediate: Vec<f32>,
    /// Whether the observation at this step starts a new episode (CleanRL's `dones`).
    pub dones: Vec<bool>,
    /// Values of the observation after the last step `[rows]`.
    pub next_value: Vec<f32>,
    /// Whether that observation starts a new episode `[rows]`.
    pub next_done: Vec<bool>,
    /// Episodes finished during the rollout.
    pub episodes: Vec<EpisodeStats>,
}

/// Rollout settings shared by all workers.
#[derive(Clone, Debug)]
pub struct RolloutSettings {
    /// Steps per environment per rollout.
    pub num_steps: usize,
    /// Discount (for bootstrapping truncated episodes).
    pub gamma: f64,
    /// Base seed.
    pub seed: u64,
    /// Reset every environment at each rollout's start (seeded by the iteration).
    pub reset_each_iteration: bool,
    /// Inference device.
    pub device: Device,
}

struct Slot {
    index: usize,
    env: Box<dyn VecEnv>,
    obs: Option<ObsBatch>,
    done: Vec<bool>,
}

/// A seed derived from (base, env, iteration), independent of how envs are split.
pub fn derive_seed(base: u64, env: usize, iteration: u64) -> u64 {
    let mut z = base ^ (env as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ iteration.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn rollout(slot: &mut Slot, snap: &Snapshot, s: &RolloutSettings) -> Result<Chunk, String> {
    let index = snap.first_env + slot.index;
    let env = &mut slot.env;
    env.set_lambda_mem(snap.lambda_mem);
    let (rows, heads, options) = (env.num_envs(), env.heads(), env.options());
    if s.reset_each_iteration || slot.obs.is_none() {
        slot.obs = Some(env.reset(derive_seed(s.seed, index, snap.iteration)).map_err(|e| e.to_string())?);
        slot.done = vec![false; rows];
    }
    let mut rng = StdRng::seed_from_u64(derive_seed(s.seed ^ 0x5a5a, index, snap.iteration));
    let mut chunk = Chunk { env_index: slot.index, rows, ..Default::default() };
    let value_of = |obs: &ObsBatch| -> Vec<f32> {
        let t = snap.net.obs_tensors(obs, &snap.norm, &s.device);
        snap.net.value(&t).into_data().try_to_vec::<f32>().expect("values should be f32")
    };
    for _ in 0..s.num_steps {
        let obs = slot.obs.take().expect("an observation is always pending");
        let t = snap.net.obs_tensors(&obs, &snap.norm, &s.device);
        let dist = MaskedMultiCategorical::new(snap.net.logits(&t), t.masks.clone());
        let logp_all = dist.log_probs().into_data().try_to_vec::<f32>().expect("log-probs should be f32");
        let mut probs = logp_all.clone();
        ahr_policy::ops::exp_in_place(&mut probs);
        let actions = sample_host(&probs, options, &mut rng);
        let values = snap.net.value(&t).into_data().try_to_vec::<f32>().expect("values should be f32");
        for r in 0..rows {
            let lp: f32 = (0..heads).map(|h| logp_all[(r * heads + h) * options + actions[r * heads + h]]).sum();
            chunk.logprobs.push(lp);
        }
        let step = env.step(&actions).map_err(|e| e.to_string())?;
        let mut rewards = step.reward.clone();
        if !step.final_obs.features.is_empty() {
            let finals = value_of(&step.final_obs);
            let truncated: Vec<usize> = (0..rows).filter(|&r| step.truncated[r]).collect();
            for (k, &r) in truncated.iter().enumerate() {
                rewards[r] += (s.gamma * finals[k] as f64) as f32;
            }
        }
        chunk.obs.push(obs);
        chunk.actions.extend(actions);
        chunk.values.extend(values);
        chunk.rewards.extend(rewards);
        match step.immediate.len() {
            0 => chunk.immediate.extend(std::iter::repeat_n(0.0, rows)),
            _ => chunk.immediate.extend(step.immediate),
        }
        chunk.dones.extend(slot.done.iter().copied());
        slot.done = (0..rows).map(|r| step.done[r] || step.truncated[r]).collect();
        chunk.episodes.extend(step.episodes);
        slot.obs = Some(step.obs);
    }
    chunk.next_value = value_of(slot.obs.as_ref().expect("an observation is always pending"));
    chunk.next_done = slot.done.clone();
    Ok(chunk)
}

type Reply = Result<Vec<Chunk>, String>;

/// A pool of rollout threads.
pub struct Workers {
    num_envs: usize,
    senders: Vec<Sender<Snapshot>>,
    replies: Receiver<(usize, Reply)>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Spread `envs` over `num_workers` threads (env i goes to worker i mod W).
    pub fn new(envs: Vec<Box<dyn VecEnv>>, num_workers: usize, settings: RolloutSettings) -> Self {
        let num_envs = envs.len();
        let num_workers = num_workers.clamp(1, num_envs.max(1));
        let mut groups: Vec<Vec<Slot>> = (0..num_workers).map(|_| Vec::new()).collect();
        for (index, env) in envs.into_iter().enumerate() {
            groups[index % num_workers].push(Slot { index, env, obs: None, done: Vec::new() });
        }
        let (reply_tx, replies) = unbounded();
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for (w, mut slots) in groups.into_iter().enumerate() {
            let (tx, rx) = unbounded::<Snapshot>();
            senders.push(tx);
            let reply_tx = reply_tx.clone();
            let settings = settings.clone();
            let handle = std::thread::Builder::new()
                .name(format!("rollout-{w}"))
                .spawn(move || {
                    while let Ok(snap) = rx.recv() {
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            slots.iter_mut().map(|slot| rollout(slot, &snap, &settings)).collect::<Result<Vec<_>, _>>()
                        }))
                        .map_err(|e| {
                            let msg = e
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            format!("rollout worker {w} panicked: {msg}")
                        })
                        .and_then(|r| r.map_err(|e| format!("rollout worker {w}: the environment failed: {e}")));
                        let failed = result.is_err();
                        if reply_tx.send((w, result)).is_err() || failed {
                            break;
                        }
                    }
                })
                .expect("a rollout thread should start");
            handles.push(handle);
        }
        Self { num_envs, senders, replies, handles }
    }

    /// Environments in the pool.
    pub fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// Run one rollout on every worker; chunks come back ordered by environment index.
    pub fn collect(&self, snapshot: &Snapshot) -> Result<Vec<Chunk>, String> {
        for (w, tx) in self.senders.iter().enumerate() {
            tx.send(snapshot.clone()).map_err(|_| format!("rollout worker {w} has stopped"))?;
        }
        let mut chunks = Vec::new();
        for _ in 0..self.senders.len() {
            let (_, reply) = self.replies.recv().map_err(|_| "every rollout worker has stopped".to_string())?;
            chunks.extend(reply?);
        }
        chunks.sort_by_key(|c| c.env_index);
        Ok(chunks)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.senders.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
