//! Numeric contracts of the model: parallel forward = token-by-token decode from the physical
//! cache (every option, random choices, every family); all-exact = T6's formulas; cache bytes =
//! cost model; checkpoints round-trip; bad files fail with clear errors.

mod common;

use ahr_tpa::checkpoint::{CONFIG_FILE, WEIGHTS_FILE, load_model, save_model};
use ahr_tpa::{AttentionKind, ChoiceSpec, Choices, KvCache, Model, ModelConfig, Storage, StoreOption, cost};
use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const B: usize = 2;
const T: usize = 13;

fn tokens(cfg: &ModelConfig, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..B * T).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()
}

fn parallel(model: &Model, ids: &[u32], choices: &Choices) -> Vec<f32> {
    let t = model.tokens(ids, B, T, &device()).unwrap();
    to_vec(model.forward(t, choices).unwrap())
}

fn check_parallel_equals_decode(cfg: &ModelConfig, choices: &Choices, seed: u64) {
    let model = randomize(Model::new(cfg, &device()), seed, 0.4);
    let ids = tokens(cfg, seed + 1);
    let par = parallel(&model, &ids, choices);
    let (dec, cache) = decode_all(&model, &ids, B, T, choices);
    let err = max_rel_err(&dec, &par);
    assert!(err < 2e-4, "decode vs parallel: max rel err {err}");
    // The cache holds exactly what the cost model charges for the chosen options.
    let expected: usize = (0..B)
        .flat_map(|b| (0..T).flat_map(move |t| (0..cfg.n_layers).map(move |l| (b, t, l))))
        .map(|(b, t, l)| cost::bytes_per_token(cfg, cfg.menu[choices.get(b, t, l)]))
        .sum();
    assert_eq!(cache.bytes(), expected);
}

#[test]
fn factor_cache_matches_materialised_kv_for_every_option() {
    let cfg = ModelConfig::tiny();
    for spec in ChoiceSpec::rank_curve(&cfg) {
        let choices = spec.choices(&cfg, B, T).unwrap();
        check_parallel_equals_decode(&cfg, &choices, 7);
    }
}

#[test]
fn parallel_forward_equals_decode_under_random_choices() {
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(3);
    let choices = Choices::from_fn(B, T, cfg.n_layers, |_, _, _| rng.random_range(0..cfg.menu.len()));
    check_parallel_equals_decode(&cfg, &choices, 11);
}

#[test]
fn kv_only_tpa_decodes_from_factors_like_the_parallel_forward() {
    let mut cfg = ModelConfig::tiny();
    cfg.q_rank = 0;
    cfg.validate().unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let choices = Choices::from_fn(B, T, cfg.n_layers, |_, _, _| rng.random_range(0..cfg.menu.len()));
    check_parallel_equals_decode(&cfg, &choices, 13);
}

#[test]
fn mha_and_gqa_share_the_skeleton() {
    for (kind, kv) in [(AttentionKind::Mha, None), (AttentionKind::Gqa, Some(1))] {
        let mut cfg = ModelConfig::tiny();
        cfg.attention = kind;
        cfg.kv_heads = kv;
        cfg.menu = vec![StoreOption::Drop, StoreOption::Full];
        cfg.validate().unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let choices = Choices::from_fn(B, T, cfg.n_layers, |_, _, _| rng.random_range(0..2));
        check_parallel_equals_decode(&cfg, &choices, 13);
    }
}

/// The fused CPU kernel (host storage, blocks of 64 tokens) and the tensor-op path (what an
/// accelerator runs) give the parallel forward's logits and the same policy statistics, over
/// several blocks with a partial last one, for materialised and FlashTPA-order queries (h = 6,
/// d_h = 6, R_Q = 1: two head chunks), KV-only TPA, and GQA.
#[test]
fn host_kernel_and_tensor_ops_agree_over_many_blocks() {
    let (b, t) = (2, 150);
    let mut configs = vec![ModelConfig::tiny()];
    let mut wide = ModelConfig::tiny();
    (wide.n_heads, wide.head_dim, wide.q_rank) = (6, 6, 1);
    let mut kv_only = ModelConfig::tiny();
    kv_only.q_rank = 0;
    let mut gqa = ModelConfig::tiny();
    (gqa.attention, gqa.kv_heads, gqa.menu) = (AttentionKind::Gqa, Some(1), vec![StoreOption::Drop, StoreOption::Full]);
    configs.extend([wide, kv_only, gqa]);
    for (i, cfg) in configs.iter().enumerate() {
        cfg.validate().unwrap();
        let model = randomize(Model::new(cfg, &device()), 20 + i as u64, 0.4);
        let mut rng = StdRng::seed_from_u64(30 + i as u64);
        let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
        // Mostly kept tokens, so every option's group spans several blocks.
        let choices = Choices::from_fn(b, t, cfg.n_layers, |_, _, _| {
            if rng.random_range(0..6) == 0 { 0 } else { rng.random_range(1..cfg.menu.len()) }
        });
        let par = to_vec(model.forward(model.tokens(&ids, b, t, &device()).unwrap(), &choices).unwrap());
        let (host, host_stats, host_cache) = decode_with(&model, &ids, b, t, &choices, Storage::Host);
        let (ops, ops_stats, ops_cache) = decode_with(&model, &ids, b, t, &choices, Storage::Tensors);
        for (name, logits) in [("host kernel", &host), ("tensor ops", &ops)] {
            let err = max_rel_err(logits, &par);
            assert!(err < 2e-4, "config {i}: {name} vs parallel: max rel err {err}");
        }
        let err = max_rel_err(&host_stats, &ops_stats);
        assert!(err < 1e-4, "config {i}: policy statistics differ between kernels: {err}");
        assert_eq!(host_cache.bytes(), ops_cache.bytes());
    }
}

