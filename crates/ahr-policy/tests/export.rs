//! Export round trip: the burn record and the safetensors copy give bit-identical weights and
//! identical decisions; a manifest that does not fit the model is refused, saying what differs.

use ahr_policy::export::{
    ExportError, FORMAT_VERSION, MANIFEST_FILE, Manifest, load_policy, load_safetensors, save_policy,
};
use ahr_policy::net::PolicyDims;
use ahr_policy::{ActorCritic, Granularity, ObsBatch, ObsSpec, PolicyConfig, RunningNorm};
use ahr_tpa::ModelConfig;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

struct Collect(Vec<u32>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let v = param.val().into_data().try_to_vec::<f32>().unwrap();
        self.0.extend(v.iter().map(|x| x.to_bits()));
    }
}

fn bits(net: &ActorCritic) -> Vec<u32> {
    let mut c = Collect(Vec::new());
    net.visit(&mut c);
    c.0
}

fn setup() -> (ModelConfig, Manifest, ActorCritic) {
    let cfg = ModelConfig::tiny();
    let obs = ObsSpec::rank(cfg.n_layers, cfg.vocab_size);
    let dims = PolicyDims {
        obs_dim: obs.dim(),
        vocab_size: cfg.vocab_size,
        heads: cfg.n_layers,
        options: cfg.menu.len(),
        candidate_features: 0,
    };
    let policy = PolicyConfig::default();
    let net = ActorCritic::new(&policy, dims, &ahr_tpa::device::from_env());
    let mut norm = RunningNorm::new(obs.dim());
    norm.update(&(0..obs.dim() * 4).map(|i| (i % 7) as f32).collect::<Vec<_>>(), 4);
    let manifest = Manifest {
        review: None,
        evict: None,
        format_version: FORMAT_VERSION,
        obs,
        norm,
        menu: cfg.menu.clone(),
        granularity: Granularity::PerToken,
        n_layers: cfg.n_layers,
        policy,
        dims,
        model_fingerprint: "abc123".into(),
        budget: Some(0.3),
        data_fingerprint: None,
        calibration: None,
    };
    (cfg, manifest, net)
}

fn obs(manifest: &Manifest) -> ObsBatch {
    let n = 9;
    let dim = manifest.dims.obs_dim;
    ObsBatch {
        features: (0..n * dim).map(|i| ((i * 31) % 17) as f32 / 4.0 - 2.0).collect(),
        tokens: (0..n as u32).map(|i| i * 3 % 37).collect(),
        masks: vec![true; n * manifest.dims.heads * manifest.dims.options],
        len: n,
    }
}

#[test]
fn export_then_load_is_bit_identical_with_identical_decisions() {
    let (cfg, mut manifest, net) = setup();
    manifest.data_fingerprint = Some("c0ffee".into());
    let dev = ahr_tpa::device::from_env();
    let dir = tempfile::tempdir().unwrap();
    save_policy(dir.path(), &manifest, &net).unwrap();
    let (loaded_manifest, loaded) = load_policy(dir.path(), &cfg, "abc123", &dev).unwrap();
    assert_eq!(loaded_manifest, manifest);
    // A manifest written before the corpus fingerprint existed still loads, without one.
    let path = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let old = text.replace(",\n  \"data_fingerprint\": \"c0ffee\"", "");
    assert_ne!(old, text, "the field is written");
    std::fs::write(&path, old).unwrap();
    assert_eq!(load_policy(dir.path(), &cfg, "abc123", &dev).unwrap().0.data_fingerprint, None);
    std::fs::write(&path, text).unwrap();
    assert_eq!(bits(&loaded), bits(&net));
    let fresh = ActorCritic::new(&manifest.policy, manifest.dims, &dev);
    assert_ne!(bits(&fresh), bits(&net), "a fresh network differs, so the comparison can fail");
    let from_safetensors = load_safetensors(dir.path(), fresh).unwrap();
    assert_eq!(bits(&from_safetensors), bits(&net));
    let o = obs(&manifest);
    let decide = |n: &ActorCritic| n.act_deterministic(&o, &manifest.norm, &dev);
    assert_eq!(decide(&loaded), decide(&net));
    assert_eq!(decide(&from_safetensors), decide(&net));

    // A policy started from a per-token table: the (trained) table travels in both files.
    let policy = PolicyConfig { prior_table: Some("table.json".into()), ..PolicyConfig::default() };
    let prefer: Vec<usize> = (0..cfg.vocab_size * cfg.n_layers).map(|i| i % manifest.dims.options).collect();
    let tabled = ActorCritic::new(&policy, manifest.dims, &dev).with_token_prior(&prefer, cfg.n_layers, 3.0).unwrap();
    let manifest = Manifest { policy, ..manifest.clone() };
    let dir = tempfile::tempdir().unwrap();
    save_policy(dir.path(), &manifest, &tabled).unwrap();
    let (loaded_manifest, loaded) = load_policy(dir.path(), &cfg, "abc123", &dev).unwrap();
    assert_eq!(loaded_manifest, manifest);
    assert_eq!(bits(&loaded), bits(&tabled));
    assert_ne!(bits(&loaded), bits(&net), "the table is in the weights");
    let fresh = ActorCritic::new(&manifest.policy, manifest.dims, &dev);
    assert_eq!(bits(&load_safetensors(dir.path(), fresh).unwrap()), bits(&tabled));
    assert_eq!(decide(&loaded), decide(&tabled));
}

