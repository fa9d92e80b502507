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
use ahr_eval::baseline::{PerLayer, Scores};
use ahr_eval::harness::{Harness, Point};
use ahr_policy::ObsBatch;
use ahr_tasks::Task;
use ahr_tpa::{Model, StoreOption};
use burn::tensor::Device;

/// The committed model with the task of `envs/<env>` shortened to 32 tokens and 4 pairs.
struct Setup {
    model: Model,
    task: Task,
    spec: EnvSpec,
    dev: Device,
}

impl Setup {
    fn new(env: &str) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let env_path = root.join("envs").join(env);
        let mut spec = EnvSpec::load(&env_path).unwrap();
        let ahr_tasks::TaskConfig::Mqar(mqar) = &mut spec.task else { panic!("an MQAR env") };
        (mqar.seq_len, mqar.num_kv_pairs) = (32, vec![4]);
        let dev = ahr_tpa::device::from_env();
        let model =
            ahr_train::load_env_model(&root.join("policies/models/mqar-tiny-512"), &spec, &env_path, &dev).unwrap();
        let task = ahr_env::load_task(&spec, &env_path, model.config()).unwrap();
        Self { model, task, spec, dev }
    }

    fn harness(&self) -> Harness<'_> {
        Harness::new(&self.model, &self.task, &self.spec, 32, &self.dev, false).unwrap()
    }

    fn option(&self, name: &str) -> usize {
        self.model.config().option_index(name.parse::<StoreOption>().unwrap()).unwrap()
    }

    /// The point of a rule run in the environment: per row, one option per layer from the row's
    /// surprisal observation.
    fn env_rule(&self, h: &Harness, choose: impl Fn(f32) -> Vec<usize>) -> Point {
        let cfg = self.model.config();
        let features = ahr_policy::ObsSpec::rank(cfg.n_layers, cfg.vocab_size).features;
        let surprisal = features.iter().position(|f| f == "surprisal").unwrap();
        let act = |obs: &ObsBatch| obs.features.chunks(features.len()).flat_map(|row| choose(row[surprisal])).collect();
        h.env_point("env-rule", "", &self.spec, 1, act).unwrap().0
    }
}

/// Equal accuracy and bytes: the same decisions.
fn assert_same(rule: &Point, env: &Point) {
    assert!((rule.metric - env.metric).abs() < 1e-9, "rule {} vs environment {}", rule.metric, env.metric);
    let (a, b) = (rule.kv_bytes_per_token, env.kv_bytes_per_token);
    assert!((a - b).abs() < 1e-6 * b, "{a} vs {b} bytes per token");
}

#[test]
fn the_surprisal_rule_with_its_own_cache_is_the_environment_rule_and_the_full_cache_one_is_optimistic() {
    let s = Setup::new("mqar-tiny-restated-128.toml");
    let h = s.harness();
    let tau = 0.3f32;
    let rule = |scores| Baseline::Surprisal { tau, predictable: true, window: 1, store: StoreOption::Full, scores };
    let own = h.rule_point(&rule(Scores::Cache)).unwrap();
    let full = h.rule_point(&rule(Scores::FullCache)).unwrap();
    // In the environment: `full` when the observed surprisal is ≤ τ, else `recent:1` (exact for
    // one query), in every layer.
    let (full_option, recent1) = (s.option("full"), s.option("recent:1"));
    let env = s.env_rule(&h, |x| vec![if x <= tau { full_option } else { recent1 }; 2]);
    assert_same(&own, &env);
    // Read from the exact forward, the restated values look predictable even after their first
    // statement is gone: the optimistic variant keeps them and answers; the deployable one does not.
    assert!(full.metric > own.metric + 0.3, "full cache {} vs own cache {}", full.metric, own.metric);
}

#[test]
fn the_per_layer_surprisal_rule_is_the_environment_rule() {
    let s = Setup::new("mqar-tiny-restated-128-windows.toml");
    let h = s.harness();
    let tau = 0.3f32;
    let per_layer = PerLayer::split(2, (1, StoreOption::Full), (16, StoreOption::Rank(1)));
    let rule = h.rule_point(&Baseline::LayerSurprisal { per_layer, tau }).unwrap();
    let (recent1, rank1, window16) = (s.option("recent:1"), s.option("rank:1"), s.option("rank:1/16/drop"));
    let env = s.env_rule(&h, |x| vec![recent1, if x <= tau { rank1 } else { window16 }]);
    assert_same(&rule, &env);
    // Content matters: without the predicted tokens the same windows answer less.
    let plain = h.rule_point(&Baseline::LayerSurprisal { per_layer, tau: -1.0 }).unwrap();
    assert!(rule.metric > plain.metric, "{} vs {}", rule.metric, plain.metric);
}