/// The plain-loop decode step (`HostModel`) computes what the tensor step computes — logits,
/// policy statistics, log-sum-exps and the projections it leaves for the cache — step by step
/// over a host cache under random choices (caches spanning several blocks, a partial last one and
/// the split of a long cache across threads), for TPA with factored and dense queries, untied and
/// tied heads, absolute positions, and GQA.
#[test]
fn host_step_equals_the_tensor_step() {
    let (b, t) = (2, 150);
    let mut factored = ModelConfig::tiny();
    factored.max_positions = t;
    let mut tied = ModelConfig::tiny();
    (tied.q_rank, tied.tied_embeddings, tied.mlp) = (0, true, false);
    tied.menu = vec![StoreOption::Drop, StoreOption::Rank(1), StoreOption::Rank(2), StoreOption::Rank(3)];
    let mut gqa = ModelConfig::tiny();
    (gqa.attention, gqa.kv_heads, gqa.n_heads, gqa.menu) =
        (AttentionKind::Gqa, Some(2), 4, vec![StoreOption::Drop, StoreOption::Full]);
    for (i, cfg) in [factored, tied, gqa].iter().enumerate() {
        cfg.validate().unwrap();
        let dev = device();
        let model = randomize(Model::new(cfg, &dev), 40 + i as u64, 0.4);
        let host = model.host_model(&dev).unwrap().expect("the CPU device keeps caches on the host");
        let mut rng = StdRng::seed_from_u64(50 + i as u64);
        let (mut by_ops, mut by_host) =
            (KvCache::with_storage(cfg, b, Storage::Host), KvCache::with_storage(cfg, b, Storage::Host));
        for step in 0..t {
            let ids: Vec<u32> = (0..b).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
            let ops = model.step_with_stats(model.tokens(&ids, b, 1, &dev).unwrap(), &by_ops).unwrap();
            let fast = model.step_ids(Some(&host), &ids, &by_host, true, &dev).unwrap();
            for (name, a, e) in [
                ("logits", fast.logits.clone().reshape([-1]), ops.logits.clone().reshape([-1])),
                ("statistics", fast.layer_stats.clone().reshape([-1]), ops.layer_stats.clone().reshape([-1])),
                ("log-sum-exps", fast.lse.clone().reshape([-1]), ops.lse.clone().reshape([-1])),
            ] {
                let err = max_rel_err(&to_vec::<1>(a), &to_vec::<1>(e));
                assert!(err < 1e-4, "config {i}, step {step}: {name} differ by {err}");
            }
            let choices: Vec<usize> = (0..b * cfg.n_layers).map(|_| rng.random_range(0..cfg.menu.len())).collect();
            by_ops.push(ops.pending, &choices).unwrap();
            by_host.push(fast.pending, &choices).unwrap();
            assert_eq!(by_ops.bytes(), by_host.bytes());
        }
    }
    // A bad token id is an error, not a panic.
    let cfg = ModelConfig::tiny();
    let model = Model::new(&cfg, &device());
    let host = ahr_tpa::HostModel::new(&model).unwrap();
    let cache = KvCache::with_storage(&cfg, 1, Storage::Host);
    let err = model.step_ids(Some(&host), &[cfg.vocab_size as u32], &cache, false, &device()).unwrap_err();
    assert!(err.to_string().contains("vocabulary"), "{err}");
    // So is a position beyond a learned position table, in both steps alike.
    let mut cfg = ModelConfig::tiny();
    cfg.max_positions = 1;
    let model = Model::new(&cfg, &device());
    let host = ahr_tpa::HostModel::new(&model).unwrap();
    let mut cache = KvCache::with_storage(&cfg, 1, Storage::Host);
    let first = model.step_ids(Some(&host), &[1], &cache, false, &device()).unwrap();
    cache.push(first.pending, &[cfg.exact_index(); 2]).unwrap();
    for fast in [Some(&host), None] {
        let err = model.step_ids(fast, &[1], &cache, false, &device()).unwrap_err();
        assert!(err.to_string().contains("position 1 is beyond max_positions = 1"), "{err}");
    }
}

#[test]
fn recent_tokens_expire_in_decode_as_evictions_do_in_the_parallel_forward() {
    // Windows of 3 (expires within a block) and 70 (spans block boundaries at T = 150).
    let (b, t) = (2, 150);
    let cfg = ModelConfig::tiny().with_recent(&[3, 70]).unwrap();
    let (exact, n_menu) = (cfg.exact_index(), cfg.menu.len());
    let model = randomize(Model::new(&cfg, &device()), 40, 0.4);
    let mut rng = StdRng::seed_from_u64(41);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let choices = Choices::from_fn(b, t, cfg.n_layers, |_, _, _| {
        if rng.random_range(0..2) == 0 { rng.random_range(exact + 1..n_menu) } else { rng.random_range(0..n_menu) }
    });
    let forward = |c: &Choices| to_vec(model.forward(model.tokens(&ids, b, t, &device()).unwrap(), c).unwrap());
    let par = forward(&choices);
    // recent:W = the exact option evicted from query t + W + 1 on.
    let mut as_exact = choices.clone();
    let mut evictions = vec![u32::MAX; b * t * cfg.n_layers];
    for (s, k, l) in (0..b).flat_map(|s| (0..t).flat_map(move |k| (0..cfg.n_layers).map(move |l| (s, k, l)))) {
        if let Some(w) = cfg.menu[choices.get(s, k, l)].window() {
            as_exact.set(s, k, l, exact);
            evictions[(s * t + k) * cfg.n_layers + l] = (k + w + 1) as u32;
        }
    }
    assert!(max_rel_err(&forward(&as_exact.clone().with_evictions(evictions)), &par) < 1e-5);
    assert!(max_rel_err(&forward(&as_exact), &par) > 1e-3, "expiry should change later logits");
    let (host, host_stats, host_cache) = decode_with(&model, &ids, b, t, &choices, Storage::Host);
    let (ops, ops_stats, ops_cache) = decode_with(&model, &ids, b, t, &choices, Storage::Tensors);
    for (name, logits) in [("host kernel", &host), ("tensor ops", &ops)] {
        let err = max_rel_err(logits, &par);
        assert!(err < 2e-4, "{name} vs parallel: max rel err {err}");
    }
    assert!(max_rel_err(&host_stats, &ops_stats) < 1e-4);
    // Both caches hold what the next query (position T) sees, no more: the cost model's bytes
    // of every token visible there; their peak is what was held at the most crowded step.
    for s in 0..b {
        let held_at = |q: usize| -> usize {
            (0..=q.min(t - 1))
                .flat_map(|k| (0..cfg.n_layers).map(move |l| (k, l)))
                .filter(|&(k, l)| choices.visible_until(&cfg, s, k, l).is_none_or(|u| u > q))
                .map(|(k, l)| cost::bytes_per_token(&cfg, cfg.menu[choices.get(s, k, l)]))
                .sum()
        };
        let peak = (0..t).map(held_at).max().unwrap();
        for cache in [&host_cache, &ops_cache] {
            assert_eq!(cache.stream_bytes(s), held_at(t));
            assert_eq!(cache.peak_stream_bytes(s), peak);
        }
    }
}

