//! The rank environment's accounting: rewards are the task loss and the cost model's bytes and
//! FLOPs, normalised so the exact choice sums to 1 per episode; episodes are seeded.

use ahr_env::{RankEnv, RewardConfig, VecEnv};
use ahr_tasks::mqar::MqarConfig;
use ahr_tasks::{Task, TaskConfig};
use ahr_tpa::{Model, ModelConfig, StoreOption, cost};

/// A tiny model (vocabulary 64) and a 16-token MQAR task with 2 pairs.
fn parts() -> (Model, Task, ModelConfig) {
    let mut cfg = ModelConfig::tiny();
    cfg.vocab_size = 64;
    let model = Model::new(&cfg, &ahr_tpa::device::from_env());
    let task = Task::load(&TaskConfig::Mqar(MqarConfig {
        vocab_size: 64,
        seq_len: 16,
        num_kv_pairs: vec![2],
        ..MqarConfig::default()
    }))
    .unwrap();
    (model, task, cfg)
}

fn setup(reward: RewardConfig) -> (RankEnv, ModelConfig) {
    let (model, task, cfg) = parts();
    (RankEnv::new(model, task, reward, 3, ahr_tpa::device::from_env()), cfg)
}

/// Run one episode with a fixed option per (step, layer); returns (rewards per step, episode stats).
fn episode(
    env: &mut RankEnv,
    cfg: &ModelConfig,
    pick: impl Fn(usize, usize) -> usize,
    seed: u64,
) -> (Vec<Vec<f32>>, ahr_env::EpisodeStats) {
    let obs = env.reset(seed).unwrap();
    assert_eq!(obs.len, 3);
    let mut rewards = Vec::new();
    for t in 0..16 {
        let actions: Vec<usize> =
            (0..3).flat_map(|_| (0..cfg.n_layers).map(|l| pick(t, l)).collect::<Vec<_>>()).collect();
        let step = env.step(&actions).unwrap();
        rewards.push(step.reward.clone());
        if t == 15 {
            assert!(step.done.iter().all(|&d| d));
            return (rewards, step.episodes[0].clone());
        }
        assert!(step.done.iter().all(|&d| !d));
    }
    unreachable!()
}

#[test]
fn exact_choice_costs_one_and_drop_costs_nothing() {
    let (mut env, cfg) = setup(RewardConfig { w_task: 0.0, lambda_mem: 1.0, lambda_flops: 1.0, ..Default::default() });
    let exact = cfg.exact_index();
    let (rewards, stats) = episode(&mut env, &cfg, |_, _| exact, 1);
    assert!((stats.mem_frac - 1.0).abs() < 1e-9, "{}", stats.mem_frac);
    assert!((stats.flops_frac - 1.0).abs() < 1e-9, "{}", stats.flops_frac);
    let total: f64 = rewards.iter().map(|r| r[0] as f64).sum();
    assert!((total + 2.0).abs() < 1e-5, "return {total}");
    // Dropping everything keeps no bytes; each step still attends to its own token:
    // FLOPs = Σ_{t=1}^{15} 1 / Σ_{t=1}^{15} (t + 1) = 15 / 135.
    let (_, stats) = episode(&mut env, &cfg, |_, _| 0, 1);
    assert_eq!(stats.mem_frac, 0.0);
    assert!((stats.flops_frac - 15.0 / 135.0).abs() < 1e-12, "{}", stats.flops_frac);
}

