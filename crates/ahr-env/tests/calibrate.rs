//! Deployment's memory calibration: the price found holds the target on the training sequences
//! (re-measured), moves the decisions the way its sign says, and fails clearly where it must.

use ahr_env::calibrate::{option_costs, training_memory};
use ahr_env::{CalibrateError, EnvSpec, calibrate, make_env};
use ahr_policy::net::PolicyDims;
use ahr_policy::{ActorCritic, PolicyConfig, RunningNorm};
use ahr_tasks::mqar::MqarConfig;
use ahr_tasks::{Task, TaskConfig};
use ahr_tpa::{Model, ModelConfig};

/// A tiny model (vocabulary 64, menu drop / rank:1 / rank:2 / full), a 16-token MQAR task and a
/// fresh policy for its env that prefers option `prefer` in every layer by `logit`.
fn parts(prefer: usize, logit: f32) -> (Model, Task, EnvSpec, ActorCritic, RunningNorm) {
    let dev = ahr_tpa::device::from_env();
    let mut cfg = ModelConfig::tiny();
    cfg.vocab_size = 64;
    let model = Model::new(&cfg, &dev);
    let task_config =
        TaskConfig::Mqar(MqarConfig { vocab_size: 64, seq_len: 16, num_kv_pairs: vec![2], ..MqarConfig::default() });
    let task = Task::load(&task_config).unwrap();
    let spec = EnvSpec { task: task_config, env: Default::default(), reward: Default::default() };
    let env = make_env(&model, &task, &spec, false, 1, &dev);
    let obs_dim = env.obs_spec().features.len();
    let dims = PolicyDims { obs_dim, vocab_size: 0, heads: env.heads(), options: env.options(), candidate_features: 0 };
    let net = ActorCritic::new(&PolicyConfig::default(), dims, &dev).with_prior(&vec![Some(prefer); dims.heads], logit);
    (model, task, spec, net, RunningNorm::new(obs_dim))
}

#[test]
fn option_costs_are_the_cost_models_share_of_the_exact_bytes() {
    let cfg = ModelConfig::tiny();
    let costs = option_costs(&cfg, 16);
    let exact = ahr_tpa::cost::bytes_per_token(&cfg, cfg.exact_option()) as f64;
    let by_bytes: Vec<f64> = cfg.menu.iter().map(|&o| ahr_tpa::cost::bytes_per_token(&cfg, o) as f64 / exact).collect();
    assert_eq!(costs.len(), cfg.menu.len());
    for (c, b) in costs.iter().zip(&by_bytes) {
        assert!((c - b).abs() < 1e-12, "untimed options cost their bytes: {costs:?} against {by_bytes:?}");
    }
    assert_eq!(costs[0], 0.0, "drop costs nothing");
}

#[test]
fn a_price_brings_a_keeping_policy_down_to_its_target_and_reproduces() {
    let dev = ahr_tpa::device::from_env();
    // Every layer prefers `full` (the last option, dense: more than the exact rank-2 factors) by 1.5:
    // uncalibrated, the policy keeps everything dense.
    let (model, task, spec, net, norm) = parts(3, 1.5);
    let full = training_memory(&model, &task, &spec, &net, &norm, 1, 12, 5, &dev).unwrap();
    let dense = option_costs(model.config(), 16)[3];
    assert!((full - dense).abs() < 1e-9, "every token kept dense: {full} against {dense}");
    let mut seen = Vec::new();
    let (c, trace) =
        calibrate(&model, &task, &spec, &net, &norm, 1, 0.4, 12, 5, &dev, |p, m| seen.push((p, m))).unwrap();
    assert_eq!(seen, trace.probes, "every probe reported");
    assert_eq!(c.memory_uncalibrated, full);
    assert!(c.price > 0.0, "a policy holding too much is priced up: {c:?}");
    assert!(c.memory <= 0.4 && c.memory > 0.0, "{c:?}");
    // The price's memory is re-measured exactly with the shift the manifest will carry.
    let priced = net.clone().with_deploy_shift(c.shift());
    assert_eq!(training_memory(&model, &task, &spec, &priced, &norm, 1, 12, 5, &dev).unwrap(), c.memory);
    // Kept is the most memory within the target among the probes.
    let best = trace.probes.iter().filter(|p| p.1 <= 0.4).map(|p| p.1).fold(0.0, f64::max);
    assert_eq!(c.memory, best);
}

#[test]
fn a_negative_price_raises_a_dropping_policy_to_its_target() {
    let dev = ahr_tpa::device::from_env();
    // Every layer prefers `drop` by 1.0: the policy keeps nothing but what the env forces.
    let (model, task, spec, net, norm) = parts(0, 1.0);
    let (c, _) = calibrate(&model, &task, &spec, &net, &norm, 1, 0.6, 12, 5, &dev, |_, _| {}).unwrap();
    assert!(c.memory_uncalibrated < 0.6, "{c:?}");
    assert!(c.price < 0.0, "a policy holding too little is paid to keep: {c:?}");
    assert!(c.memory > c.memory_uncalibrated && c.memory <= 0.6, "{c:?}");
}

#[test]
fn bad_targets_are_errors() {
    let dev = ahr_tpa::device::from_env();
    let (model, task, spec, net, norm) = parts(3, 1.5);
    for target in [0.0, -0.1, 1.5, f64::NAN] {
        let err = calibrate(&model, &task, &spec, &net, &norm, 1, target, 4, 5, &dev, |_, _| {}).unwrap_err();
        assert!(matches!(err, CalibrateError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("target"), "{err}");
    }
    let err = calibrate(&model, &task, &spec, &net, &norm, 1, 0.5, 0, 5, &dev, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("at least one sequence"), "{err}");
}