/// Demotion schedules (DESIGN.md §10): windows of 3 (within a block) and 70 (across the block
/// boundaries of T = 150), nested `rank:3 → rank:2`, `rank:2 → rank:1`, `full → rank:1` (shadow
/// factors) and `full → drop`, three-phase ones that also evict their later form, mixed with
/// `recent:3` and plain options. Decode through both
/// storages equals the parallel forward, and after every step each cache holds exactly what
/// [`cost::bytes_at`] charges, with its peak where the cost model puts it.
#[test]
fn demotion_schedules_decode_like_the_parallel_forward_and_hold_what_the_cost_model_charges() {
    let (b, t) = (2, 150);
    let timed: Vec<StoreOption> = [
        "full/3/rank:1",
        "rank:3/70/rank:2",
        "rank:2/3/rank:1",
        "full/70/drop",
        "recent:3",
        "full/2/rank:1/66",
        "rank:3/65/rank:1/4",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let cfg = ModelConfig::tiny().with_timed(&timed).unwrap();
    let model = randomize(Model::new(&cfg, &device()), 50, 0.4);
    let mut rng = StdRng::seed_from_u64(51);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let first_timed = cfg.exact_index() + 1;
    let choices = Choices::from_fn(b, t, cfg.n_layers, |_, _, _| {
        if rng.random_range(0..3) > 0 {
            rng.random_range(first_timed..cfg.menu.len())
        } else {
            rng.random_range(0..cfg.menu.len())
        }
    });
    let forward = |c: &Choices| to_vec(model.forward(model.tokens(&ids, b, t, &device()).unwrap(), c).unwrap());
    let par = forward(&choices);
    // Without demotion (each timed token kept in its first form) later logits differ.
    let mut undemoted = choices.clone();
    for (s, k, l) in (0..b).flat_map(|s| (0..t).flat_map(move |k| (0..2).map(move |l| (s, k, l)))) {
        let first = cfg.menu[choices.get(s, k, l)].stored_as(cfg.exact_option());
        undemoted.set(s, k, l, cfg.option_index(first).unwrap());
    }
    assert!(max_rel_err(&forward(&undemoted), &par) > 1e-3, "demotion should change later logits");
    let held_at = |s: usize, upto: usize, q: usize| -> usize {
        (0..=upto)
            .flat_map(|k| (0..cfg.n_layers).map(move |l| (k, l)))
            .map(|(k, l)| cost::bytes_at(&cfg, cfg.menu[choices.get(s, k, l)], k, q))
            .sum()
    };
    for storage in [Storage::Host, Storage::Tensors] {
        let mut cache = ahr_tpa::KvCache::with_storage(&cfg, b, storage);
        let mut logits = vec![0f32; b * t * cfg.vocab_size];
        let v = cfg.vocab_size;
        for q in 0..t {
            let step_ids: Vec<u32> = (0..b).map(|s| ids[s * t + q]).collect();
            let (out, pending) = model.step(model.tokens(&step_ids, b, 1, &device()).unwrap(), &cache).unwrap();
            let out = to_vec(out);
            for s in 0..b {
                logits[(s * t + q) * v..(s * t + q + 1) * v].copy_from_slice(&out[s * v..(s + 1) * v]);
            }
            let c: Vec<usize> = (0..b)
                .flat_map(|s| (0..cfg.n_layers).map(move |l| (s, l)))
                .map(|(s, l)| choices.get(s, q, l))
                .collect();
            cache.push(pending, &c).unwrap();
            for s in 0..b {
                assert_eq!(cache.stream_bytes(s), held_at(s, q, q + 1), "{storage:?}, stream {s}, after step {q}");
            }
        }
        let err = max_rel_err(&logits, &par);
        assert!(err < 2e-4, "{storage:?} vs parallel: max rel err {err}");
        for s in 0..b {
            let peak = (0..t).map(|q| held_at(s, q, q)).max().unwrap();
            assert_eq!(cache.peak_stream_bytes(s), peak, "{storage:?}");
        }
        // The cost model's time average is what the steps held, summed.
        for s in 0..b {
            let steps: usize = (0..t).map(|q| held_at(s, q, q)).sum();
            let c = cost::sequence_bytes(&cfg, t, |k, l| (cfg.menu[choices.get(s, k, l)], None));
            let expect = steps as f64 / cost::full_cache_steps_per_token(t) / t as f64;
            assert!((c - expect).abs() < 1e-6 * expect, "{c} vs {expect}");
        }
    }
}

/// Demotions at a query of each token's own (`Choices::with_demotions`, what a two-tier cache
/// does) read like the demotion schedules that make the same moves: random `F/W/rank:1[/M]`
/// tokens forwarded as their schedules, and again as their plain first form `F` with the demotion
/// query and the expiry given per token, give the same logits; without the demotions they differ.
#[test]
fn per_token_demotions_forward_like_the_schedules_that_make_them() {
    let (b, t) = (2, 40);
    let timed: Vec<StoreOption> =
        ["full/3/rank:1", "rank:2/5/rank:1", "full/4/rank:1/6"].iter().map(|s| s.parse().unwrap()).collect();
    let cfg = ModelConfig::tiny().with_timed(&timed).unwrap();
    let model = randomize(Model::new(&cfg, &device()), 60, 0.4);
    let mut rng = StdRng::seed_from_u64(61);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let first_timed = cfg.exact_index() + 1;
    let scheduled = Choices::from_fn(b, t, cfg.n_layers, |_, _, _| rng.random_range(first_timed..cfg.menu.len()));
    let cell = |s: usize, k: usize, l: usize| (s * t + k) * cfg.n_layers + l;
    let (mut demoted, mut evicted) = (vec![u32::MAX; b * t * cfg.n_layers], vec![u32::MAX; b * t * cfg.n_layers]);
    let mut plain = scheduled.clone();
    for (s, k, l) in (0..b).flat_map(|s| (0..t).flat_map(move |k| (0..2).map(move |l| (s, k, l)))) {
        let o = cfg.menu[scheduled.get(s, k, l)];
        plain.set(s, k, l, cfg.option_index(o.stored_as(cfg.exact_option())).unwrap());
        let (at, then) = o.later(k).unwrap();
        assert_eq!(then, StoreOption::Rank(1));
        demoted[cell(s, k, l)] = at as u32;
        if let Some(end) = o.expires_at(k) {
            evicted[cell(s, k, l)] = end as u32;
        }
    }
    let forward = |c: &Choices| to_vec(model.forward(model.tokens(&ids, b, t, &device()).unwrap(), c).unwrap());
    let par = forward(&scheduled);
    let undemoted = plain.clone().with_evictions(evicted.clone());
    assert!(max_rel_err(&forward(&undemoted), &par) > 1e-3, "the demotions should change later logits");
    let explicit = undemoted.with_demotions(demoted, StoreOption::Rank(1));
    let err = max_rel_err(&forward(&explicit), &par);
    assert!(err < 1e-5, "per-token demotions vs schedules: max rel err {err}");
}

/// A two-tier cache (`KvCache::demote`): every token written at rank 3; after each step a random
/// held rank-3 token of each stream and layer may be demoted to rank 1 (joining that tier as its
/// newest), and the oldest rank-1 token may be evicted. Through both storages the decode equals
/// the parallel forward of the same moves (`Choices::with_demotions` and `with_evictions`), and
/// the cache holds what the cost model charges (nested: nothing kept beside a factor token).
#[test]
fn a_two_tier_cache_decodes_like_its_demotions_in_the_parallel_forward() {
    let (b, t) = (2, 30);
    let cfg = ModelConfig::tiny();
    let (from, to) = (cfg.option_index(StoreOption::Rank(3)).unwrap(), cfg.option_index(StoreOption::Rank(1)).unwrap());
    let model = randomize(Model::new(&cfg, &device()), 70, 0.4);
    let ids = {
        let mut rng = StdRng::seed_from_u64(71);
        (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect::<Vec<u32>>()
    };
    let l_n = cfg.n_layers;
    let cell = |s: usize, k: usize, l: usize| (s * t + k) * l_n + l;
    let mut runs = Vec::new();
    for storage in [Storage::Host, Storage::Tensors] {
        let mut rng = StdRng::seed_from_u64(72);
        let (mut demoted, mut evicted) = (vec![u32::MAX; b * t * l_n], vec![u32::MAX; b * t * l_n]);
        // Per (stream, layer): positions in tier 1 and in tier 2, oldest first.
        let mut tiers = vec![(Vec::new(), std::collections::VecDeque::new()); b * l_n];
        let mut cache = KvCache::with_storage(&cfg, b, storage);
        let mut logits = Vec::new();
        for q in 0..t {
            let step_ids: Vec<u32> = (0..b).map(|s| ids[s * t + q]).collect();
            let (out, pending) = model.step(model.tokens(&step_ids, b, 1, &device()).unwrap(), &cache).unwrap();
            logits.push(to_vec(out));
            cache.push(pending, &vec![from; b * l_n]).unwrap();
            for (s, l) in (0..b).flat_map(|s| (0..l_n).map(move |l| (s, l))) {
                let (first, second) = &mut tiers[s * l_n + l];
                first.push(q);
                if rng.random_range(0..2) == 0 {
                    let index = rng.random_range(0..first.len());
                    cache.demote(s, l, from, index, to).unwrap();
                    let k = first.remove(index);
                    demoted[cell(s, k, l)] = (q + 1) as u32;
                    second.push_back(k);
                }
                if rng.random_range(0..10) < 3
                    && let Some(k) = second.pop_front()
                {
                    cache.evict(s, l, to, 0).unwrap();
                    evicted[cell(s, k, l)] = (q + 1) as u32;
                }
            }
            for s in 0..b {
                let bytes = |o| cost::bytes_per_token(&cfg, o);
                let expect: usize = tiers[s * l_n..(s + 1) * l_n]
                    .iter()
                    .map(|(first, second)| {
                        first.len() * bytes(StoreOption::Rank(3)) + second.len() * bytes(StoreOption::Rank(1))
                    })
                    .sum();
                assert_eq!(cache.stream_bytes(s), expect, "{storage:?}, stream {s}, after step {q}");
            }
        }
        // Logits `[B, T, V]` from the steps' `[B, V]`.
        let v = cfg.vocab_size;
        let logits: Vec<f32> = (0..b)
            .flat_map(|s| (0..t).flat_map(|q| logits[q][s * v..(s + 1) * v].to_vec()).collect::<Vec<_>>())
            .collect();
        runs.push((logits, demoted, evicted));
    }
    let (logits, demoted, evicted) = &runs[0];
    assert_eq!((demoted, evicted), (&runs[1].1, &runs[1].2), "both storages make the same moves");
    assert!(demoted.iter().filter(|&&d| d != u32::MAX).count() > b * l_n * 5, "the test should demote");
    assert!(evicted.iter().filter(|&&e| e != u32::MAX).count() > b * l_n * 2, "the test should evict");
    let choices = Choices::filled(b, t, l_n, from).with_evictions(evicted.clone());
    let forward = |c: &Choices| to_vec(model.forward(model.tokens(&ids, b, t, &device()).unwrap(), c).unwrap());
    assert!(max_rel_err(&forward(&choices), logits) > 1e-3, "the demotions should change later logits");
    let par = forward(&choices.with_demotions(demoted.clone(), StoreOption::Rank(1)));
    for (storage, (logits, ..)) in ["host", "tensors"].iter().zip(&runs) {
        let err = max_rel_err(logits, &par);
        assert!(err < 2e-4, "{storage} decode vs parallel: max rel err {err}");
    }
    // Demoting to a rank that is not lower, or from a dense option, is refused.
    let mut cache = KvCache::with_storage(&cfg, 1, Storage::Host);
    let (_, pending) = model.step(model.tokens(&ids[..1], 1, 1, &device()).unwrap(), &cache).unwrap();
    cache.push(pending, &vec![to; l_n]).unwrap();
    assert!(cache.demote(0, 0, to, 0, from).is_err());
    assert!(cache.demote(0, 0, cfg.exact_index(), 0, to).is_err());
}

/// Review decisions (DESIGN.md §10): random write options and random allowed review actions at
/// age 3 (and, with keep ages 5 and 9, reviews that keep a token to a later age) decode, through
/// both storages, exactly like the parallel forward of the options the tokens ended with, and the
/// cache holds what the cost model charges those options after every step; with every token
/// exact, the attention the book says a token received equals the parallel forward's attention
/// maps.
#[test]
fn review_decisions_decode_like_their_schedules_and_the_book_sees_the_attention_received() {
    review_decisions_decode_like_their_schedules(ahr_tpa::ReviewAt::at_age(3));
}

#[test]
fn reviews_that_keep_to_a_later_age_decode_like_their_schedules() {
    let keep = ahr_tpa::KeepAges::new(3, &[5, 9]).unwrap();
    review_decisions_decode_like_their_schedules(ahr_tpa::ReviewAt::Age { age: 3, keep, again: false });
}

/// A chain (`again`): a token kept to age 5 comes up again there and may be dropped, kept to 9
/// (and reviewed there again) or kept to the end; the same parity, bytes and attention checks.
#[test]
fn a_chain_of_reviews_decodes_like_the_schedules_its_tokens_end_with() {
    let keep = ahr_tpa::KeepAges::new(3, &[5, 9]).unwrap();
    review_decisions_decode_like_their_schedules(ahr_tpa::ReviewAt::Age { age: 3, keep, again: true });
}

fn review_decisions_decode_like_their_schedules(at: ahr_tpa::ReviewAt) {
    use ahr_tpa::ReviewBook;
    let (b, t, age) = (2, 80, at.age().unwrap());
    let (ages, per) = (at.stage_ages(), at.features().len());
    let base = ModelConfig::tiny();
    let cfg = base.with_timed(&at.menu_extras(&base)).unwrap();
    let l_n = cfg.n_layers;
    let heads = l_n * (1 + ages.len());
    let model = randomize(Model::new(&cfg, &device()), 60, 0.4);
    let mut rng = StdRng::seed_from_u64(61);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let plain: Vec<usize> = (0..cfg.menu.len()).filter(|&o| !cfg.menu[o].is_timed()).collect();
    let run = |storage: Storage, rng: &mut StdRng, all_exact: bool| {
        let mut cache = ahr_tpa::KvCache::with_storage(&cfg, b, storage).with_review(age);
        let mut book = ReviewBook::new(&cfg, b, at).unwrap();
        let mut effective = Choices::exact(&cfg, b, t);
        let mut logits = vec![0f32; b * t * cfg.vocab_size];
        let mut received = Vec::new(); // (stream, layer, position, stage, attention received, since the last review)
        let mut reached = vec![0usize; ages.len()]; // reviewable tokens under review, per stage
        let mut sent = vec![0usize; ages.len()]; // tokens kept on to a stage's age that reach it in the run
        let v = cfg.vocab_size;
        for q in 0..t {
            let step_ids: Vec<u32> = (0..b).map(|s| ids[s * t + q]).collect();
            let out = model.step_with_stats(model.tokens(&step_ids, b, 1, &device()).unwrap(), &cache).unwrap();
            book.observe(&out, &step_ids).unwrap();
            let features = book.features(q);
            let masks = book.masks(q);
            for s in 0..b {
                for (stage, a) in ages.iter().enumerate() {
                    for l in 0..l_n {
                        let f = &features[((s * ages.len() + stage) * l_n + l) * per..][..per];
                        if f[0] == 1.0 {
                            received.push((s, l, q - a, stage, f[2], f.get(5).copied().unwrap_or(f[2])));
                        }
                    }
                }
            }
            let m = cfg.menu.len();
            let mut actions = Vec::new();
            for s in 0..b {
                for _ in 0..l_n {
                    actions.push(if all_exact { cfg.exact_index() } else { plain[rng.random_range(0..plain.len())] });
                }
                for head in l_n..heads {
                    let row = &masks[(s * heads + head) * m..(s * heads + head + 1) * m];
                    let ok: Vec<usize> = (0..m).filter(|&o| row[o]).collect();
                    actions.push(if all_exact { ok[0] } else { ok[rng.random_range(0..ok.len())] });
                }
            }
            let o = to_vec(out.logits);
            let (writes, reviewed) = book.store(&mut cache, out.pending, &actions, q).unwrap();
            for s in 0..b {
                logits[(s * t + q) * v..(s * t + q + 1) * v].copy_from_slice(&o[s * v..(s + 1) * v]);
                for l in 0..l_n {
                    effective.set(s, q, l, writes[s * l_n + l]);
                }
            }
            for r in reviewed.iter().filter(|r| r.position != usize::MAX) {
                effective.set(r.stream, r.position, r.layer, r.effective);
                reached[r.stage] += usize::from(r.reviewable);
                if let Some(&a) = ages.get(r.stage + 1).filter(|&&a| cfg.menu[r.effective].window() == Some(a)) {
                    sent[r.stage + 1] += usize::from(r.position + a < t);
                }
            }
            for s in 0..b {
                let held: usize = (0..=q)
                    .flat_map(|k| (0..l_n).map(move |l| (k, l)))
                    .map(|(k, l)| cost::bytes_at(&cfg, cfg.menu[effective.get(s, k, l)], k, q + 1))
                    .sum();
                assert_eq!(cache.stream_bytes(s), held, "{storage:?}, stream {s}, after step {q}");
            }
        }
        // Every token kept on to a chain's next age comes up for review there (and none else).
        assert_eq!(reached[1..], sent[1..], "{storage:?}: later reviews per stage vs tokens kept on to them");
        (logits, effective, received, reached)
    };
    // The attention the book says token r received from the queries after it up to its review
    // age (and since its previous review), against the parallel forward's maps under `effective`.
    let check_received = |effective: &Choices, received: Vec<(usize, usize, usize, usize, f32, f32)>| {
        let (_, maps) =
            model.forward_with_attention_maps(model.tokens(&ids, b, t, &device()).unwrap(), effective).unwrap();
        let h = cfg.n_heads;
        let probs: Vec<Vec<f32>> = maps.iter().map(|m| to_vec(m.probs.clone())).collect(); // [B, h, T, T]
        let drew = |s: usize, l: usize, r: usize, from: usize, to: usize| -> f32 {
            (from..=to).map(|q| (0..h).map(|hh| probs[l][((s * h + hh) * t + q) * t + r]).sum::<f32>() / h as f32).sum()
        };
        for (s, l, r, stage, got, since) in received {
            let want = drew(s, l, r, r + 1, r + ages[stage]);
            assert!((got - want).abs() < 1e-4 * want.max(1.0), "stream {s} layer {l} token {r}: {got} vs {want}");
            let from = if stage == 0 { r + 1 } else { r + ages[stage - 1] + 1 };
            let want = drew(s, l, r, from, r + ages[stage]);
            assert!((since - want).abs() < 1e-4 * want.max(1.0), "token {r}, stage {stage}: since {since} vs {want}");
        }
    };
    for storage in [Storage::Host, Storage::Tensors] {
        let (logits, effective, received, reached) = run(storage, &mut StdRng::seed_from_u64(62), false);
        // A chain reviews tokens at every age (at the last one only those kept on twice).
        assert!(reached.iter().all(|&n| n > 0) && reached[0] > 10, "reviews per stage: {reached:?}");
        if storage == Storage::Host {
            check_received(&effective, received);
        }
        let changed = (0..b)
            .flat_map(|s| (0..t).map(move |k| (s, k)))
            .filter(|&(s, k)| effective.get(s, k, 1) > cfg.exact_index())
            .count();
        assert!(changed > 10, "reviews should change some tokens ({changed})");
        let kept_longer = (0..b)
            .flat_map(|s| (0..t).flat_map(move |k| (0..l_n).map(move |l| (s, k, l))))
            .filter(|&(s, k, l)| cfg.menu[effective.get(s, k, l)].window().is_some_and(|w| w > age))
            .count();
        let has_keep = matches!(at, ahr_tpa::ReviewAt::Age { keep, .. } if !keep.is_empty());
        assert_eq!(kept_longer > 10, has_keep, "tokens kept to a later age: {kept_longer}");
        let par = to_vec(model.forward(model.tokens(&ids, b, t, &device()).unwrap(), &effective).unwrap());
        let err = max_rel_err(&logits, &par);
        assert!(err < 2e-4, "{storage:?} decode with reviews vs parallel: max rel err {err}");
    }
    let (_, exact, received, _) = run(Storage::Host, &mut rng, true);
    assert_eq!(exact, Choices::exact(&cfg, b, t));
    assert_eq!(received.len(), b * l_n * (t - age));
    check_received(&exact, received);
}

/// Spike reviews: the token under review at step q is the kept token that topped query q − 1's
/// row (the parallel forward's attention maps, mean over heads), its `spike_weight` is that
/// weight, and random keep/drop decisions decode, through both storages, exactly like the
/// parallel forward of the writes with those evictions, while the cache holds what the cost
/// model charges after every step.
#[test]
fn spike_reviews_take_the_top_of_the_previous_row_and_decode_like_evictions() {
    // `"spike-tokens"` reviews: the same tokens at the same moments as `"spike"`, with the two
    // token-equality facts after its seven features (checked against the ids below).
    use ahr_tpa::{ReviewAt, ReviewBook, SPIKE_FEATURES, SPIKE_TOKEN_FEATURES};
    let (b, t) = (2, 80);
    let cfg = ModelConfig::tiny();
    let (l_n, m, per) = (cfg.n_layers, cfg.menu.len(), SPIKE_TOKEN_FEATURES.len());
    assert_eq!(SPIKE_TOKEN_FEATURES[..SPIKE_FEATURES.len()], SPIKE_FEATURES);
    let drop = cfg.option_index(StoreOption::Drop).unwrap();
    let model = randomize(Model::new(&cfg, &device()), 70, 0.4);
    let mut rng = StdRng::seed_from_u64(71);
    // Few distinct tokens, so that rows often repeat a reviewed token's neighbours.
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..4)).collect();
    let run = |storage: Storage, rng: &mut StdRng| {
        let mut cache = KvCache::with_storage(&cfg, b, storage);
        let mut book = ReviewBook::new(&cfg, b, ReviewAt::Spike { tokens: true }).unwrap();
        let mut matches = [0usize; 2];
        let mut writes = Choices::exact(&cfg, b, t);
        let mut evicted = vec![u32::MAX; b * t * l_n];
        let mut logits = vec![0f32; b * t * cfg.vocab_size];
        let mut reviews = Vec::new(); // (stream, layer, step, position, spike weight)
        let v = cfg.vocab_size;
        for q in 0..t {
            let step_ids: Vec<u32> = (0..b).map(|s| ids[s * t + q]).collect();
            let out = model.step_with_stats(model.tokens(&step_ids, b, 1, &device()).unwrap(), &cache).unwrap();
            book.observe(&out, &step_ids).unwrap();
            let (features, masks) = (book.features(q), book.masks(q));
            let mut actions = Vec::new();
            for s in 0..b {
                // Writes: mostly kept (a fifth dropped); reviews: keep or drop at random.
                for _ in 0..l_n {
                    actions.push(if rng.random_range(0..5) == 0 { drop } else { rng.random_range(1..m) });
                }
                for l in 0..l_n {
                    let row = &masks[((s * 2 * l_n) + l_n + l) * m..((s * 2 * l_n) + l_n + l + 1) * m];
                    let ok: Vec<usize> = (0..m).filter(|&o| row[o]).collect();
                    actions.push(ok[rng.random_range(0..ok.len())]);
                }
            }
            let o = to_vec(out.logits);
            let (written, reviewed) = book.store(&mut cache, out.pending, &actions, q).unwrap();
            for s in 0..b {
                logits[(s * t + q) * v..(s * t + q + 1) * v].copy_from_slice(&o[s * v..(s + 1) * v]);
                for l in 0..l_n {
                    writes.set(s, q, l, written[s * l_n + l]);
                }
            }
            for (i, r) in reviewed.iter().enumerate().filter(|(_, r)| r.reviewable) {
                let (s, l) = (i / l_n, i % l_n);
                let f = &features[(s * l_n + l) * per..(s * l_n + l + 1) * per];
                assert_eq!(f[0], 1.0, "a token under review is marked present");
                let id = |k: usize| ids[s * t + k];
                let prefix = r.position > 0 && id(q - 1) == id(r.position - 1);
                assert_eq!((f[7], f[8]), (f32::from(u8::from(prefix)), f32::from(u8::from(id(q) == id(r.position)))));
                matches[0] += usize::from(prefix);
                matches[1] += usize::from(f[8] == 1.0);
                reviews.push((s, l, q, r.position, f[2]));
                if let Some(at) = r.evicted_at {
                    assert_eq!((at, r.effective), (q + 1, drop));
                    evicted[(s * t + r.position) * l_n + l] = at as u32;
                }
            }
            for s in 0..b {
                let held: usize = (0..=q)
                    .flat_map(|k| (0..l_n).map(move |l| (k, l)))
                    .filter(|&(k, l)| evicted[(s * t + k) * l_n + l] as usize > q + 1)
                    .map(|(k, l)| cost::bytes_at(&cfg, cfg.menu[writes.get(s, k, l)], k, q + 1))
                    .sum();
                assert_eq!(cache.stream_bytes(s), held, "{storage:?}, stream {s}, after step {q}");
            }
        }
        assert!(matches.iter().all(|&n| n > 10), "token matches seen: {matches:?}");
        (logits, writes.with_evictions(evicted), reviews)
    };
    for storage in [Storage::Host, Storage::Tensors] {
        let (logits, choices, reviews) = run(storage, &mut StdRng::seed_from_u64(72));
        let dropped = reviews.iter().filter(|r| choices.evicted_at(r.0, r.3, r.1).is_some()).count();
        assert!(reviews.len() > b * l_n * t / 2 && dropped > 20, "{} reviews, {dropped} drops", reviews.len());
        let tokens = model.tokens(&ids, b, t, &device()).unwrap();
        let par = to_vec(model.forward(tokens.clone(), &choices).unwrap());
        let err = max_rel_err(&logits, &par);
        assert!(err < 2e-4, "{storage:?} decode with spike reviews vs parallel: max rel err {err}");
        let (_, maps) = model.forward_with_attention_maps(tokens, &choices).unwrap();
        let h = cfg.n_heads;
        for &(s, l, q, position, spike) in &reviews {
            let probs = to_vec(maps[l].probs.clone()); // [B, h, T, T]
            let row = q - 1;
            let weight = |k: usize| (0..h).map(|hh| probs[((s * h + hh) * t + row) * t + k]).sum::<f32>() / h as f32;
            let held = |k: usize| choices.get(s, k, l) != drop && choices.evicted_at(s, k, l).is_none_or(|e| e > row);
            let top = (0..row).filter(|&k| held(k)).max_by(|&a, &c| weight(a).total_cmp(&weight(c))).unwrap();
            assert_eq!(position, top, "stream {s} layer {l} step {q}");
            assert!((spike - weight(top)).abs() < 1e-4, "{spike} vs {}", weight(top));
        }
    }
}