#[test]
fn memory_reward_equals_the_cost_model_and_loss_reward_is_the_task_loss() {
    let (mut env, cfg) = setup(RewardConfig { w_task: 0.0, lambda_mem: 2.0, lambda_flops: 0.0, ..Default::default() });
    let rank2 = cfg.option_index(StoreOption::Rank(2)).unwrap();
    let (rewards, stats) = episode(&mut env, &cfg, |t, l| if l == 0 && t % 2 == 0 { rank2 } else { 0 }, 5);
    // Time-averaged memory: token t is held for 16 − t of the 16 steps, over the (16 + 1) / 2
    // tokens a full cache holds on average, per token of the sequence.
    let bytes = cost::bytes_per_token(&cfg, StoreOption::Rank(2)) as f64 / cost::exact_bytes_per_token(&cfg) as f64;
    let charge = |t: usize| bytes * (16 - t) as f64 / (8.5 * 16.0);
    assert!((rewards[0][0] as f64 + 2.0 * charge(0)).abs() < 1e-6);
    assert_eq!(rewards[1][0], 0.0);
    assert!((rewards[2][0] as f64 + 2.0 * charge(2)).abs() < 1e-6);
    assert!((stats.mem_frac - (0..16).step_by(2).map(charge).sum::<f64>()).abs() < 1e-9);
    // The peak: the final cache, 8 tokens at rank 2 in layer 0.
    assert!((stats.peak_frac - 8.0 * bytes / 16.0).abs() < 1e-9);
    assert_eq!(stats.option_counts[0][rank2], 8);
    assert_eq!(stats.option_counts[1][0], 16);

    // With only the task term, the return is minus the summed loss over labelled positions.
    let (mut env, cfg) = setup(RewardConfig { w_task: 1.0, lambda_mem: 0.0, lambda_flops: 0.0, ..Default::default() });
    let exact = cfg.exact_index();
    let (rewards, stats) = episode(&mut env, &cfg, |_, _| exact, 5);
    let ret: f64 = rewards.iter().map(|r| r[0] as f64).sum();
    let labelled = env.batch().labels[..16].iter().filter(|&&l| l != -100).count() as f64;
    assert!((ret + stats.task_loss * labelled).abs() < 1e-3, "{ret} vs {}", stats.task_loss * labelled);
    assert!((stats.ret - ret).abs() < 1e-3);
}

#[test]
fn the_immediate_part_of_a_reward_is_the_write_charge_and_the_rest_is_the_task_loss() {
    // The same seed and choices under three rewards: both terms, memory only, task only.
    let both = RewardConfig { w_task: 1.0, lambda_mem: 2.0, lambda_flops: 0.0, ..Default::default() };
    let (model, task, cfg) = parts();
    let rank2 = cfg.option_index(StoreOption::Rank(2)).unwrap();
    let pick = |t: usize, l: usize| if (t + l).is_multiple_of(3) { rank2 } else { (t + l) % 2 };
    let steps = |reward: RewardConfig| {
        let mut env = RankEnv::new(model.clone(), task.clone(), reward, 3, ahr_tpa::device::from_env());
        env.reset(9).unwrap();
        (0..16)
            .map(|t| {
                let actions: Vec<usize> = (0..3).flat_map(|_| (0..cfg.n_layers).map(move |l| pick(t, l))).collect();
                let step = env.step(&actions).unwrap();
                assert_eq!(step.immediate.len(), 3);
                (step.reward, step.immediate)
            })
            .collect::<Vec<_>>()
    };
    let whole = steps(both.clone());
    let memory = steps(RewardConfig { w_task: 0.0, ..both.clone() });
    let task = steps(RewardConfig { lambda_mem: 0.0, ..both });
    let mut charged = 0;
    for ((w, m), t) in whole.iter().zip(&memory).zip(&task) {
        for b in 0..3 {
            assert!((w.1[b] - m.0[b]).abs() < 1e-6, "immediate {} vs the memory reward {}", w.1[b], m.0[b]);
            assert!(
                (w.0[b] - w.1[b] - t.0[b]).abs() < 1e-5,
                "the rest {} vs the task reward {}",
                w.0[b] - w.1[b],
                t.0[b]
            );
            charged += (w.1[b] != 0.0) as usize;
        }
    }
    assert!(charged > 0);
}

#[test]
fn the_exact_baseline_shifts_the_task_term_by_the_exact_loss_only() {
    use ahr_env::TaskBaseline;
    let base = RewardConfig { w_task: 1.0, lambda_mem: 0.0, lambda_flops: 0.0, ..Default::default() };
    let shaped = RewardConfig { task_baseline: TaskBaseline::Exact, ..base.clone() };
    let (model, task, cfg) = parts();
    let dev = ahr_tpa::device::from_env();
    let mut plain = RankEnv::new(model.clone(), task.clone(), base, 3, dev.clone());
    let mut env = RankEnv::new(model, task, shaped, 3, dev);
    let exact = cfg.exact_index();
    // All-exact choices: every shaped reward is (decode − parallel) ≈ 0; the reported loss is unchanged.
    let (rewards, stats) = episode(&mut env, &cfg, |_, _| exact, 5);
    assert!(rewards.iter().flatten().all(|r| r.abs() < 1e-3), "{rewards:?}");
    let (plain_rewards, plain_stats) = episode(&mut plain, &cfg, |_, _| exact, 5);
    assert!((stats.task_loss - plain_stats.task_loss).abs() < 1e-9);
    // Any other choices: each step's reward moves by exactly the exact loss at its position, so
    // the return differs by Σ exact loss — a constant of the data, the same for every action.
    let pick = |t: usize, l: usize| (t + 2 * l) % cfg.menu.len();
    let (shaped_r, _) = episode(&mut env, &cfg, pick, 5);
    let (plain_r, _) = episode(&mut plain, &cfg, pick, 5);
    for ((s, p), e) in shaped_r.iter().zip(&plain_r).zip(&plain_rewards) {
        for b in 0..3 {
            assert!((s[b] - p[b] - (-e[b])).abs() < 1e-3, "shaped {} plain {} exact {}", s[b], p[b], e[b]);
        }
    }
}

