//! Restated MQAR with the committed `mqar-tiny-512` model (32-token sequences, 4 pairs, 2 of them
//! restated and queried): a restated value is one the model predicts, so its surprisal is low —
//! but only under a cache that still holds the pair's first statement.
//!
//! - The judge's own-cache surprisal rule makes, token by token, the decisions a rule reading
//!   the environment's `surprisal` observation makes (both compute it from the cache they keep),
//!   and scores the same accuracy and memory.
//! - Read from the exact full-cache forward instead, the same rule answers far better: the
//!   full-cache variant is optimistic, as `h2o-full-cache` is.
//! - The per-layer rule with content (`layer-surprisal`) likewise makes the decisions of the same
//!   rule run in the environment of `envs/mqar-tiny-restated-128-windows.toml` (layer 0
//!   `recent:1`, layer 1 `rank:1/16/drop` or, when predicted, `rank:1`).

use std::path::Path;

use ahr_env::EnvSpec;
use ahr_eval::Baseline;
use ahr_eval::baseline::Scores;
use ahr_eval::harness::Harness;
use ahr_tpa::StoreOption;

#[test]
fn the_surprisal_rule_with_its_own_cache_is_the_environment_rule_and_the_full_cache_one_is_optimistic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env_path = root.join("envs/mqar-tiny-restated-128.toml");
    let mut spec = EnvSpec::load(&env_path).unwrap();
    let ahr_tasks::TaskConfig::Mqar(mqar) = &mut spec.task else { panic!("an MQAR env") };
    (mqar.seq_len, mqar.num_kv_pairs) = (32, vec![4]);
    let dev = ahr_tpa::device::from_env();
    let model = ahr_train::load_env_model(&root.join("policies/models/mqar-tiny-512"), &spec, &env_path, &dev).unwrap();
    let cfg = model.config().clone();
    let task = ahr_env::load_task(&spec, &env_path, &cfg).unwrap();
    let h = Harness::new(&model, &task, &spec, 32, &dev, false).unwrap();

    let (tau, window) = (0.3f32, 1);
    let rule = |scores| Baseline::Surprisal { tau, predictable: true, window, store: StoreOption::Full, scores };
    let own = h.rule_point(&rule(Scores::Cache)).unwrap();
    let full = h.rule_point(&rule(Scores::FullCache)).unwrap();

    // The same rule in the environment: keep at `full` when the observed surprisal is ≤ τ,
    // else `recent:1` (exact for one query), in every layer.
    let index = |o: &str| cfg.option_index(o.parse::<StoreOption>().unwrap()).unwrap();
    let (full_option, recent1) = (index("full"), index("recent:1"));
    let features = ahr_policy::ObsSpec::rank(cfg.n_layers, cfg.vocab_size).features;
    let surprisal = features.iter().position(|f| f == "surprisal").unwrap();
    let (env, _) = h
        .env_point("env-rule", "", &spec, 1, |obs| {
            obs.features
                .chunks(features.len())
                .flat_map(|row| vec![if row[surprisal] <= tau { full_option } else { recent1 }; cfg.n_layers])
                .collect()
        })
        .unwrap();

    assert!((own.metric - env.metric).abs() < 1e-9, "own cache {} vs environment {}", own.metric, env.metric);
    assert!(
        (own.kv_bytes_per_token - env.kv_bytes_per_token).abs() < 1e-6 * env.kv_bytes_per_token,
        "{} vs {}",
        own.kv_bytes_per_token,
        env.kv_bytes_per_token
    );
    // Read from the exact forward, the restated values look predictable even after their first
    // statement is gone: the optimistic variant keeps them and answers; the deployable one does not.
    assert!(full.metric > own.metric + 0.3, "full cache {} vs own cache {}", full.metric, own.metric);
}

#[test]
fn the_per_layer_surprisal_rule_is_the_environment_rule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env_path = root.join("envs/mqar-tiny-restated-128-windows.toml");
    let mut spec = EnvSpec::load(&env_path).unwrap();
    let ahr_tasks::TaskConfig::Mqar(mqar) = &mut spec.task else { panic!("an MQAR env") };
    (mqar.seq_len, mqar.num_kv_pairs) = (32, vec![4]);
    let dev = ahr_tpa::device::from_env();
    let model = ahr_train::load_env_model(&root.join("policies/models/mqar-tiny-512"), &spec, &env_path, &dev).unwrap();
    let cfg = model.config().clone();
    let task = ahr_env::load_task(&spec, &env_path, &cfg).unwrap();
    let h = Harness::new(&model, &task, &spec, 32, &dev, false).unwrap();

    let tau = 0.3f32;
    let mut windows = [1; ahr_eval::baseline::MAX_RULE_LAYERS];
    windows[1] = 16;
    let mut stores = [StoreOption::Full; ahr_eval::baseline::MAX_RULE_LAYERS];
    stores[1] = StoreOption::Rank(1);
    let rule = h.rule_point(&Baseline::LayerSurprisal { layers: 2, windows, stores, tau }).unwrap();

    let index = |o: &str| cfg.option_index(o.parse::<StoreOption>().unwrap()).unwrap();
    let (recent1, rank1, window16) = (index("recent:1"), index("rank:1"), index("rank:1/16/drop"));
    let features = ahr_policy::ObsSpec::rank(cfg.n_layers, cfg.vocab_size).features;
    let surprisal = features.iter().position(|f| f == "surprisal").unwrap();
    let (env, _) = h
        .env_point("env-rule", "", &spec, 1, |obs| {
            obs.features
                .chunks(features.len())
                .flat_map(|row| [recent1, if row[surprisal] <= tau { rank1 } else { window16 }])
                .collect()
        })
        .unwrap();
    assert!((rule.metric - env.metric).abs() < 1e-9, "rule {} vs environment {}", rule.metric, env.metric);
    assert!(
        (rule.kv_bytes_per_token - env.kv_bytes_per_token).abs() < 1e-6 * env.kv_bytes_per_token,
        "{} vs {}",
        rule.kv_bytes_per_token,
        env.kv_bytes_per_token
    );
    // Content matters: without the predicted tokens the same windows answer less.
    let plain = h.rule_point(&Baseline::LayerSurprisal { layers: 2, windows, stores, tau: -1.0 }).unwrap();
    assert!(rule.metric > plain.metric, "{} vs {}", rule.metric, plain.metric);
}