#[test]
fn hidden_keys_far_above_the_visible_ones_stay_hidden() {
    // Large weights make attention scores span hundreds of nats, so a dropped key's score can lie
    // far above every visible one in its row: its weight must still be exactly zero (no overflow
    // of exp, no inf × 0), and the parallel forward must still equal decode.
    let cfg = ModelConfig::tiny();
    let mut rng = StdRng::seed_from_u64(21);
    let choices =
        Choices::from_fn(
            B,
            T,
            cfg.n_layers,
            |_, t, _| if t % 3 == 0 { 0 } else { rng.random_range(0..cfg.menu.len()) },
        );
    let model = randomize(Model::new(&cfg, &device()), 4, 3.0);
    let ids = tokens(&cfg, 5);
    let par = parallel(&model, &ids, &choices);
    assert!(par.iter().all(|x| x.is_finite()), "non-finite logits from the parallel forward");
    let (dec, _) = decode_all(&model, &ids, B, T, &choices);
    let err = max_rel_err(&dec, &par);
    assert!(err < 2e-3, "decode vs parallel with large scores: max rel err {err}");
}

#[test]
fn dropped_tokens_are_invisible_and_choices_matter() {
    let cfg = ModelConfig::tiny();
    let model = randomize(Model::new(&cfg, &device()), 1, 0.4);
    let ids = tokens(&cfg, 2);
    let logits = |spec: ChoiceSpec| parallel(&model, &ids, &spec.choices(&cfg, B, T).unwrap());
    let exact = logits(ChoiceSpec::Exact);
    let rank1 = logits(ChoiceSpec::Uniform(StoreOption::Rank(1)));
    assert!(max_rel_err(&rank1, &exact) > 1e-3, "rank-1 storage should change later logits");
    // With every token dropped each position sees only itself: the same as running a
    // one-token sequence at that position's token, position 0's logits agree with exact.
    let drop = logits(ChoiceSpec::Uniform(StoreOption::Drop));
    let v = cfg.vocab_size;
    assert!(max_rel_err(&drop[..v], &exact[..v]) < 1e-5);
}