#[test]
fn episodes_are_deterministic_for_a_seed() {
    let (mut env, cfg) = setup(RewardConfig::default());
    let a = episode(&mut env, &cfg, |t, l| (t + l) % 5, 9).0;
    let b = episode(&mut env, &cfg, |t, l| (t + l) % 5, 9).0;
    let c = episode(&mut env, &cfg, |t, l| (t + l) % 5, 10).0;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn per_layer_mode_is_a_one_step_bandit_with_the_same_accounting() {
    use ahr_env::LayerEnv;
    let (model, task, cfg) = parts();
    let dev = ahr_tpa::device::from_env();
    let reward = RewardConfig { w_task: 1.0, lambda_mem: 1.0, lambda_flops: 0.0, ..Default::default() };
    let mut layer_env = LayerEnv::new(model.clone(), task.clone(), reward.clone(), 3, dev.clone());
    let mut token_env = RankEnv::new(model, task, reward, 3, dev);
    let obs = layer_env.reset(4).unwrap();
    assert_eq!(obs, token_env.reset(4).unwrap(), "the context is the per-token agent's first observation");
    let exact = cfg.exact_index();
    let step = layer_env.step(&vec![exact; 3 * cfg.n_layers]).unwrap();
    assert!(step.done.iter().all(|&d| d));
    let e = &step.episodes[0];
    assert!((e.mem_frac - 1.0).abs() < 1e-12 && (e.flops_frac - 1.0).abs() < 1e-12);
    // Same sequence, same exact choices: the per-token episode's loss agrees (parallel = decode).
    let (_, token_stats) = episode(&mut token_env, &cfg, |_, _| exact, 4);
    assert!((token_stats.task_loss - e.task_loss).abs() < 1e-4, "{} vs {}", token_stats.task_loss, e.task_loss);
    let mixed: Vec<usize> = (0..3).flat_map(|_| vec![0, exact]).collect();
    let step = layer_env.step(&mixed).unwrap();
    assert!((step.episodes[0].mem_frac - 0.5).abs() < 1e-12, "layer 0 dropped, layer 1 exact");
}

#[test]
fn history_stacks_the_last_observations_and_restarts_each_episode() {
    use ahr_env::History;
    let (env, cfg) = setup(RewardConfig::default());
    let dim = env.obs_spec().dim();
    let mut h = History::new(Box::new(env), 3);
    assert_eq!(h.obs_spec().dim(), 3 * dim);
    assert!(h.obs_spec().features[0].starts_with("t-2."));
    let o0 = h.reset(2).unwrap();
    let row0 = |o: &ahr_policy::ObsBatch| o.features[..3 * dim].to_vec();
    assert!(row0(&o0)[..2 * dim].iter().all(|&x| x == 0.0));
    let actions = vec![cfg.exact_index(); 3 * cfg.n_layers];
    let o1 = h.step(&actions).unwrap().obs;
    assert_eq!(row0(&o1)[dim..2 * dim], row0(&o0)[2 * dim..]);
    assert!(row0(&o1)[..dim].iter().all(|&x| x == 0.0));
    let mut last = o1;
    for _ in 1..16 {
        last = h.step(&actions).unwrap().obs;
    }
    assert!(row0(&last)[..2 * dim].iter().all(|&x| x == 0.0), "a new episode starts with an empty history");
}

#[test]
fn recent_tokens_are_charged_their_share_and_the_peak_is_what_the_cache_held() {
    let (model, task, _) = parts();
    let model = model.with_recent(&[3]).unwrap();
    let cfg = model.config().clone();
    let reward = RewardConfig { w_task: 0.0, lambda_mem: 1.0, lambda_flops: 1.0, ..Default::default() };
    let mut env = RankEnv::new(model, task, reward, 3, ahr_tpa::device::from_env());
    let (recent, exact) = (cfg.option_index(StoreOption::Recent(3)).unwrap(), cfg.exact_index());
    // Everything recent:3: a token is held for its own step and 3 queries (fewer at the end:
    // 13 tokens × 4 + 3 + 2 + 1 = 58 token-steps, over 8.5 · 16 for the exact choice), and the
    // cache never holds more than 4 tokens (the newest and the 3 before it).
    let (rewards, stats) = episode(&mut env, &cfg, |_, _| recent, 2);
    assert!((stats.mem_frac - 58.0 / 136.0).abs() < 1e-9, "{}", stats.mem_frac);
    assert!((stats.peak_frac - 4.0 / 16.0).abs() < 1e-9, "{}", stats.peak_frac);
    // The first reward: token 0's charge, and step 1's FLOPs (one cached key and itself).
    assert!((rewards[0][0] as f64 + 4.0 / 136.0 + 2.0 / 135.0).abs() < 1e-6, "{}", rewards[0][0]);
    // A query sees at most 3 cached keys: FLOPs Σ_{t=1}^{15} (min(t, 3) + 1) / Σ (t + 1).
    let seen: usize = (1..16).map(|t: usize| t.min(3) + 1).sum();
    assert!((stats.flops_frac - seen as f64 / 135.0).abs() < 1e-12, "{}", stats.flops_frac);
    // Exact for the first 4 tokens, then recent:3: peak 4 + 4 tokens; token-steps 16 + 15 + 14
    // + 13 for the exact ones, 9 × 4 + 3 + 2 + 1 for the rest.
    let (_, stats) = episode(&mut env, &cfg, |t, _| if t < 4 { exact } else { recent }, 2);
    assert!((stats.peak_frac - 8.0 / 16.0).abs() < 1e-9, "{}", stats.peak_frac);
    assert!((stats.mem_frac - 100.0 / 136.0).abs() < 1e-9, "{}", stats.mem_frac);
    // Any pattern: the environment charges what the cost model says the sequence holds.
    let pick = |t: usize, l: usize| {
        if (t + l).is_multiple_of(3) {
            exact
        } else if t.is_multiple_of(5) {
            recent
        } else {
            1
        }
    };
    let (_, stats) = episode(&mut env, &cfg, pick, 2);
    let c = cost::sequence_cost(&cfg, 16, |t, l| (cfg.menu[pick(t, l)], None));
    let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
    assert!((stats.mem_frac - c.kv_bytes_per_token / exact_bytes).abs() < 1e-9);
    assert!((stats.peak_frac - c.peak_bytes_per_token / exact_bytes).abs() < 1e-9);
}

#[test]
fn demotion_schedules_are_charged_memory_peak_and_flops_as_the_cost_model_says() {
    let (model, task, _) = parts();
    let timed: Vec<StoreOption> = ["full/2/rank:1", "rank:2/3/drop"].iter().map(|s| s.parse().unwrap()).collect();
    let model = model.with_timed(&timed).unwrap();
    let cfg = model.config().clone();
    let reward = RewardConfig { w_task: 0.0, lambda_mem: 1.0, lambda_flops: 1.0, ..Default::default() };
    let mut env = RankEnv::new(model, task, reward, 3, ahr_tpa::device::from_env());
    let (demote, expire) = (cfg.option_index(timed[0]).unwrap(), cfg.option_index(timed[1]).unwrap());
    let pick = |t: usize, l: usize| match (t + 2 * l) % 4 {
        0 => demote,
        1 => expire,
        2 => 1,
        _ => demote,
    };
    let (_, stats) = episode(&mut env, &cfg, pick, 2);
    let c = cost::sequence_cost(&cfg, 16, |t, l| (cfg.menu[pick(t, l)], None));
    let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
    let exact_flops = cost::exact_sequence_flops(&cfg, 16);
    assert!((stats.mem_frac - c.kv_bytes_per_token / exact_bytes).abs() < 1e-9, "{}", stats.mem_frac);
    assert!((stats.peak_frac - c.peak_bytes_per_token / exact_bytes).abs() < 1e-9, "{}", stats.peak_frac);
    assert!((stats.flops_frac - c.flops_per_token * 16.0 / exact_flops).abs() < 1e-9, "{}", stats.flops_frac);
}

/// Review mode (DESIGN.md §10): L write heads then L review heads; masks allow exactly what a
/// review may do; the environment charges memory, peak and FLOPs as the cost model does for the
/// options the tokens ended with, and a review is counted when it changes a token.
#[test]
fn reviews_are_masked_and_charged_as_the_options_they_produce() {
    reviews_are_masked_and_charged(&[], false);
}

/// The same with reviews that may keep a token to age 5 or 9 and drop it there.
#[test]
fn reviews_that_keep_to_a_later_age_are_charged_to_that_age() {
    reviews_are_masked_and_charged(&[5, 9], false);
}

/// A chain: L review heads per age (3, 5, 9); a token kept to 5 comes up again there and may be
/// dropped (its own option), kept to 9 or kept to the end; charged as the option it ends with.
#[test]
fn a_chain_of_reviews_is_masked_and_charged_as_the_options_it_ends_with() {
    reviews_are_masked_and_charged(&[5, 9], true);
}

fn reviews_are_masked_and_charged(keep: &[usize], again: bool) {
    reviews_are_masked_and_charged_at(ahr_tpa::ReviewAt::Age {
        age: 3,
        keep: ahr_tpa::KeepAges::new(3, keep).unwrap(),
        again,
    });
}

fn reviews_are_masked_and_charged_at(at: ahr_tpa::ReviewAt) {
    let (model, task, _) = parts();
    let ages = at.stage_ages();
    let (age, keep) = (
        ages[0],
        match at {
            ahr_tpa::ReviewAt::Age { keep, .. } => keep.ages().collect::<Vec<_>>(),
            _ => unreachable!("age reviews"),
        },
    );
    let base = model.config().clone();
    let model = model.with_timed(&at.menu_extras(&base)).unwrap();
    let cfg = model.config().clone();
    let (l_n, m) = (cfg.n_layers, cfg.menu.len());
    let reward = RewardConfig { w_task: 0.0, lambda_mem: 1.0, lambda_flops: 1.0, ..Default::default() };
    let mut env = RankEnv::new(model, task, reward, 3, ahr_tpa::device::from_env()).with_review(at);
    let heads = l_n * (1 + ages.len());
    assert_eq!(env.heads(), heads);
    let spec = env.obs_spec();
    let named = if at.is_chain() { "layer1.at9.attn_since_review" } else { "layer1.attn_received" };
    assert!(spec.features.iter().any(|f| f == named), "{:?}", spec.features);
    let mut obs = env.reset(4).unwrap();
    assert_eq!(obs.features.len(), 3 * spec.dim());
    // Stream 0's options per (t, l) as they end up.
    let mut effective = vec![vec![0usize; l_n]; 16];
    let (mut changed, mut reviews, mut later) = (0u64, 0u64, 0u64);
    for t in 0..16 {
        let mut actions = Vec::new();
        // Every stream writes and reviews alike: their masks read stream 0's options before this step.
        let before = effective.clone();
        for b in 0..3 {
            for l in 0..l_n {
                let row = &obs.masks[(b * heads + l) * m..(b * heads + l + 1) * m];
                // Writes: rank:2 or exact (review schedules are masked off writes).
                assert!(!row[cfg.menu.len() - 1], "a review schedule is writable");
                let w = if (t + l) % 2 == 0 { cfg.exact_index() } else { 2 };
                assert!(row[w]);
                actions.push(w);
            }
            for (stage, &a) in ages.iter().enumerate() {
                for l in 0..l_n {
                    let head = l_n * (1 + stage) + l;
                    let row = &obs.masks[(b * heads + head) * m..(b * heads + head + 1) * m];
                    let ok: Vec<usize> = (0..m).filter(|&o| row[o]).collect();
                    // Under review at a later age: a token kept to exactly that age.
                    let under = t >= a && (stage == 0 || cfg.menu[before[t - a][l]].window() == Some(a));
                    if !under {
                        assert_eq!(ok, vec![cfg.exact_index()], "nothing is under review at {a} (t = {t})");
                    } else if stage == 0 {
                        // The token written at t − age may stay, be demoted (rank:2 → rank:1) or go.
                        let written = before[t - age][l];
                        assert_eq!(ok[0], written.min(ok[0]));
                        assert!(ok.contains(&written) && ok.len() >= 2, "{ok:?}");
                        let longer = ok.iter().filter(|&&o| cfg.menu[o].window().is_some_and(|w| w > age)).count();
                        let offered = if at.is_chain() { 1 } else { keep.len() };
                        assert_eq!(longer, if cfg.menu[written] == ahr_tpa::StoreOption::Drop { 0 } else { offered });
                    } else {
                        // Dropped at this age (its own option), kept to the next one, or kept to the end.
                        let mut want = vec![before[t - a][l]];
                        want.extend(ages.get(stage + 1).map(|&next| {
                            let s =
                                cfg.menu[before[t - a][l]].to_string().replace(&format!("/{a}/"), &format!("/{next}/"));
                            cfg.option_index(s.parse().unwrap()).unwrap()
                        }));
                        want.push(cfg.option_index(cfg.menu[before[t - a][l]].stored_as(cfg.exact_option())).unwrap());
                        want.sort();
                        assert_eq!(ok, want, "at {a} (t = {t})");
                    }
                    let pick = ok[(t * 7 + l + stage) % ok.len()];
                    actions.push(pick);
                    if b == 0 && under {
                        reviews += 1;
                        later += u64::from(stage > 0);
                        if pick != effective[t - a][l] {
                            changed += 1;
                        }
                        effective[t - a][l] = pick;
                    }
                }
            }
            if b == 0 {
                effective[t][..l_n].copy_from_slice(&actions[..l_n]);
            }
        }
        let step = env.step(&actions).unwrap();
        if t == 15 {
            let stats = &step.episodes[0];
            let c = cost::sequence_cost(&cfg, 16, |k, l| (cfg.menu[effective[k][l]], None));
            let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
            assert!((stats.mem_frac - c.kv_bytes_per_token / exact_bytes).abs() < 1e-9, "{}", stats.mem_frac);
            assert!((stats.peak_frac - c.peak_bytes_per_token / exact_bytes).abs() < 1e-9, "{}", stats.peak_frac);
            let flops = c.flops_per_token * 16.0 / cost::exact_sequence_flops(&cfg, 16);
            assert!((stats.flops_frac - flops).abs() < 1e-9, "{} vs {flops}", stats.flops_frac);
            assert_eq!(stats.reviews, reviews);
            assert_eq!(reviews - later, ((16 - age) * l_n) as u64);
            assert_eq!(later > 0, at.is_chain(), "reviews at later ages: {later}");
            assert_eq!(stats.review_changes, changed);
            assert!(changed > 0);
        } else {
            obs = step.obs;
        }
    }
}

/// Spike reviews: a review head per layer offers keep or drop for the token that topped the
/// previous query's row; the environment charges memory, peak and FLOPs as the cost model does
/// for the writes with the reviews' evictions, and reports each eviction.
#[test]
fn spike_reviews_are_masked_and_charged_as_evictions() {
    let (model, task, _) = parts();
    let cfg = model.config().clone();
    let (l_n, m) = (cfg.n_layers, cfg.menu.len());
    let drop = cfg.option_index(ahr_tpa::StoreOption::Drop).unwrap();
    let reward = RewardConfig { w_task: 0.0, lambda_mem: 1.0, lambda_flops: 1.0, ..Default::default() };
    let mut env =
        RankEnv::new(model, task, reward, 3, ahr_tpa::device::from_env()).with_review(ahr_tpa::ReviewAt::SPIKE);
    assert_eq!(env.heads(), 2 * l_n);
    let spec = env.obs_spec();
    assert!(spec.features.iter().any(|f| f == "layer1.spike_weight"));
    let mut obs = env.reset(4).unwrap();
    let mut writes = vec![vec![0usize; l_n]; 16];
    let mut reviews = 0;
    for t in 0..16 {
        let mut actions = Vec::new();
        for b in 0..3 {
            for l in 0..l_n {
                // Every option is writable; rank:1, rank:2 or exact, now and then drop.
                assert!(obs.masks[((b * 2 * l_n) + l) * m..((b * 2 * l_n) + l + 1) * m].iter().all(|&x| x));
                actions.push([1, 2, cfg.exact_index(), drop][(t + 2 * l + b) % 4]);
            }
            for l in 0..l_n {
                let row = &obs.masks[((b * 2 * l_n) + l_n + l) * m..((b * 2 * l_n) + l_n + l + 1) * m];
                let ok: Vec<usize> = (0..m).filter(|&o| row[o]).collect();
                if t < 2 {
                    assert_eq!(ok, vec![cfg.exact_index()], "no row has been topped before step 2");
                }
                // Keep or drop the token under review; the exact option alone when there is none.
                assert!(ok.len() == 1 || (ok.len() == 2 && ok.contains(&drop)), "{ok:?}");
                if b == 0 && ok.len() == 2 {
                    reviews += 1;
                }
                actions.push(ok[(t + l) % ok.len()]);
            }
            if b == 0 {
                writes[t].copy_from_slice(&actions[..l_n]);
            }
        }
        let step = env.step(&actions).unwrap();
        if t == 15 {
            let stats = &step.episodes[0];
            assert!(!stats.evictions.is_empty() && stats.evictions.iter().all(|&(_, k, at)| k < at && at <= 16));
            let evicted = |k: usize, l: usize| stats.evictions.iter().find(|e| (e.0, e.1) == (l, k)).map(|e| e.2);
            let c = cost::sequence_cost(&cfg, 16, |k, l| (cfg.menu[writes[k][l]], evicted(k, l)));
            let exact_bytes = cost::exact_bytes_per_token(&cfg) as f64;
            assert!((stats.mem_frac - c.kv_bytes_per_token / exact_bytes).abs() < 1e-9, "{}", stats.mem_frac);
            assert!((stats.peak_frac - c.peak_bytes_per_token / exact_bytes).abs() < 1e-9, "{}", stats.peak_frac);
            let flops = c.flops_per_token * 16.0 / cost::exact_sequence_flops(&cfg, 16);
            assert!((stats.flops_frac - flops).abs() < 1e-9, "{} vs {flops}", stats.flops_frac);
            assert_eq!(stats.reviews, reviews);
            assert_eq!(stats.review_changes, stats.evictions.len() as u64);
        } else {
            obs = step.obs;
        }
    }
}

#[test]
fn per_layer_recent_windows_account_like_the_per_token_episode() {
    use ahr_env::LayerEnv;
    let (model, task, _) = parts();
    let model = model.with_recent(&[3]).unwrap();
    let cfg = model.config().clone();
    let dev = ahr_tpa::device::from_env();
    let reward = RewardConfig { w_task: 1.0, lambda_mem: 1.0, lambda_flops: 1.0, ..Default::default() };
    let mut layer_env = LayerEnv::new(model.clone(), task.clone(), reward.clone(), 3, dev.clone());
    let mut token_env = RankEnv::new(model, task, reward, 3, dev);
    let recent = cfg.option_index(StoreOption::Recent(3)).unwrap();
    layer_env.reset(6).unwrap();
    let step = layer_env.step(&vec![recent; 3 * cfg.n_layers]).unwrap();
    let (_, tok) = episode(&mut token_env, &cfg, |_, _| recent, 6);
    let lay = &step.episodes[0];
    for (name, a, b) in [
        ("loss", lay.task_loss, tok.task_loss),
        ("mem", lay.mem_frac, tok.mem_frac),
        ("peak", lay.peak_frac, tok.peak_frac),
        ("flops", lay.flops_frac, tok.flops_frac),
    ] {
        assert!((a - b).abs() < 1e-4, "{name}: per-layer {a} vs per-token {b}");
    }
}

#[test]
fn a_model_error_is_an_error_not_a_panic() {
    // A task whose token ids do not fit the model: reset reports the model's message.
    let (model, _, _) = parts();
    let wide = Task::load(&TaskConfig::Mqar(MqarConfig {
        vocab_size: 512,
        seq_len: 16,
        num_kv_pairs: vec![2],
        ..MqarConfig::default()
    }))
    .unwrap();
    let mut env = RankEnv::new(model, wide, RewardConfig::default(), 3, ahr_tpa::device::from_env());
    let err = env.reset(1).unwrap_err().to_string();
    assert!(err.contains("vocab") || err.contains("token"), "{err}");
    // Actions of the wrong shape are refused by the cache, not a panic.
    let (mut env, cfg) = setup(RewardConfig::default());
    env.reset(1).unwrap();
    assert!(env.step(&vec![0; 3 * cfg.n_layers + 1]).is_err());
}
