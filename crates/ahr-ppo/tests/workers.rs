//! Rollout workers: one worker and several give the same numbers; a panicking worker ends the
//! run with an error instead of hanging; PPO learns a trivial task.

use ahr_env::{EnvError, EpisodeStats, VecEnv, VecStep};
use ahr_policy::{ObsBatch, ObsSpec, RunningNorm};
use ahr_ppo::metrics::NullSink;
use ahr_ppo::trainer::TrainError;
use ahr_ppo::{PpoConfig, Trainer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Reward 1 when the action equals the target shown in the observation; 8-step episodes.
struct Target {
    rng: StdRng,
    target: usize,
    t: usize,
    ret: f64,
    panic_at: Option<usize>,
    fail_at: Option<usize>,
    steps: usize,
    lambdas: Option<std::sync::Arc<std::sync::Mutex<Vec<f64>>>>,
}

impl Target {
    fn new(panic_at: Option<usize>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(0),
            target: 0,
            t: 0,
            ret: 0.0,
            panic_at,
            fail_at: None,
            steps: 0,
            lambdas: None,
        }
    }
    fn obs(&mut self) -> ObsBatch {
        self.target = self.rng.random_range(0..3);
        let mut f = vec![0f32; 4];
        f[self.target] = 1.0;
        f[3] = self.rng.random::<f32>();
        ObsBatch { features: f, tokens: vec![], masks: vec![true; 3], len: 1 }
    }
}

impl VecEnv for Target {
    fn num_envs(&self) -> usize {
        1
    }
    fn obs_spec(&self) -> ObsSpec {
        ObsSpec::plain(4)
    }
    fn heads(&self) -> usize {
        1
    }
    fn options(&self) -> usize {
        3
    }
    fn set_lambda_mem(&mut self, lambda: f64) {
        if let Some(l) = &self.lambdas {
            l.lock().unwrap().push(lambda);
        }
    }
    fn reset(&mut self, seed: u64) -> Result<ObsBatch, EnvError> {
        self.rng = StdRng::seed_from_u64(seed);
        self.t = 0;
        self.ret = 0.0;
        Ok(self.obs())
    }
    fn step(&mut self, actions: &[usize]) -> Result<VecStep, EnvError> {
        self.steps += 1;
        if self.panic_at == Some(self.steps) {
            panic!("environment exploded at step {}", self.steps);
        }
        if self.fail_at == Some(self.steps) {
            return Err(EnvError::Other(format!("the model refused step {}", self.steps)));
        }
        let r = (actions[0] == self.target) as u8 as f32;
        self.ret += r as f64;
        self.t += 1;
        let done = self.t == 8;
        let mut episodes = vec![];
        if done {
            episodes.push(EpisodeStats { ret: self.ret, len: 8, mem_frac: 1.0, ..Default::default() });
            self.t = 0;
            self.ret = 0.0;
        }
        Ok(VecStep {
            obs: self.obs(),
            reward: vec![r],
            done: vec![done],
            truncated: vec![false],
            final_obs: ObsBatch::default(),
            episodes,
            immediate: Vec::new(),
        })
    }
}

/// burn's RNG (weight init) is global to the device: tests that build trainers run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(total: u64) -> PpoConfig {
    PpoConfig {
        total_timesteps: total,
        num_envs: 4,
        num_steps: 16,
        learning_rate: 2.5e-3,
        norm_obs: true,
        ..PpoConfig::default()
    }
}

fn envs(n: usize, panic_at: Option<usize>) -> Vec<Box<dyn VecEnv>> {
    (0..n).map(|i| Box::new(Target::new(if i == 1 { panic_at } else { None })) as Box<dyn VecEnv>).collect()
}

fn probe(trainer: &Trainer) -> Vec<f32> {
    let net = trainer.policy();
    let obs = ObsBatch {
        features: vec![1.0, 0.0, 0.0, 0.3, 0.0, 0.0, 1.0, 0.9],
        tokens: vec![],
        masks: vec![true; 6],
        len: 2,
    };
    let t = net.obs_tensors(&obs, &trainer.state().norm, &ahr_tpa::device::from_env());
    net.logits(&t).into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn one_worker_equals_two_workers() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run = |workers: usize| {
        let mut t =
            Trainer::new(config(64 * 3), envs(4, None), workers, 7, 0.0, None, ahr_tpa::device::from_env()).unwrap();
        let out = t.train(&mut NullSink, |_, _| Ok(())).unwrap();
        (probe(&t), t.state().norm.clone(), out.reports.iter().map(|r| r.episodic_return).collect::<Vec<_>>())
    };
    let (a, na, ra) = run(1);
    let (b, nb, rb) = run(2);
    assert_eq!(a, b, "policy after training");
    assert_eq!(na, nb);
    assert_eq!(ra, rb);
    assert_ne!(na, RunningNorm::new(4));
}