#[test]
fn all_exact_tpa_equals_the_t6_formulas() {
    let dims = T6Dims { vocab: 29, layers: 2, heads: 3, head_dim: 12, d: 20, rank: 3, q_rank: 2 };
    for untied in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (wpath, cpath) = (dir.path().join("w.safetensors"), dir.path().join("c.json"));
        let weights = dims.random_weights(17, untied);
        write_safetensors(&weights, &wpath);
        std::fs::write(&cpath, dims.config_json()).unwrap();
        let model = ahr_tpa::t6::import(&wpath, &cpath, &device()).unwrap();
        assert_eq!(model.config().tied_embeddings, !untied);
        assert_eq!(model.config().menu, vec![StoreOption::Rank(1), StoreOption::Rank(2), StoreOption::Rank(3)]);
        let ids: Vec<u32> = (0..T as u32).map(|i| (i * 7 + 3) % 29).collect();
        let got = to_vec(
            model.forward(model.tokens(&ids, 1, T, &device()).unwrap(), &Choices::exact(model.config(), 1, T)).unwrap(),
        );
        let want: Vec<f32> = naive_t6_logits(&weights, &dims, &ids).concat();
        let err = max_rel_err(&got, &want);
        assert!(err < 1e-4, "T6 import (untied = {untied}): max rel err {err}");
    }
}