/// A policy exported before networks could hold a per-token table (its record has no such
/// field) still loads and decides.
#[test]
fn a_policy_from_before_the_prior_table_loads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("policies/models/mqar-tiny/config.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let cfg: ModelConfig = serde_json::from_str(&text).unwrap();
    let dir = root.join("policies/mqar-tiny-budget-seed1");
    let text = std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
    let manifest: Manifest = serde_json::from_str(&text).unwrap();
    assert!(!text.contains("prior_table"));
    let dev = ahr_tpa::device::from_env();
    let (_, net) = load_policy(&dir, &cfg, &manifest.model_fingerprint, &dev).unwrap();
    let picks = net.act_deterministic(&obs(&manifest), &manifest.norm, &dev);
    assert_eq!(picks.len(), 9 * manifest.dims.heads);
}

/// An evicter decides over candidate slots and writes every token at its store: it loads on its
/// model with a menu that holds more options (an env's windows, for rules judged beside it) and is
/// refused where the menu lacks its store or its second tier's.
#[test]
fn an_evicter_needs_only_its_stores_in_the_menu() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("policies/models/text-python-tpa/config.json")).unwrap();
    let cfg: ModelConfig = serde_json::from_str(&text).unwrap();
    let dir = root.join("policies/text-python-tpa-layers-seed1");
    let manifest: Manifest = serde_json::from_str(&std::fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
    let eviction = manifest.evict.expect("an evicter");
    let tier = eviction.tier2.expect("a second tier").store;
    let fp = manifest.model_fingerprint.clone();
    let dev = ahr_tpa::device::from_env();
    assert_eq!(manifest.menu, cfg.menu);
    let mut windows = cfg.clone();
    windows.menu.push("recent:32".parse().unwrap());
    load_policy(&dir, &windows, &fp, &dev).unwrap();
    for missing in [eviction.store, tier] {
        let mut menu = cfg.clone();
        menu.menu.retain(|o| *o != missing);
        match load_policy(&dir, &menu, &fp, &dev) {
            Err(ExportError::Mismatch { cause, .. }) => assert_eq!(cause.setting, "menu"),
            other => panic!("without {missing}: expected a mismatch, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_manifest_that_does_not_fit_the_model_is_refused() {
    let (cfg, manifest, net) = setup();
    let dev = ahr_tpa::device::from_env();
    let dir = tempfile::tempdir().unwrap();
    save_policy(dir.path(), &manifest, &net).unwrap();
    let err = |cfg: &ModelConfig, fp: &str| load_policy(dir.path(), cfg, fp, &dev).unwrap_err().to_string();
    // The mismatch names the manifest's setting as a field, not only in words.
    let setting = |cfg: &ModelConfig, fp: &str| match load_policy(dir.path(), cfg, fp, &dev) {
        Err(ExportError::Mismatch { cause, .. }) => cause.setting,
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    };

    let mut layers = cfg.clone();
    layers.n_layers = 3;
    assert!(err(&layers, "abc123").contains("layers"), "{}", err(&layers, "abc123"));
    let mut menu = cfg.clone();
    menu.menu.remove(1);
    assert!(err(&menu, "abc123").contains("menu"), "{}", err(&menu, "abc123"));
    assert!(err(&cfg, "fff").contains("fingerprint"));
    assert_eq!(setting(&layers, "abc123"), "n_layers");
    assert_eq!(setting(&menu, "abc123"), "menu");
    assert_eq!(setting(&cfg, "fff"), "model_fingerprint");

    let path = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"version\": 3", "\"version\": 99")).unwrap();
    assert!(err(&cfg, "abc123").contains("obs.version: 99 is unknown"), "{}", err(&cfg, "abc123"));
    // Version 1 is still read, but only with its own feature names.
    std::fs::write(&path, text.replace("\"version\": 3", "\"version\": 1")).unwrap();
    assert!(err(&cfg, "abc123").contains("obs: version 1 with"), "{}", err(&cfg, "abc123"));
    std::fs::write(&path, "{ not json").unwrap();
    assert!(err(&cfg, "abc123").contains("cannot parse the manifest"));
}

/// A calibrated manifest loads into a network that decides by `argmax log p − price · cost`
/// (checked against the log-probabilities by hand), the weights untouched; a calibration that
/// does not fit the menu is refused.
#[test]
fn a_calibration_travels_in_the_manifest_and_prices_the_decisions() {
    use ahr_policy::export::Calibration;
    let (cfg, manifest, net) = setup();
    let dev = ahr_tpa::device::from_env();
    let options = manifest.dims.options;
    let costs: Vec<f64> = (0..options).map(|o| o as f64 / (options - 1) as f64).collect();
    let calibration =
        Calibration { price: 0.7, costs, target: 0.3, memory: 0.29, memory_uncalibrated: 0.4, sequences: 8, seed: 1 };
    let manifest = Manifest { calibration: Some(calibration.clone()), ..manifest };
    let dir = tempfile::tempdir().unwrap();
    save_policy(dir.path(), &manifest, &net).unwrap();
    let (loaded_manifest, loaded) = load_policy(dir.path(), &cfg, "abc123", &dev).unwrap();
    assert_eq!(loaded_manifest, manifest);
    assert_eq!(bits(&loaded), bits(&net), "the weights are the policy's own");
    assert_eq!(loaded.deploy_shift(), calibration.shift().as_slice());

    // By hand from the log-probabilities, with every option but one masked in a few heads.
    let mut o = obs(&manifest);
    for (i, m) in o.masks.iter_mut().enumerate() {
        *m = i % 5 != 0 || i % options == 0;
    }
    let t = net.obs_tensors(&o, &manifest.norm, &dev);
    let logp = ahr_policy::MaskedMultiCategorical::new(net.logits(&t), t.masks.clone()).log_probs();
    let logp = logp.into_data().try_to_vec::<f32>().unwrap();
    let expected: Vec<usize> = logp
        .chunks(options)
        .zip(o.masks.chunks(options))
        .map(|(row, mask)| {
            (0..options)
                .filter(|&k| mask[k])
                .max_by(|&a, &b| {
                    let s = |k: usize| row[k] as f64 - 0.7 * calibration.costs[k];
                    s(a).partial_cmp(&s(b)).unwrap()
                })
                .unwrap()
        })
        .collect();
    let priced = loaded.act_deterministic(&o, &manifest.norm, &dev);
    assert_eq!(priced, expected);
    let plain = net.act_deterministic(&o, &manifest.norm, &dev);
    assert!(plain.iter().zip(&o.masks.chunks(options).collect::<Vec<_>>()).all(|(&k, m)| m[k]));
    // A price large enough to matter changes some decisions, so the comparison can fail.
    let dear = net.clone().with_deploy_shift(calibration.costs.iter().map(|c| (-50.0 * c) as f32).collect());
    let dear = dear.act_deterministic(&o, &manifest.norm, &dev);
    assert!(dear.iter().all(|&k| k == 0), "at a high price every head takes the free option: {dear:?}");
    assert_ne!(dear, plain);

    // Costs for another menu, or a calibrated evicter: refused, naming the field.
    let bad = Manifest { calibration: Some(Calibration { costs: vec![0.0, 1.0], ..calibration }), ..manifest.clone() };
    save_policy(dir.path(), &bad, &net).unwrap();
    let err = load_policy(dir.path(), &cfg, "abc123", &dev).unwrap_err().to_string();
    assert!(err.contains("calibration"), "{err}");
}