/// A prior trains with the network unless `prior_frozen` keeps it (the output biases it sets stay
/// at the rule's), and either way a run resumed from a checkpoint ends where the uninterrupted run
/// does, bit for bit on the default backend (before 2026-12-07 a resume gave back the gradients a
/// fresh run's prior had lost, so the two parted).
#[test]
fn a_prior_trains_unless_frozen_and_a_resumed_run_is_the_straight_one() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dev = ahr_tpa::device::from_env();
    for frozen in [false, true] {
        let mut cfg = config(64 * 3);
        cfg.policy.prior = vec!["1".into()];
        cfg.policy.prior_frozen = frozen;
        cfg.reset_each_iteration = true; // what makes a resume exact (the rank envs set it)
        let trainer =
            || Trainer::new(cfg.clone(), envs(2, None), 1, 7, 0.0, None, dev.clone()).unwrap().with_prior(&[Some(1)]);
        let ckpt = tmp.path().join(format!("frozen-{frozen}"));
        let mut straight = trainer();
        straight
            .train(&mut NullSink, |t, r| {
                if r.iteration == 1 {
                    t.save_checkpoint(&ckpt)?;
                }
                Ok(())
            })
            .unwrap();
        let bias = straight.policy().output_biases();
        assert_eq!(bias == [0.0, 4.0, 0.0], frozen, "frozen {frozen}: output biases {bias:?}");
        let mut resumed = trainer();
        resumed.load_checkpoint(&ckpt).unwrap();
        assert_eq!(resumed.state().iteration, 1);
        resumed.train(&mut NullSink, |_, _| Ok(())).unwrap();
        let (a, b) = (probe(&resumed), probe(&straight));
        if dev.clone().inner() == burn::tensor::Device::flex() {
            assert_eq!(a, b, "frozen {frozen}: resumed against straight");
        } else {
            // libtorch's CPU kernels are not bit-reproducible from run to run (a last-bit
            // difference in a gradient sum): within a few units in the last place there.
            let off = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0f32, f32::max);
            assert!(off < 1e-5, "frozen {frozen}: resumed against straight: {a:?} vs {b:?}");
        }
    }
}

#[test]
fn an_environment_error_reaches_the_trainer_with_its_message() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut failing = Target::new(None);
    failing.fail_at = Some(20);
    let envs: Vec<Box<dyn VecEnv>> = vec![Box::new(Target::new(None)), Box::new(failing)];
    let mut t = Trainer::new(config(64 * 4), envs, 2, 7, 0.0, None, ahr_tpa::device::from_env()).unwrap();
    let err = t.train(&mut NullSink, |_, _| Ok(())).unwrap_err();
    assert!(matches!(err, TrainError::Worker(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("the model refused step 20") && !msg.contains("panicked"), "{msg}");
}

#[test]
fn the_target_kl_stop_ends_an_update_early() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let full = {
        let cfg = config(64 * 4);
        let per_iteration = (cfg.update_epochs * cfg.num_minibatches) as u64;
        let mut t = Trainer::new(cfg, envs(4, None), 1, 7, 0.0, None, ahr_tpa::device::from_env()).unwrap();
        let reports = t.train(&mut NullSink, |_, _| Ok(())).unwrap().reports;
        assert!(reports.iter().all(|r| r.updates == per_iteration), "without a target every minibatch runs");
        per_iteration
    };
    // A tiny target: the first minibatch after a step exceeds it, so every update stops early.
    let cfg = PpoConfig { target_kl: Some(1e-9), ..config(64 * 4) };
    let mut t = Trainer::new(cfg, envs(4, None), 1, 7, 0.0, None, ahr_tpa::device::from_env()).unwrap();
    let reports = t.train(&mut NullSink, |_, _| Ok(())).unwrap().reports;
    assert!(
        reports.iter().all(|r| r.updates >= 1 && r.updates < full),
        "{:?}",
        reports.iter().map(|r| r.updates).collect::<Vec<_>>()
    );
}