#[test]
fn t6_import_rejects_bad_files_with_names() {
    let dims = T6Dims { vocab: 29, layers: 1, heads: 3, head_dim: 12, d: 20, rank: 2, q_rank: 2 };
    let dir = tempfile::tempdir().unwrap();
    let (wpath, cpath) = (dir.path().join("w.safetensors"), dir.path().join("c.json"));
    std::fs::write(&cpath, dims.config_json()).unwrap();
    let import = || ahr_tpa::t6::import(&wpath, &cpath, &device()).map(|_| ()).unwrap_err().to_string();

    let mut weights = dims.random_weights(1, false);
    weights.get_mut("transformer.h.0.attn.c_qkv.W_A_k.weight").unwrap().0 = vec![5, 20];
    weights.get_mut("transformer.h.0.attn.c_qkv.W_A_k.weight").unwrap().1.truncate(100);
    write_safetensors(&weights, &wpath);
    let err = import();
    assert!(err.contains("W_A_k") && err.contains("[5, 20]") && err.contains("w.safetensors"), "{err}");

    let mut weights = dims.random_weights(1, false);
    weights.remove("transformer.h.0.mlp.c_fc2.weight");
    write_safetensors(&weights, &wpath);
    assert!(import().contains("missing tensor `transformer.h.0.mlp.c_fc2.weight`"));

    std::fs::write(&wpath, b"not safetensors").unwrap();
    assert!(import().contains("not a safetensors file"));
    std::fs::write(&cpath, r#"{"vocab_size": 29, "n_layers": 1}"#).unwrap();
    assert!(import().contains("c.json"));
}

#[test]
fn checkpoint_round_trip_and_bad_files() {
    let cfg = ModelConfig::tiny();
    let model = randomize(Model::new(&cfg, &device()), 9, 0.4);
    let dir = tempfile::tempdir().unwrap();
    let mdir = dir.path().join("m");
    save_model(&model, &mdir).unwrap();
    let loaded = load_model(&mdir, &device()).unwrap();
    let ids = tokens(&cfg, 4);
    let choices = Choices::exact(&cfg, B, T);
    assert_eq!(parallel(&model, &ids, &choices), parallel(&loaded, &ids, &choices));
    assert!(std::fs::read_dir(&mdir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));

    // Missing directory, truncated weights, a config that disagrees with the weights, corrupt JSON.
    let err = load_model(&dir.path().join("nope"), &device()).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    let weights = std::fs::read(mdir.join(WEIGHTS_FILE)).unwrap();
    std::fs::write(mdir.join(WEIGHTS_FILE), &weights[..weights.len() / 2]).unwrap();
    let err = load_model(&mdir, &device()).unwrap_err().to_string();
    assert!(err.contains(WEIGHTS_FILE), "{err}");
    std::fs::write(mdir.join(WEIGHTS_FILE), &weights).unwrap();
    let mut other = cfg.clone();
    other.d_model = 30;
    std::fs::write(mdir.join(CONFIG_FILE), serde_json::to_string(&other).unwrap()).unwrap();
    let err = load_model(&mdir, &device()).unwrap_err().to_string();
    assert!(err.contains("do not match") && err.contains(WEIGHTS_FILE), "{err}");
    std::fs::write(mdir.join(CONFIG_FILE), "{\"vocab_size\": ").unwrap();
    let err = load_model(&mdir, &device()).unwrap_err().to_string();
    assert!(err.contains(CONFIG_FILE) && err.contains("parse"), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = ModelConfig::tiny();
    let model = Model::new(&cfg, &device());
    assert!(model.tokens(&[1, 2, 99], 1, 3, &device()).unwrap_err().to_string().contains("99"));
    assert!(model.tokens(&[1, 2], 1, 3, &device()).is_err());
    let t = model.tokens(&[1, 2, 3], 1, 3, &device()).unwrap();
    let err = model.forward(t, &Choices::exact(&cfg, 1, 4)).unwrap_err().to_string();
    assert!(err.contains("choices: have shape"), "{err}");
}

#[test]
fn absolute_positions_keep_decode_equal_to_parallel_and_are_bounded() {
    let mut cfg = ModelConfig::tiny();
    cfg.max_positions = T;
    let mut rng = StdRng::seed_from_u64(8);
    let choices = Choices::from_fn(B, T, cfg.n_layers, |_, _, _| rng.random_range(0..cfg.menu.len()));
    check_parallel_equals_decode(&cfg, &choices, 21);
    let model = Model::new(&cfg, &device());
    let ids: Vec<u32> = (0..T as u32 + 1).collect();
    let t = model.tokens(&ids, 1, T + 1, &device()).unwrap();
    let err = model.forward(t, &Choices::exact(&cfg, 1, T + 1)).unwrap_err().to_string();
    assert!(err.contains("max_positions"), "{err}");
}

#[test]
fn an_evicted_key_is_seen_before_its_eviction_and_never_after() {
    let cfg = ModelConfig::tiny();
    let model = randomize(Model::new(&cfg, &device()), 21, 0.4);
    let ids = tokens(&cfg, 22);
    let (key, from) = (3, 8);
    let exact = Choices::exact(&cfg, B, T);
    let mut evictions = vec![u32::MAX; B * T * cfg.n_layers];
    let mut dropped = exact.clone();
    for b in 0..B {
        for l in 0..cfg.n_layers {
            evictions[(b * T + key) * cfg.n_layers + l] = from as u32;
            dropped.set(b, key, l, 0);
        }
    }
    let evicted = parallel(&model, &ids, &exact.clone().with_evictions(evictions));
    let (full, gone) = (parallel(&model, &ids, &exact), parallel(&model, &ids, &dropped));
    let v = cfg.vocab_size;
    for b in 0..B {
        // Layer 1 mixes positions, so only positions before the eviction are unaffected
        // everywhere; from `from` on, the key is invisible in both layers as if dropped.
        let rows =
            |x: &[f32], range: std::ops::Range<usize>| x[(b * T + range.start) * v..(b * T + range.end) * v].to_vec();
        assert!(max_rel_err(&rows(&evicted, 0..from), &rows(&full, 0..from)) < 1e-5);
        assert!(max_rel_err(&rows(&evicted, 0..from), &rows(&gone, 0..from)) > 1e-3, "the key matters before");
    }
    // With every layer evicting at the key's own successor, it matches dropping the key outright.
    let mut at_next = vec![u32::MAX; B * T * cfg.n_layers];
    for b in 0..B {
        for l in 0..cfg.n_layers {
            at_next[(b * T + key) * cfg.n_layers + l] = (key + 1) as u32;
        }
    }
    let next = parallel(&model, &ids, &exact.with_evictions(at_next));
    assert!(max_rel_err(&next, &gone) < 1e-5);
}

/// Evicting tokens from the middle of a plain option's slot (`KvCache::evict`, how score-based
/// rules run) decodes like the parallel forward with the same evictions, in both storages and
/// across block boundaries; the cache then holds the bytes of the tokens left.
#[test]
fn tokens_evicted_from_the_cache_decode_like_evictions_in_the_parallel_forward() {
    let (b_n, t_n) = (2, 70);
    let cfg = ModelConfig::tiny();
    let l_n = cfg.n_layers;
    let model = randomize(Model::new(&cfg, &device()), 50, 0.4);
    let mut rng = StdRng::seed_from_u64(51);
    let ids: Vec<u32> = (0..b_n * t_n).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let kept: Vec<usize> = (0..cfg.menu.len()).filter(|&o| cfg.menu[o] != StoreOption::Drop).collect();
    let choices = Choices::from_fn(b_n, t_n, l_n, |_, _, _| kept[rng.random_range(0..kept.len())]);
    let evicted_at: Vec<u32> = (0..b_n * t_n * l_n)
        .map(|i| {
            let k = (i / l_n) % t_n;
            if rng.random_range(0..3) == 0 { u32::MAX } else { rng.random_range(k + 1..=t_n) as u32 }
        })
        .collect();
    let par = parallel_at(&model, &ids, b_n, t_n, &choices.clone().with_evictions(evicted_at.clone()));
    for storage in [Storage::Host, Storage::Tensors] {
        let mut cache = KvCache::with_storage(&cfg, b_n, storage);
        // Per stream, layer and option: the positions held, in push order.
        let mut held = vec![vec![Vec::<usize>::new(); cfg.menu.len()]; b_n * l_n];
        let v = cfg.vocab_size;
        let mut dec = vec![0f32; b_n * t_n * v];
        for q in 0..t_n {
            let col: Vec<u32> = (0..b_n).map(|b| ids[b * t_n + q]).collect();
            let (logits, pending) = model.step(model.tokens(&col, b_n, 1, &device()).unwrap(), &cache).unwrap();
            let logits = to_vec(logits);
            for b in 0..b_n {
                dec[(b * t_n + q) * v..(b * t_n + q + 1) * v].copy_from_slice(&logits[b * v..(b + 1) * v]);
            }
            let c: Vec<usize> =
                (0..b_n).flat_map(|b| (0..l_n).map(move |l| (b, l))).map(|(b, l)| choices.get(b, q, l)).collect();
            cache.push(pending, &c).unwrap();
            for (b, l) in (0..b_n).flat_map(|b| (0..l_n).map(move |l| (b, l))) {
                held[b * l_n + l][choices.get(b, q, l)].push(q);
                for k in 0..=q {
                    if evicted_at[(b * t_n + k) * l_n + l] as usize == q + 1 {
                        let o = choices.get(b, k, l);
                        let list = &mut held[b * l_n + l][o];
                        let i = list.iter().position(|&p| p == k).unwrap();
                        cache.evict(b, l, o, i).unwrap();
                        list.remove(i);
                    }
                }
            }
        }
        let err = max_rel_err(&dec, &par);
        assert!(err < 2e-4, "{storage:?}: decode with evictions vs parallel: max rel err {err}");
        let left: usize = (0..b_n)
            .flat_map(|b| (0..t_n).flat_map(move |k| (0..l_n).map(move |l| (b, k, l))))
            .filter(|&(b, k, l)| evicted_at[(b * t_n + k) * l_n + l] == u32::MAX)
            .map(|(b, k, l)| cost::bytes_per_token(&cfg, cfg.menu[choices.get(b, k, l)]))
            .sum();
        assert_eq!(cache.bytes(), left, "{storage:?}: bytes of the tokens left");
    }
    let exact_cache = KvCache::with_storage(&cfg.clone().with_recent(&[4]).unwrap(), 1, Storage::Host);
    let mut timed = exact_cache;
    assert!(timed.evict(0, 0, cfg.menu.len(), 0).is_err(), "recent:4 is timed: not evictable by index");
    assert!(KvCache::with_storage(&cfg, 1, Storage::Host).evict(0, 0, 1, 0).is_err(), "nothing held");
}

fn parallel_at(model: &Model, ids: &[u32], b: usize, t: usize, choices: &Choices) -> Vec<f32> {
    to_vec(model.forward(model.tokens(ids, b, t, &device()).unwrap(), choices).unwrap())
}

#[test]
fn host_parallel_attention_equals_the_tensor_path_with_schedules_and_evictions() {
    // `forward` runs the [T, T] part in host memory on the CPU device; `forward_with_attention_maps`
    // runs it as tensor operations (it must return the maps). Both under demotion schedules,
    // expiring options, drops and evictions, on every attention family.
    let (b, t) = (3, 90);
    let timed: Vec<StoreOption> = ["full/3/rank:1", "rank:3/40/rank:2", "full/30/drop", "recent:5", "full/2/rank:1/20"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut gqa = ModelConfig::tiny();
    gqa.attention = AttentionKind::Gqa;
    gqa.kv_heads = Some(1);
    gqa.menu = vec![StoreOption::Drop, StoreOption::Full];
    for (i, cfg) in [ModelConfig::tiny().with_timed(&timed).unwrap(), gqa].into_iter().enumerate() {
        let model = randomize(Model::new(&cfg, &device()), 70 + i as u64, 0.4);
        let mut rng = StdRng::seed_from_u64(71 + i as u64);
        let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
        let choices = Choices::from_fn(b, t, cfg.n_layers, |_, _, _| rng.random_range(0..cfg.menu.len()));
        let evicted_at: Vec<u32> = (0..b * t * cfg.n_layers)
            .map(|k| {
                let pos = (k / cfg.n_layers) % t;
                if rng.random_range(0..4) > 0 { u32::MAX } else { rng.random_range(pos + 1..=t) as u32 }
            })
            .collect();
        for c in [choices.clone(), choices.with_evictions(evicted_at)] {
            let tokens = || model.tokens(&ids, b, t, &device()).unwrap();
            let host = to_vec(model.forward(tokens(), &c).unwrap());
            let tensors = to_vec(model.forward_with_attention_maps(tokens(), &c).unwrap().0);
            let err = max_rel_err(&host, &tensors);
            assert!(err < 1e-4, "family {i}: host vs tensor attention: max rel err {err}");
        }
    }
}