#[test]
fn a_panicking_worker_is_an_error_not_a_hang() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Trainer::new(config(64 * 4), envs(4, Some(20)), 2, 7, 0.0, None, ahr_tpa::device::from_env()).unwrap();
    let err = t.train(&mut NullSink, |_, _| Ok(())).unwrap_err();
    match err {
        TrainError::Worker(msg) => assert!(msg.contains("panicked") && msg.contains("exploded"), "{msg}"),
        other => panic!("expected a worker error, got {other}"),
    }
}

#[test]
fn ppo_learns_to_match_the_target() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut t = Trainer::new(config(64 * 60), envs(4, None), 1, 3, 0.0, None, ahr_tpa::device::from_env()).unwrap();
    let out = t.train(&mut NullSink, |_, _| Ok(())).unwrap();
    let first = out.reports[0].episodic_return;
    let last = out.last_episodes.iter().map(|e| e.ret).sum::<f64>() / out.last_episodes.len() as f64;
    assert!(first < 4.5, "random play scores about 8/3, got {first}");
    assert!(last > 7.0, "after training the return should approach 8, got {last}");
}

#[test]
fn budget_mode_sends_each_iterations_lambda_to_the_environments() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut env = Target::new(None);
    env.lambdas = Some(seen.clone());
    let budget =
        ahr_env::BudgetController { target: 0.5, lr: 1.0, kp: 0.0, two_sided: false, start: None, anneal: 0.5 };
    let cfg = PpoConfig { num_envs: 1, ..config(16 * 3) };
    let mut t =
        Trainer::new(cfg.clone(), vec![Box::new(env)], 1, 7, 2.0, Some(budget), ahr_tpa::device::from_env()).unwrap();
    t.train(&mut NullSink, |_, _| Ok(())).unwrap();
    // Episodes report mem_frac = 1, so λ rises by lr·(1 − 0.5) after every iteration.
    assert_eq!(*seen.lock().unwrap(), vec![2.0, 2.5, 3.0]);
    assert_eq!(t.state().lambda_mem, 3.5);

    // With a proportional gain the applied λ adds kp·error to the same integral.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut env = Target::new(None);
    env.lambdas = Some(seen.clone());
    let budget =
        ahr_env::BudgetController { target: 0.5, lr: 1.0, kp: 4.0, two_sided: false, start: None, anneal: 0.5 };
    let mut t = Trainer::new(cfg, vec![Box::new(env)], 1, 7, 2.0, Some(budget), ahr_tpa::device::from_env()).unwrap();
    t.train(&mut NullSink, |_, _| Ok(())).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![2.0, 4.5, 5.0], "λ_I = 2.5, 3.0, 3.5 plus 4·0.5");
    assert_eq!(t.state().lambda_mem, 5.5);

    // Memory below the target (mem_frac = 1 < 1.5): an at-most budget stops λ at 0, a two-sided
    // one keeps lowering it, paying for memory.
    for (two_sided, want) in [(false, vec![0.5, 0.0, 0.0]), (true, vec![0.5, 0.0, -0.5])] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut env = Target::new(None);
        env.lambdas = Some(seen.clone());
        let budget = ahr_env::BudgetController { target: 1.5, lr: 1.0, kp: 0.0, two_sided, start: None, anneal: 0.5 };
        let cfg = PpoConfig { num_envs: 1, ..config(16 * 3) };
        let mut t =
            Trainer::new(cfg, vec![Box::new(env)], 1, 7, 0.5, Some(budget), ahr_tpa::device::from_env()).unwrap();
        t.train(&mut NullSink, |_, _| Ok(())).unwrap();
        assert_eq!(*seen.lock().unwrap(), want, "two_sided = {two_sided}");
    }

    // A target tightening from 1.0 to 0.5 over the first half of four iterations: 1.0, 0.75, 0.5,
    // 0.5 at progress 0, ¼, ½, ¾, so λ moves by 0, 0.25, 0.5, 0.5.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut env = Target::new(None);
    env.lambdas = Some(seen.clone());
    let budget =
        ahr_env::BudgetController { target: 0.5, lr: 1.0, kp: 0.0, two_sided: false, start: Some(1.0), anneal: 0.5 };
    let cfg = PpoConfig { num_envs: 1, ..config(16 * 4) };
    let mut t = Trainer::new(cfg, vec![Box::new(env)], 1, 7, 2.0, Some(budget), ahr_tpa::device::from_env()).unwrap();
    t.train(&mut NullSink, |_, _| Ok(())).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![2.0, 2.0, 2.25, 2.75]);
    assert_eq!(t.state().lambda_mem, 3.25);
}
