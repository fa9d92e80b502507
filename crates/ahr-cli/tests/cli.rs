//! End-to-end behaviour of `ahr`: a smoke pretrain on the tiny preset, exact resume, evaluation
//! and logits outputs, and clear errors (exit code 1, no panic) on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use ahr_tpa::checkpoint::load_model;
use ahr_tpa::{ChoiceSpec, Choices};
use ahr_train::pretrain::PretrainArgs;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// burn's RNG (weight init) is global to the device: tests that initialise models run one at a time
/// (loading one too: `Model::new` draws the initial weights before the record replaces them).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn args(out: &Path, steps: u64, stop_after: Option<u64>, resume: bool) -> PretrainArgs {
    PretrainArgs {
        model_config: root().join("configs/model/tiny.toml"),
        env: root().join("envs/mqar-tiny.toml"),
        out: out.to_path_buf(),
        steps: Some(steps),
        seed: 3,
        resume,
        init: None,
        stop_after,
    }
}

/// Pretraining without a progress display.
fn run(args: &PretrainArgs, dev: &burn::tensor::Device) -> anyhow::Result<ahr_train::PretrainOutcome> {
    ahr_train::pretrain::run(args, dev, |_| {})
}

fn logits(dir: &Path) -> Vec<f32> {
    let dev = ahr_tpa::device::from_env();
    let model = load_model(dir, &dev).unwrap();
    let ids: Vec<u32> = (0..19).map(|i| (i * 5 + 1) % 64).collect();
    let t = model.tokens(&ids, 1, 19, &dev).unwrap();
    model.forward(t, &Choices::exact(model.config(), 1, 19)).unwrap().into_data().try_to_vec::<f32>().unwrap()
}

fn ahr(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ahr")).args(args).current_dir(root()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Logits of a fixed sequence under `spec`.
fn logits_under(dir: &Path, spec: ChoiceSpec) -> Vec<f32> {
    let dev = ahr_tpa::device::from_env();
    let model = load_model(dir, &dev).unwrap();
    let ids: Vec<u32> = (0..19).map(|i| (i * 7 + 3) % 64).collect();
    let t = model.tokens(&ids, 1, 19, &dev).unwrap();
    let choices = spec.choices(model.config(), 1, 19).unwrap();
    model.forward(t, &choices).unwrap().into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn factor_fit_moves_the_rank_options_toward_exact_and_leaves_the_exact_choice_alone() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dev = ahr_tpa::device::from_env();
    // A model trained with the exact choice only: its rank options are whatever initialisation left.
    let exact_only = tmp.path().join("exact-only.toml");
    let preset = std::fs::read_to_string(root().join("configs/model/tiny.toml")).unwrap();
    std::fs::write(&exact_only, format!("{preset}\n[pretrain.nested]\nexact_fraction = 1.0\n")).unwrap();
    let base = tmp.path().join("base");
    run(&PretrainArgs { model_config: exact_only, ..args(&base, 20, None, false) }, &dev).unwrap();

    for objective in ["factor-fit", "score-fit"] {
        let fit_preset = tmp.path().join(format!("{objective}.toml"));
        let recipe = format!("learning_rate = 1e-2\nobjective = \"{objective}\"");
        std::fs::write(&fit_preset, preset.replace("learning_rate = 1e-3", &recipe)).unwrap();
        let fitted = tmp.path().join(objective);
        let fit = PretrainArgs { model_config: fit_preset, init: Some(base.clone()), ..args(&fitted, 80, None, false) };
        run(&fit, &dev).unwrap();
        let lines = std::fs::read_to_string(fitted.join("metrics.jsonl")).unwrap();
        let losses: Vec<f64> = lines
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect();
        let (first, last) = (losses[..5].iter().sum::<f64>(), losses[75..].iter().sum::<f64>());
        assert!(last < 0.5 * first, "{objective}: the loss fell from {first} to {last} (five steps' sums)");

        // The exact choice computes exactly what it did: only the factor projections moved.
        assert_eq!(logits_under(&base, ChoiceSpec::Exact), logits_under(&fitted, ChoiceSpec::Exact));
        let gap = |dir: &Path, r: usize| {
            let exact = logits_under(dir, ChoiceSpec::Exact);
            let low = logits_under(dir, ChoiceSpec::Uniform(ahr_tpa::StoreOption::Rank(r)));
            exact.iter().zip(&low).map(|(x, y)| (x - y).powi(2)).sum::<f32>()
        };
        for r in [1, 2, 3] {
            let (before, after) = (gap(&base, r), gap(&fitted, r));
            assert!(after < 0.5 * before, "{objective}, rank:{r}: {before} -> {after}");
        }
    }
    // A fit under other RoPE angles than the model was trained with would fit the wrong forward.
    let rebased = tmp.path().join("rebased-fit.toml");
    let recipe = "learning_rate = 1e-2\nobjective = \"score-fit\"";
    let text = preset.replace("learning_rate = 1e-3", recipe).replace("[model]\n", "[model]\nrope_base = 500000.0\n");
    std::fs::write(&rebased, text).unwrap();
    let fit =
        PretrainArgs { model_config: rebased, init: Some(base.clone()), ..args(&tmp.path().join("r"), 1, None, false) };
    let err = run(&fit, &dev).unwrap_err().to_string();
    assert!(err.contains("RoPE base must stay 10000"), "{err}");
}

#[test]
fn pretrain_writes_a_model_and_a_rank_curve_and_resume_is_exact() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let straight = tmp.path().join("straight");
    let outcome = run(&args(&straight, 8, None, false), &ahr_tpa::device::from_env()).unwrap();
    assert_eq!(outcome.steps_run, 8);
    let curve: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("rank_curve.json")).unwrap()).unwrap();
    let names: Vec<&str> = curve.as_object().unwrap().keys().map(String::as_str).collect();
    for name in ["exact", "uniform:drop", "uniform:rank:1", "uniform:rank:2", "uniform:rank:3", "uniform:full"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert_eq!(curve["uniform:drop"]["kv_bytes_per_token"], 0);
    assert_eq!(curve["exact"], curve["uniform:full"], "exact is the richest menu option");
    assert!(
        curve["uniform:rank:1"]["kv_bytes_per_token"].as_u64() < curve["uniform:rank:2"]["kv_bytes_per_token"].as_u64()
    );
    let lines = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 8);

    // Interrupt after 3 steps, then resume: the same weights as the uninterrupted run.
    let resumed = tmp.path().join("resumed");
    let first = run(&args(&resumed, 8, Some(3), false), &ahr_tpa::device::from_env()).unwrap();
    assert!(first.final_eval.is_none());
    let err = run(&args(&resumed, 8, None, false), &ahr_tpa::device::from_env()).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    run(&args(&resumed, 8, None, true), &ahr_tpa::device::from_env()).unwrap();
    let (a, b) = (logits(&straight), logits(&resumed));
    let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(err < 1e-5, "resumed run diverged from the uninterrupted one: {err}");

    // A resume with a different recipe is refused.
    let err = run(&args(&resumed, 9, None, true), &ahr_tpa::device::from_env()).unwrap_err().to_string();
    assert!(err.contains("differ"), "{err}");

    // --init starts from a trained model's weights: one step from there stays near them, one
    // step from a fresh initialisation does not; another shape is refused.
    let (tuned, fresh) = (tmp.path().join("tuned"), tmp.path().join("fresh"));
    run(&PretrainArgs { init: Some(straight.clone()), ..args(&tuned, 1, None, false) }, &ahr_tpa::device::from_env())
        .unwrap();
    run(&args(&fresh, 1, None, false), &ahr_tpa::device::from_env()).unwrap();
    let gap = |x: &[f32]| x.iter().zip(&a).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(gap(&logits(&tuned)) < 0.5 * gap(&logits(&fresh)), "{} vs {}", gap(&logits(&tuned)), gap(&logits(&fresh)));
    let other = PretrainArgs {
        model_config: root().join("configs/model/mqar.toml"),
        init: Some(straight.clone()),
        ..args(&tmp.path().join("other"), 1, None, false)
    };
    let err = run(&other, &ahr_tpa::device::from_env()).unwrap_err().to_string();
    assert!(err.contains("--init") && err.contains("differs"), "{err}");
    // A larger RoPE base is the one change allowed (long-context fine-tuning): the weights load,
    // and the first step's loss is the loaded model's under the new angles, not a fresh one's.
    let rebased = tmp.path().join("rebased.toml");
    let preset = std::fs::read_to_string(root().join("configs/model/tiny.toml")).unwrap();
    std::fs::write(&rebased, preset.replace("[model]\n", "[model]\nrope_base = 500000.0\n")).unwrap();
    let rebased_run = PretrainArgs {
        model_config: rebased,
        init: Some(straight.clone()),
        ..args(&tmp.path().join("rebased"), 1, None, false)
    };
    run(&rebased_run, &ahr_tpa::device::from_env()).unwrap();
    let cfg = ahr_tpa::ModelConfig::load_json(&tmp.path().join("rebased/config.json")).unwrap();
    assert_eq!(cfg.rope_base, 500000.0);
    assert!(gap(&logits(&tmp.path().join("rebased"))) < gap(&logits(&fresh)));

    // eval-model and logits through the binary.
    let model = straight.to_str().unwrap();
    let eval_out = tmp.path().join("eval.json");
    let (code, _, stderr) = ahr(&[
        "eval-model",
        "--model",
        model,
        "--env",
        "envs/mqar-tiny.toml",
        "--choices",
        "uniform:rank:2",
        "--out",
        eval_out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eval_out).unwrap()).unwrap();
    let expect = &curve["uniform:rank:2"];
    for key in ["accuracy", "kv_bytes_per_token", "labelled", "tokens"] {
        assert_eq!(report[key], expect[key], "{key}");
    }
    // Evaluation batch sizes differ (32 in the run, 64 here): sums agree to float rounding.
    let (a, b) = (report["loss"].as_f64().unwrap(), expect["loss"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, "{\"inputs\":[1,2,3],\"labels\":[-100,-100,5]}\n").unwrap();
    let (code, _, stderr) =
        ahr(&["eval-model", "--model", model, "--data", data.to_str().unwrap(), "--out", eval_out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eval_out).unwrap()).unwrap();
    assert_eq!((report["labelled"].as_u64(), report["tokens"].as_u64()), (Some(1), Some(3)));
    let logits_out = tmp.path().join("logits.json");
    let (code, _, stderr) =
        ahr(&["logits", "--model", model, "--tokens", "3,1,4,1,5", "--out", logits_out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let l: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&logits_out).unwrap()).unwrap();
    assert_eq!(l["logits"].as_array().unwrap().len(), 5);
    assert_eq!(l["logits"][0].as_array().unwrap().len(), 64);
    let _ = ChoiceSpec::Exact;
}

#[test]
fn bad_input_gives_a_message_and_exit_code_1() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    std::fs::write(
        t("typo.toml"),
        std::fs::read_to_string(root().join("configs/model/tiny.toml")).unwrap().replace("n_layers", "n_layer"),
    )
    .unwrap();
    std::fs::write(t("empty.toml"), format!("[task]\nkind = \"text\"\npath = \"{}\"\n", t("emptydir"))).unwrap();
    std::fs::create_dir(t("emptydir")).unwrap();
    std::fs::create_dir(t("badmodel")).unwrap();
    let tiny_env = std::fs::read_to_string(root().join("envs/mqar-tiny.toml")).unwrap();
    std::fs::write(t("odd.toml"), tiny_env.replace("streams = 4", "streams = 3")).unwrap();
    std::fs::write(t("review.toml"), tiny_env.replace("[env]\n", "[env]\nreview = \"sometimes\"\n")).unwrap();
    std::fs::write(t("exclude.toml"), tiny_env.replace("[env]\n", "[env]\nexclude = [\"full\"]\n")).unwrap();
    let tiny_ppo = std::fs::read_to_string(root().join("configs/ppo/tiny.toml")).unwrap();
    std::fs::write(t("partner.toml"), format!("baseline = \"partner\"\n{tiny_ppo}")).unwrap();
    std::fs::write(t("loose.toml"), format!("budget_start = 0.3\n{tiny_ppo}")).unwrap();
    std::fs::write(t("calibrate.toml"), format!("calibrate = 8\n{tiny_ppo}")).unwrap();
    std::fs::write(t("prior.toml"), tiny_ppo.replace("[policy]", "[policy]\nprior = [\"rank:9\"]")).unwrap();
    std::fs::write(t("table.toml"), format!("{tiny_ppo}prior_table = \"nope.json\"\n")).unwrap();
    std::fs::write(t("badmodel/config.json"), "{").unwrap();
    let train = |env: &str, config: &str, out: &str| -> Vec<String> {
        let argv =
            ["train-policy", "--model", "policies/models/mqar-tiny", "--env", env, "--config", config, "--out", out];
        argv.into_iter().map(String::from).collect()
    };
    // `ahr eval` on the tiny model and task with one bad flag.
    let judge = |flag: &str, value: &str| -> Vec<String> {
        let argv = ["eval", "--model", "policies/models/mqar-tiny", "--env", "envs/mqar-tiny.toml", flag, value];
        argv.into_iter().chain(["--out", &t("judge")]).map(String::from).collect()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "pretrain",
                "--model-config",
                "configs/model/nope.toml",
                "--env",
                "envs/mqar-tiny.toml",
                "--out",
                &t("o1"),
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "nope.toml",
        ),
        (
            vec!["pretrain", "--model-config", &t("typo.toml"), "--env", "envs/mqar-tiny.toml", "--out", &t("o2")]
                .into_iter()
                .map(String::from)
                .collect(),
            "n_layer",
        ),
        (
            vec!["pretrain", "--model-config", "configs/model/tiny.toml", "--env", &t("empty.toml"), "--out", &t("o3")]
                .into_iter()
                .map(String::from)
                .collect(),
            "empty",
        ),
        (
            vec!["pretrain", "--model-config", "configs/model/tiny.toml", "--env", "envs/mqar.toml", "--out", &t("o4")]
                .into_iter()
                .map(String::from)
                .collect(),
            "vocab",
        ),
        (
            vec!["eval-model", "--model", &t("badmodel"), "--env", "envs/mqar-tiny.toml", "--out", &t("e.json")]
                .into_iter()
                .map(String::from)
                .collect(),
            "config.json",
        ),
        (
            vec!["eval-model", "--model", &t("missing"), "--env", "envs/mqar-tiny.toml", "--out", &t("e.json")]
                .into_iter()
                .map(String::from)
                .collect(),
            "missing",
        ),
        (
            vec!["logits", "--model", &t("badmodel"), "--tokens", "1,x", "--out", &t("l.json")]
                .into_iter()
                .map(String::from)
                .collect(),
            "`x`",
        ),
        (train(&t("odd.toml"), &t("partner.toml"), &t("p1")), "[env] streams: must be even"),
        (
            train(&t("review.toml"), "configs/ppo/tiny.toml", &t("p1")),
            "a review age in queries (e.g. 16), { age = 16, keep = [32, 64] } (with `again = true`: reviewed again at \
             each), \"spike\" or \"spike-tokens\"",
        ),
        (train("envs/mqar-tiny.toml", &t("loose.toml"), &t("p2")), "[reward] budget_start: needs a budget"),
        (train("envs/mqar-tiny.toml", &t("calibrate.toml"), &t("p6")), "calibrate prices the policy to its budget"),
        (
            train(&t("exclude.toml"), "configs/ppo/tiny.toml", &t("p3")),
            "[env] exclude: invalid input: full: is the exact option",
        ),
        (
            train("envs/mqar-tiny.toml", &t("prior.toml"), &t("p4")),
            "[policy] prior: \"rank:9\" is not an option of this menu",
        ),
        (train("envs/mqar-tiny.toml", &t("table.toml"), &t("p5")), "[policy] prior_table: nope.json"),
        (
            ["fit-rule", "--model", "policies/models/mqar-tiny", "--env", "envs/mqar-tiny.toml", "--family", "tova"]
                .into_iter()
                .chain(["--fraction", "0.3", "--out", &t("fit.json")])
                .map(String::from)
                .collect(),
            "`tova` is not a fitted vocabulary rule",
        ),
        (judge("--fit-sequences", "0"), "--fit-sequences must be at least 1"),
        (judge("--fractions", "none"), "nothing to judge: no --policy and --fractions none"),
        (
            judge("--fractions", "0.1,1.5"),
            "--fractions: `1.5` is not a fraction of the exact memory in [0, 1] (or `none`)",
        ),
        (
            vec!["import-t6", "--weights", &t("none.safetensors"), "--config", &t("none.json"), "--out", &t("m")]
                .into_iter()
                .map(String::from)
                .collect(),
            "none.json",
        ),
        (
            vec![
                "pretrain",
                "--model-config",
                "configs/model/tiny.toml",
                "--env",
                "envs/mqar-tiny.toml",
                "--out",
                &t("o5"),
                "--device",
                "tpu",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "unknown device",
        ),
    ];
    for (argv, needle) in cases {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (code, _, stderr) = ahr(&argv);
        assert_eq!(code, 1, "{argv:?}: {stderr}");
        assert!(stderr.contains("error:") && stderr.contains(needle), "{argv:?}: expected `{needle}` in: {stderr}");
        assert!(!stderr.contains("panicked"), "{argv:?} panicked: {stderr}");
    }
}

/// A tiny model and a policy trained on it once for the tests that use them (in the target's
/// temporary directory; the first test to ask builds them, the others wait).
struct Trained {
    model: PathBuf,
    policy: PathBuf,
    run_dir: PathBuf,
    argv: Vec<String>,
}

fn trained() -> &'static Trained {
    static TRAINED: std::sync::OnceLock<Trained> = std::sync::OnceLock::new();
    TRAINED.get_or_init(|| {
        let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-trained-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let model = dir.join("model");
        run(&args(&model, 4, None, false), &ahr_tpa::device::from_env()).unwrap();
        let (policy, run_dir) = (dir.join("policy"), dir.join("run"));
        let argv: Vec<String> = [
            "train-policy",
            "--model",
            model.to_str().unwrap(),
            "--env",
            "envs/mqar-tiny.toml",
            "--config",
            "configs/ppo/tiny.toml",
            "--out",
            policy.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--workers",
            "2",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let (code, stdout, stderr) = ahr(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("run directory"), "{stderr}");
        assert!(stdout.contains("policy:"), "{stdout}");
        Trained { model, policy, run_dir, argv }
    })
}

#[test]
fn train_policy_exports_a_policy_that_loads_back() {
    let t = trained();
    let lines = std::fs::read_to_string(t.run_dir.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for tag in ["charts/SPS", "losses/approx_kl", "losses/clipfrac", "env/mem_frac", "env/lambda_mem", "ranks/layer_0"]
    {
        assert!(first.get(tag).is_some(), "{tag} missing from {first}");
    }
    assert!(std::fs::read_dir(t.run_dir.join("tb")).unwrap().count() > 0, "TensorBoard events written");

    let dev = ahr_tpa::device::from_env();
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = load_model(&t.model, &dev).unwrap().config().clone();
    let fp = ahr_tpa::checkpoint::fingerprint(&t.model).unwrap();
    let (manifest, _net) = ahr_policy::export::load_policy(&t.policy, &cfg, &fp, &dev).unwrap();
    assert_eq!(manifest.n_layers, cfg.n_layers);
    let err = ahr_policy::export::load_policy(&t.policy, &cfg, "0000", &dev).unwrap_err().to_string();
    assert!(err.contains("fingerprint"), "{err}");
    drop(guard);

    // A fresh run into the same run directory is refused.
    let (code, _, stderr) = ahr(&t.argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1);
    assert!(stderr.contains("--resume"), "{stderr}");
}

#[test]
fn inference_matches_the_environment() {
    let t = trained();
    inference_matches(&t.model, &t.policy, Path::new("envs/mqar-tiny.toml"));
}

#[test]
fn deployment_commands_run_on_the_exported_policy() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    deployment_commands(tmp.path(), &t.model, &t.policy);
}

/// `ahr calibrate` prices the exported policy to a memory target on training sequences; the
/// calibrated copy decides the same in the environment and in inference; bad input is refused.
#[test]
fn calibrate_prices_the_exported_policy() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    let (m, p) = (t.model.to_str().unwrap(), t.policy.to_str().unwrap());
    let base = ["calibrate", "--model", m, "--env", "envs/mqar-tiny.toml", "--policy", p, "--sequences", "8"];
    let out = tmp.path().join("calibrated");
    let refused = |extra: &[&str], says: &str| {
        let (code, _, stderr) = ahr(&[&base[..], extra].concat());
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    refused(&["--target", "0.3", "--out", p], "another directory than --policy");
    refused(&["--out", out.to_str().unwrap()], "no budget: give the memory target with --target");
    refused(&["--target", "0", "--out", out.to_str().unwrap()], "the target must be in (0, 1]");
    assert!(!out.exists(), "nothing written on a refusal");

    let (code, stdout, stderr) = ahr(&[&base[..], &["--target", "0.3", "--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    let manifest = ahr_policy::export::load_manifest(&out).unwrap();
    let c = manifest.calibration.clone().expect("the calibration is written into the manifest");
    assert_eq!((c.target, c.sequences), (0.3, 8));
    assert!(c.memory <= 0.3, "{c:?}");
    assert!(stdout.contains(&format!("{:.3} % of the exact memory", 100.0 * c.memory)), "{stdout}");
    assert!(stderr.contains("price +0.00000: "), "the uncalibrated probe is reported: {stderr}");
    let original = ahr_policy::export::load_manifest(&t.policy).unwrap();
    assert_eq!(
        ahr_policy::export::Manifest { calibration: None, ..manifest },
        original,
        "only the calibration is added"
    );
    inference_matches(&t.model, &out, Path::new("envs/mqar-tiny.toml"));

    // `[ppo] calibrate`: train-policy calibrates the exported policy to its budget itself, and its
    // eval.json is the calibrated policy's.
    let config = tmp.path().join("calibrated.toml");
    let tiny_ppo = std::fs::read_to_string(root().join("configs/ppo/tiny.toml")).unwrap();
    std::fs::write(&config, format!("budget = 0.3\ncalibrate = 8\n{tiny_ppo}")).unwrap();
    let (policy, run) = (tmp.path().join("trained-calibrated"), tmp.path().join("run"));
    let (code, _, stderr) = ahr(&[
        "train-policy",
        "--model",
        m,
        "--env",
        "envs/mqar-tiny.toml",
        "--config",
        config.to_str().unwrap(),
        "--out",
        policy.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
        "--workers",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let c = ahr_policy::export::load_manifest(&policy).unwrap().calibration.expect("calibrated at export");
    assert_eq!((c.target, c.sequences), (0.3, 8));
    assert!(c.memory <= 0.3, "{c:?}");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let dev = ahr_tpa::device::from_env();
    let model = ahr_train::load_policy_model(&t.model, Some(&policy), &dev).unwrap();
    let fp = ahr_tpa::checkpoint::fingerprint(&t.model).unwrap();
    let (manifest, net) = ahr_policy::export::load_policy(&policy, model.config(), &fp, &dev).unwrap();
    let mut spec = ahr_env::EnvSpec::load(&root().join("envs/mqar-tiny.toml")).unwrap();
    spec.reward.budget = Some(0.3);
    let task = ahr_tasks::Task::load(&spec.task).unwrap();
    let held_out = ahr_env::evaluate_policy(&model, &task, &spec, &net, &manifest.norm, 1, None, &dev).unwrap();
    assert_eq!(eval["mem_frac"].as_f64().unwrap(), held_out.mem_frac, "eval.json is the calibrated policy's");
}

#[test]
fn analyze_explains_the_policy() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    analyze_explains(tmp.path(), t.model.to_str().unwrap(), t.policy.to_str().unwrap());
}

#[test]
fn other_granularities_and_policy_kinds_train() {
    let t = trained();
    let tmp = tempfile::tempdir().unwrap();
    other_granularities_and_policy_kinds(tmp.path(), &t.model);
}

/// Per-layer mode and the attention-over-meta-features policy train in their own environments
/// (episodes finish and are logged) and export what they were trained as.
fn other_granularities_and_policy_kinds(tmp: &Path, model: &Path) {
    let env = tmp.join("per-layer.toml");
    let text = std::fs::read_to_string(root().join("envs/mqar-tiny.toml")).unwrap();
    std::fs::write(&env, text.replace("[env]\n", "[env]\ngranularity = \"per-layer\"\n")).unwrap();
    let recent = tmp.join("recent.toml");
    std::fs::write(&recent, text.replace("[env]\n", "[env]\nrecent = [4]\n")).unwrap();
    let review = tmp.join("review.toml");
    // (a chain of reviews at ages 3, 6 and 9: a token kept to 6 or 9 comes up again there;
    // inference must move it as the env does)
    let chain = "[env]\nreview = { age = 3, keep = [6, 9], again = true }\n";
    std::fs::write(&review, text.replace("[env]\n", chain)).unwrap();
    let spike = tmp.join("spike.toml");
    // (without `rank:1`: inference then runs the policy's smaller menu; with the token-equality
    // features, which inference computes from the ids it decodes)
    let with_spike = "[env]\nreview = \"spike-tokens\"\nexclude = [\"rank:1\"]\n";
    std::fs::write(&spike, text.replace("[env]\n", with_spike)).unwrap();
    let evict = tmp.join("evict.toml");
    std::fs::write(&evict, text.replace("[env]\n", "[env]\nevict = { budget = 6 }\n")).unwrap();
    // (with a second tier: what the policy lets go stays at rank 1 for a while)
    let tiers = tmp.join("tiers.toml");
    let tiered = "[env]\nevict = { budget = 5, store = \"rank:2\", tier2 = { size = 3, store = \"rank:1\" } }\n";
    std::fs::write(&tiers, text.replace("[env]\n", tiered)).unwrap();
    let attention = tmp.join("attention.toml");
    let text = std::fs::read_to_string(root().join("configs/ppo/tiny.toml")).unwrap();
    std::fs::write(&attention, format!("{text}kind = \"attention\"\nwindow = 3\n")).unwrap();
    let partner = tmp.join("partner.toml");
    std::fs::write(&partner, format!("credit = \"split\"\nbaseline = \"partner\"\n{text}")).unwrap();
    let cases = [
        (env, root().join("configs/ppo/tiny.toml"), "per-layer", 1),
        (root().join("envs/mqar-tiny.toml"), attention, "per-token", 3),
        (recent.clone(), root().join("configs/ppo/tiny.toml"), "per-token", 1),
        (review.clone(), root().join("configs/ppo/tiny.toml"), "per-token", 1),
        (root().join("envs/mqar-tiny.toml"), partner.clone(), "per-token", 1),
        (spike.clone(), root().join("configs/ppo/tiny.toml"), "per-token", 1),
        (evict.clone(), partner.clone(), "per-token", 1),
        (tiers.clone(), partner.clone(), "per-token", 1),
    ];
    for (i, (env, config, granularity, window)) in cases.into_iter().enumerate() {
        let (policy, run_dir) = (tmp.join(format!("policy-{i}")), tmp.join(format!("run-{i}")));
        let argv = [
            "train-policy",
            "--model",
            model.to_str().unwrap(),
            "--env",
            env.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--out",
            policy.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
        ];
        let (code, _, stderr) = ahr(&argv);
        assert_eq!(code, 0, "{stderr}");
        let lines = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
        assert!(
            last["env/mem_frac"].as_f64().is_some_and(f64::is_finite),
            "{granularity}: no finished episodes: {last}"
        );
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(policy.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["granularity"], granularity);
        assert_eq!(manifest["policy"]["window"], window);
    }
    // A policy with an expiring option: its menu says so, generation adds it to the model, eval
    // runs it with its env (and a window matched to its bytes), and the plain env is refused.
    let (m, p) = (model.to_str().unwrap(), tmp.join("policy-2"));
    let manifest = std::fs::read_to_string(p.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"recent:4\""), "{manifest}");
    let p = p.to_str().unwrap();
    let (code, stdout, stderr) = ahr(&["generate", "--model", m, "--policy", p, "--tokens", "3,40,5,41,3"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bytes held"), "{stdout}");
    let eval = ["eval", "--model", m, "--policy", p, "--sequences", "8", "--baselines", "uniform,streaming-llm"];
    let out = tmp.join("eval-recent");
    let (code, _, stderr) =
        ahr(&[&eval[..], &["--env", recent.to_str().unwrap(), "--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    let csv = std::fs::read_to_string(out.join("pareto.csv")).unwrap();
    assert!(csv.contains("uniform,uniform,\"recent:4\","), "{csv}");
    let (code, _, stderr) = ahr(&[&eval[..], &["--env", "envs/mqar-tiny.toml", "--out", "/tmp/x"]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("recent") && !stderr.contains("panicked"), "{stderr}");
    // A policy with a chain of review decisions: L heads per write and per review age, review
    // features per age in its manifest, and inference makes the environment's decisions (writes
    // and reviews) and holds what it charged.
    let p = tmp.join("policy-3");
    let manifest = std::fs::read_to_string(p.join("manifest.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(json["review"], serde_json::json!({ "age": 3, "keep": [6, 9], "again": true }), "{manifest}");
    let per_age = manifest.contains("layer1.at9.attn_since_review") && manifest.contains("\"full/9/drop\"");
    assert!(per_age, "{manifest}");
    inference_matches(model, &p, &review);
    let out = tmp.join("eval-review");
    let p = p.to_str().unwrap();
    let argv =
        ["eval", "--model", m, "--policy", p, "--sequences", "8", "--baselines", "uniform,streaming-llm,token-class"];
    let (code, _, stderr) =
        ahr(&[&argv[..], &["--env", review.to_str().unwrap(), "--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["policies"][0]["name"], "policy:policy-3");
    // The fitted byte rule is fitted first over what a policy's write heads can write (settings
    // with no schedule only reviews make), then from there over the whole menu.
    assert!(stderr.contains("stage 1 of 2") && stderr.contains("stage 2 of 2"), "{stderr}");
    let fitted: Vec<&str> = metrics["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "token-class")
        .map(|p| p["setting"].as_str().unwrap())
        .collect();
    assert!(!fitted.is_empty(), "no token-class points");
    let review_only = |s: &&&str| s.contains("/3/") || s.contains("/6/drop") || s.contains("/9/drop");
    assert!(fitted.iter().any(|s| !review_only(&s)), "{fitted:?}");
    // Spike reviews: the same heads, their own features, and inference drops what the
    // environment dropped, when it dropped it.
    let p = tmp.join("policy-5");
    let manifest = std::fs::read_to_string(p.join("manifest.json")).unwrap();
    let spiked = manifest.contains("\"review\": \"spike-tokens\"") && manifest.contains("spike_weight");
    assert!(spiked && manifest.contains("review_prefix_match"), "{manifest}");
    assert!(!manifest.contains("\"rank:1\""), "{manifest}");
    inference_matches(model, &p, &spike);
    // Learned eviction: one head per layer over the budget's candidate slots, judged in its
    // environment against TOVA at the same budget (the same memory); inference evicts what the
    // environment evicted and holds the budget; a rule prior (which it cannot take) is a clear error.
    let p = tmp.join("policy-6");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(json["evict"], serde_json::json!({ "budget": 6, "store": "full", "decay": 0.9 }));
    assert_eq!((json["dims"]["heads"].as_u64(), json["dims"]["options"].as_u64()), (Some(2), Some(7)));
    assert_eq!(json["dims"]["candidate_features"].as_u64(), Some(13));
    inference_matches(model, &p, &evict);
    let p = p.to_str().unwrap();
    let tokens = "3,40,5,41,3,7,9,11,40,5,41";
    let argv = ["generate", "--model", m, "--policy", p, "--tokens", tokens, "--max-new-tokens", "4"];
    let (code, stdout, stderr) = ahr(&argv);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bytes held"), "{stdout}");
    // `analyze`: the policy against tova-ema (its start) and TOVA at the same budget, with its
    // evictions against the rule's per layer and per token role.
    let out = tmp.join("analyze-evict");
    let argv = ["analyze", "--model", m, "--policy", p, "--env", evict.to_str().unwrap(), "--sequences", "8"];
    let (code, _, stderr) = ahr(&[&argv[..], &["--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("What the learned evicter does") && report.contains("Against `tova-ema@full"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    assert_eq!(json["start"], "tova-ema@full (budget=6,decay=0.9)", "compared with the rule it starts from");
    let mem: Vec<f64> = json["outcomes"].as_array().unwrap().iter().map(|o| o["mem_frac"].as_f64().unwrap()).collect();
    assert!(mem.len() == 3 && mem.iter().all(|m| (m - mem[0]).abs() < 1e-9 && *m > 0.0), "the same memory: {mem:?}");
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert!(layers.iter().all(|l| l["tokens"].as_u64() == Some(8 * 32)), "{layers:?}");
    let classes: Vec<&str> = json["classes"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert!(classes.contains(&"key") && classes.contains(&"value"), "{classes:?}");
    let out = tmp.join("eval-evict");
    let argv = ["eval", "--model", m, "--policy", p, "--sequences", "8", "--baselines", "tova,tova-ema"];
    let (code, _, stderr) =
        ahr(&[&argv[..], &["--env", evict.to_str().unwrap(), "--fractions", "none", "--out", out.to_str().unwrap()]]
            .concat());
    assert_eq!(code, 0, "{stderr}");
    let table = std::fs::read_to_string(out.join("pareto.md")).unwrap();
    assert!(table.contains("| tova | tova@full | budget=6 |") && table.contains("tova-ema@full"), "{table}");
    // The plain env has the same menu but no candidate slots: refused, not a panic.
    let (code, _, stderr) = ahr(&[&argv[..], &["--env", "envs/mqar-tiny.toml", "--out", "/tmp/x"]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("trained with evict") && !stderr.contains("panicked"), "{stderr}");
    let with_prior = tmp.join("evict-prior.toml");
    std::fs::write(&with_prior, format!("{text}prior = [\"full\"]\n")).unwrap();
    let argv = ["train-policy", "--model", m, "--env", evict.to_str().unwrap(), "--config"];
    let (code, _, stderr) = ahr(&[&argv[..], &[with_prior.to_str().unwrap(), "--out", "/tmp/x"]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("learned eviction") && !stderr.contains("panicked"), "{stderr}");
    // A store the model's menu lacks: refused when the env is loaded, before a run directory exists.
    let off_menu = tmp.join("evict-rank9.toml");
    std::fs::write(
        &off_menu,
        std::fs::read_to_string(&evict).unwrap().replace("budget = 6", "budget = 6, store = \"rank:9\""),
    )
    .unwrap();
    let run_dir = tmp.join("never-written");
    let argv =
        ["train-policy", "--model", m, "--env", off_menu.to_str().unwrap(), "--config", partner.to_str().unwrap()];
    let (code, _, stderr) = ahr(&[&argv[..], &["--out", "/tmp/x", "--run-dir", run_dir.to_str().unwrap()]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("[env] evict") && stderr.contains("rank:9") && !stderr.contains("panicked"), "{stderr}");
    assert!(!run_dir.exists(), "nothing written for a refused env");
    // A smoothing decay outside [0, 1): refused as well.
    let bad_decay = tmp.join("evict-decay.toml");
    std::fs::write(
        &bad_decay,
        std::fs::read_to_string(&evict).unwrap().replace("budget = 6", "budget = 6, decay = 1.5"),
    )
    .unwrap();
    let argv =
        ["train-policy", "--model", m, "--env", bad_decay.to_str().unwrap(), "--config", partner.to_str().unwrap()];
    let (code, _, stderr) = ahr(&[&argv[..], &["--out", "/tmp/x", "--run-dir", run_dir.to_str().unwrap()]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("decay") && stderr.contains("1.5") && !stderr.contains("panicked"), "{stderr}");
    // A tilt that leaves a layer no budget: refused as well.
    let bad_tilt = tmp.join("evict-tilt.toml");
    std::fs::write(&bad_tilt, std::fs::read_to_string(&evict).unwrap().replace("budget = 6", "budget = 6, tilt = -6"))
        .unwrap();
    let argv =
        ["train-policy", "--model", m, "--env", bad_tilt.to_str().unwrap(), "--config", partner.to_str().unwrap()];
    let (code, _, stderr) = ahr(&[&argv[..], &["--out", "/tmp/x", "--run-dir", run_dir.to_str().unwrap()]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("tilt -6") && !stderr.contains("panicked"), "{stderr}");
    // A learned evicter with a second tier: inference demotes and evicts what the environment did
    // and holds what it charged; a second tier above the store, or beside a dense one, is refused.
    inference_matches(model, &tmp.join("policy-7"), &tiers);
    for (bad, says) in [
        ("store = \"rank:2\", tier2 = { size = 3, store = \"rank:2\" }", "rank:2"),
        ("tier2 = { size = 3, store = \"rank:1\" }", "factor rank"),
    ] {
        let path = tmp.join("evict-tier.toml");
        std::fs::write(
            &path,
            std::fs::read_to_string(&evict).unwrap().replace("budget = 6", &format!("budget = 6, {bad}")),
        )
        .unwrap();
        let argv =
            ["train-policy", "--model", m, "--env", path.to_str().unwrap(), "--config", partner.to_str().unwrap()];
        let (code, _, stderr) =
            ahr(&[&argv[..], &["--out", "/tmp/x", "--run-dir", run_dir.to_str().unwrap()]].concat());
        assert_eq!(code, 1);
        assert!(stderr.contains("second tier") && stderr.contains(says) && !stderr.contains("panicked"), "{stderr}");
    }
    // A policy started at the fitted vocabulary rule: `fit-rule` writes the table, training
    // starts from it, and the exported policy (its trained table in the weights) loads and
    // makes the environment's decisions in inference.
    let table = tmp.join("table.json");
    let argv = ["fit-rule", "--model", m, "--env", "envs/mqar-tiny.toml", "--fraction", "0.3", "--workers", "1"];
    let fits = tmp.join("fits");
    let cached = ["--fit-cache", fits.to_str().unwrap()];
    let (code, stdout, stderr) = ahr(&[&argv[..], &cached, &["--out", table.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("of exact") && stderr.contains("round 1"), "{stdout}{stderr}");
    // Again from the kept measurements: the same table, nothing measured twice.
    let kept = || {
        std::fs::read_dir(&fits)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect::<Vec<_>>()
    };
    let before = kept();
    let again = tmp.join("table-again.json");
    let (code, _, stderr) = ahr(&[&argv[..], &cached, &["--out", again.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&table).unwrap());
    assert!(before.len() == 1 && before[0].lines().count() > 1 && kept() == before, "{before:?}");
    let config = tmp.join("table.toml");
    std::fs::write(&config, format!("{text}prior_table = {:?}\n", table.to_str().unwrap())).unwrap();
    // (with observation version 4: the repeat features, which inference computes from the ids)
    let repeats = tmp.join("repeats.toml");
    let env_text = std::fs::read_to_string(root().join("envs/mqar-tiny.toml")).unwrap();
    std::fs::write(&repeats, env_text.replace("[env]\n", "[env]\nobs_version = 4\n")).unwrap();
    let r = repeats.to_str().unwrap();
    let policy = tmp.join("policy-table");
    let argv = ["train-policy", "--model", m, "--env", r, "--config", config.to_str().unwrap()];
    let run_dir = tmp.join("run-table");
    let rest = ["--out", policy.to_str().unwrap(), "--run-dir", run_dir.to_str().unwrap()];
    let (code, _, stderr) = ahr(&[&argv[..], &rest[..]].concat());
    assert_eq!(code, 0, "{stderr}");
    let manifest = std::fs::read_to_string(policy.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"repeat_len\"") && manifest.contains("\"repeat_dist\""), "{manifest}");
    inference_matches(model, &policy, &repeats);
    let out = tmp.join("analyze-table");
    let argv = ["analyze", "--model", m, "--policy", policy.to_str().unwrap(), "--env", r];
    let rest = ["--sequences", "8", "--lengths", "none", "--no-ablation", "--out", out.to_str().unwrap()];
    let (code, _, stderr) = ahr(&[&argv[..], &rest[..]].concat());
    assert_eq!(code, 0, "{stderr}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("Against the per-token table the policy started from"), "{report}");
    assert!(report.contains("The per-token table the policy started from (`prior_table`)"), "{report}");
    assert!(report.contains("what no per-token table reproduces"), "{report}");
}

/// The inference crate, fed a held-out episode, makes the environment's decisions and holds the
/// bytes the environment charged.
fn inference_matches(model_dir: &Path, policy_dir: &Path, env: &Path) {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = ahr_tpa::device::from_env();
    let model = ahr_train::load_policy_model(model_dir, Some(policy_dir), &dev).unwrap();
    let fp = ahr_tpa::checkpoint::fingerprint(model_dir).unwrap();
    let (manifest, net) = ahr_policy::export::load_policy(policy_dir, model.config(), &fp, &dev).unwrap();
    let spec = ahr_env::EnvSpec::load(&root().join(env)).unwrap();
    let task = ahr_tasks::Task::load(&spec.task).unwrap();
    let streams = spec.env.streams;
    let env_eval = ahr_env::evaluate_policy(
        &model,
        &task,
        &spec,
        &net,
        &manifest.norm,
        manifest.policy.window,
        Some(streams),
        &dev,
    )
    .unwrap();
    let batch = task.valid_batch(0, streams);
    let prompts: Vec<Vec<u32>> = batch.inputs.chunks(batch.seq_len).map(<[u32]>::to_vec).collect();
    // Tokens younger than the (last) review age have not had their last decision when a run
    // ends; a spike review may come at any later step, so only the continuation is compared.
    let (review, l_n) = (manifest.review, manifest.n_layers);
    let settled = |n: usize| match review {
        Some(ahr_tpa::ReviewAt::Spike { .. }) => n,
        at => at.and_then(|a| a.stage_ages().last().copied()).unwrap_or(0) * l_n,
    };
    let manifest_evicts = manifest.evict.is_some();
    let policy = ahr_infer::RankPolicy::new(manifest, net);
    let generator = ahr_infer::Generator::new(&model, ahr_infer::Chooser::Policy(&policy), &dev);
    let run = generator.run(&prompts, 0).unwrap();
    // Observations are causal and length-agnostic: a prefix's decisions (and so its greedy
    // continuation) do not depend on how many tokens the caller asks for.
    let prefixes: Vec<Vec<u32>> = prompts.iter().map(|p| p[..p.len() / 2].to_vec()).collect();
    let (short, long) = (generator.run(&prefixes, 2).unwrap(), generator.run(&prefixes, 40).unwrap());
    for (s, l) in short.choices.iter().zip(&long.choices) {
        let n = s.len() - settled(s.len());
        assert_eq!(s[..n], l[..n], "decisions for a prefix changed with max_new_tokens");
    }
    assert_eq!(short.new_tokens(0), &long.new_tokens(0)[..2]);
    let cfg = model.config();
    let mut counts = vec![vec![0u64; cfg.menu.len()]; cfg.n_layers];
    for row in &run.choices {
        for (i, &c) in row.iter().enumerate() {
            counts[i % cfg.n_layers][c] += 1;
        }
    }
    assert_eq!(counts, env_eval.option_counts, "same decisions in the environment and at inference");
    let sorted = |rows: &[Vec<(usize, usize, usize)>]| -> Vec<Vec<(usize, usize, usize)>> {
        rows.iter()
            .map(|r| r.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect())
            .collect()
    };
    assert_eq!(sorted(&run.evictions), sorted(&env_eval.evictions), "the same evictions, at the same queries");
    assert_eq!(sorted(&run.demotions), sorted(&env_eval.demotions), "the same demotions, at the same queries");
    if spec.env.evict.is_some_and(|e| e.tier2.is_some()) {
        assert!(run.demotions.iter().all(|r| !r.is_empty()), "a learned evicter with a second tier demotes");
    }
    if manifest_evicts {
        assert!(run.evictions.iter().all(|r| !r.is_empty()), "a learned evicter over its budget evicts");
        // A prefix's evictions do not depend on how many tokens the caller asks for.
        let fed = short.tokens[0].len() - 1;
        let early = |g: &ahr_infer::Generation| {
            g.evictions.iter().map(|r| r.iter().filter(|e| e.2 <= fed).copied().collect::<Vec<_>>()).collect::<Vec<_>>()
        };
        assert_eq!(early(&short), early(&long), "evictions for a prefix changed with max_new_tokens");
    }
    assert_eq!(run.memory.bytes_held, run.memory.cost_model_bytes);
    // The peak the environment reports (without expiring options, reviews or evictions, the final
    // cache).
    let held = if spec.env.review.is_some() || spec.env.evict.is_some() {
        run.memory.peak_bytes
    } else {
        run.memory.bytes_held
    };
    let per_token = held as f64 / (streams * batch.seq_len) as f64;
    let peak = env_eval.peak_kv_bytes_per_token;
    assert!((per_token - peak).abs() < 1e-6, "{per_token} vs {peak}");
}

fn deployment_commands(tmp: &Path, model: &Path, policy: &Path) {
    let (m, p) = (model.to_str().unwrap(), policy.to_str().unwrap());
    let (code, stdout, stderr) =
        ahr(&["generate", "--model", m, "--policy", p, "--tokens", "3,40,5,41,3", "--max-new-tokens", "3"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("bytes held"), "{stdout}");

    let eval_dir = tmp.join("eval");
    let argv = ["eval", "--model", m, "--model", m, "--env", "envs/mqar-tiny.toml", "--policy", p, "--sequences", "16"];
    let (code, stdout, stderr) = ahr(&[&argv[..], &["--out", eval_dir.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("| name |"), "{stdout}");
    for f in ["metrics.json", "pareto.csv", "pareto.md", "pareto.svg", "pareto.png"] {
        assert!(eval_dir.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(eval_dir.join("pareto.csv")).unwrap();
    assert!(csv.starts_with("name,family,setting,metric,metric_per_sequence,kv_bytes_per_token,"), "{csv}");
    for name in [
        "policy:policy",
        "uniform",
        "streaming-llm@rank:1",
        "h2o@full",
        "tova@rank:2",
        "k-norm@full",
        "entropy@full",
        "tova@full",
        "tova-full-cache@full",
        "token-class",
        "model:model",
    ] {
        assert!(csv.contains(&format!("{name},")), "{name} missing from {csv}");
    }
    // A sinks-only (prefix) row is in the grid.
    assert!(csv.contains(",window=0\""), "no sinks-only row in {csv}");
    // Points evaluated side by side are the points evaluated one by one, in the same order.
    let families = "uniform,streaming-llm,tova,entropy";
    let csv_with = |workers: &str| {
        let dir = tmp.join(format!("eval-workers-{workers}"));
        let argv = ["eval", "--model", m, "--env", "envs/mqar-tiny.toml", "--policy", p, "--sequences", "8"];
        let more = ["--baselines", families, "--workers", workers, "--out", dir.to_str().unwrap()];
        let (code, _, stderr) = ahr(&[&argv[..], &more[..]].concat());
        assert_eq!(code, 0, "{stderr}");
        std::fs::read_to_string(dir.join("pareto.csv")).unwrap()
    };
    assert_eq!(csv_with("1"), csv_with("3"));
    // `--fractions none`: the policy's own memory is the only target.
    let dir = tmp.join("eval-no-fractions");
    let argv = ["eval", "--model", m, "--env", "envs/mqar-tiny.toml", "--policy", p, "--sequences", "8"];
    let more = ["--baselines", "uniform", "--fractions", "none", "--out", dir.to_str().unwrap()];
    let (code, _, stderr) = ahr(&[&argv[..], &more[..]].concat());
    assert_eq!(code, 0, "{stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["targets"], serde_json::json!([]), "fixed targets judged");
    assert_eq!(metrics["policies"].as_array().map(Vec::len), Some(1), "{metrics}");
    // `--fit-sequences 4,8` judges the settings of both fits, each once: its token-class rows are
    // the union of the rows of a fit on 4 and a fit on 8 training sequences.
    let class_rows = |counts: &str| {
        let dir = tmp.join(format!("eval-fit-{counts}"));
        let argv = ["eval", "--model", m, "--env", "envs/mqar-tiny.toml", "--policy", p, "--sequences", "8"];
        let more = ["--baselines", "token-class", "--fit-sequences", counts, "--out", dir.to_str().unwrap()];
        let (code, _, stderr) = ahr(&[&argv[..], &more[..]].concat());
        assert_eq!(code, 0, "{stderr}");
        let csv = std::fs::read_to_string(dir.join("pareto.csv")).unwrap();
        // Without the last column, `on_front`, which depends on the run's other points.
        csv.lines()
            .filter(|l| l.starts_with("token-class,"))
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (four, eight, both) = (class_rows("4"), class_rows("8"), class_rows("4,8"));
    assert!(!four.is_empty() && four != eight, "the two fits should differ: {four:?}");
    assert_eq!(both, four.union(&eight).cloned().collect(), "every fit's settings, each once");
    // Every vocabulary fit writes its settings as per-token tables (`tables/`); a later judge given
    // them (`--rule-tables`) scores each as a `token-table` setting with the same numbers, and none
    // twice where its own fit found it.
    let table_points = |counts: &str, name: &str, tables: Option<&Path>| {
        let dir = tmp.join(format!("eval-table-{name}"));
        let argv = ["eval", "--model", m, "--env", "envs/mqar-tiny.toml", "--policy", p, "--sequences", "8"];
        let mut more = vec!["--baselines", "token-table", "--fit-sequences", counts, "--out", dir.to_str().unwrap()];
        if let Some(t) = tables {
            more.extend(["--rule-tables", t.to_str().unwrap()]);
        }
        let (code, _, stderr) = ahr(&[&argv[..], &more[..]].concat());
        assert_eq!(code, 0, "{stderr}");
        // (setting, loss, bytes per token), in the settings' order (points come as they finish)
        let mut points: Vec<(String, f64, f64)> = std::fs::read_to_string(dir.join("points.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["name"] == "token-table")
            .map(|v| {
                (
                    v["setting"].as_str().unwrap().to_string(),
                    v["loss"].as_f64().unwrap(),
                    v["kv_bytes_per_token"].as_f64().unwrap(),
                )
            })
            .collect();
        points.sort_by(|a, b| a.0.cmp(&b.0));
        (dir, points)
    };
    let (dir4, four) = table_points("4", "4", None);
    let tables = dir4.join("tables");
    assert_eq!(std::fs::read_dir(&tables).unwrap().count(), four.len(), "a table per setting");
    let (_, eight) = table_points("8", "8", Some(&tables));
    for (setting, loss, bytes) in &four {
        let found = eight.iter().find(|(s, _, _)| s == setting || s.starts_with(&format!("{setting} [")));
        let (_, l, b) = found.unwrap_or_else(|| panic!("{setting} not judged again: {eight:?}"));
        assert_eq!((l, b), (loss, bytes), "{setting}");
    }
    assert!(eight.iter().any(|(s, _, _)| s.contains(" [")), "no table judged: {eight:?}");
    assert_eq!(table_points("4", "4-again", Some(&tables)).1, four, "a table of a setting found again, judged twice");
    let (code, _, stderr) = ahr(&[
        "eval",
        "--model",
        m,
        "--env",
        "envs/mqar-tiny.toml",
        "--policy",
        p,
        "--baselines",
        "token-class",
        "--rule-tables",
        tables.to_str().unwrap(),
        "--out",
        "/tmp/x",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("settings of `token-table`") && !stderr.contains("panicked"), "{stderr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(eval_dir.join("metrics.json")).unwrap()).unwrap();
    let verdict = &metrics["policies"][0];
    assert!(verdict["on_front"].is_boolean());
    assert!(verdict["beats_every_family"].is_boolean());
    let judged = verdict["families"].as_array().unwrap().len() + verdict["no_setting_fits"].as_array().unwrap().len();
    // Every family but the opt-in ones (`token-table`, `token-entropy`, `tova-tiers`, `tova-class`,
    // `tova-layers`, `tova-pooled`) runs by default.
    let default_families = ahr_eval::Family::ALL.iter().filter(|f| !f.opt_in()).count();
    assert_eq!(default_families, ahr_eval::Family::ALL.len() - 6);
    assert_eq!(judged, default_families, "every default family is judged at the policy's memory: {verdict}");

    let out = tmp.join("decode.json");
    let argv =
        ["bench", "decode", "--model", m, "--policy", p, "--ctx", "64", "--batch", "1,2", "--reps", "1", "--cold"];
    let (code, _, stderr) = ahr(&[&argv[..], &["--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(report["bandwidth_gbps"].as_f64().unwrap() > 0.0);
    assert_eq!(report["cold"], true);
    assert!(report["cold_sweep_bytes"].as_u64().unwrap() >= ahr_infer::bench::COLD_SWEEP_BYTES as u64);
    let caches: Vec<&str> = report["runs"].as_array().unwrap().iter().map(|r| r["cache"].as_str().unwrap()).collect();
    for c in ["dense-mha", "uniform:drop", "uniform:full", "policy"] {
        assert!(caches.contains(&c), "{c} missing from {caches:?}");
    }

    let (code, _, stderr) = ahr(&["generate", "--model", m, "--policy", m, "--tokens", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("manifest.json") && !stderr.contains("panicked"), "{stderr}");
    let (code, _, stderr) =
        ahr(&["eval", "--model", m, "--env", "envs/mqar-tiny.toml", "--baselines", "oracle", "--out", "/tmp/x"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown baseline family `oracle`"), "{stderr}");
}

/// `ahr analyze` on the tiny model: its records agree with the environment's accounting, every
/// MQAR role appears, and each section of the report is there.
fn analyze_explains(tmp: &Path, m: &str, p: &str) {
    // Half the tiny env's length, so that 2× still fits Zoology's V > L.
    let env = tmp.join("mqar-16.toml");
    let text = std::fs::read_to_string(root().join("envs/mqar-tiny.toml")).unwrap();
    std::fs::write(
        &env,
        text.replace("seq_len = 32", "seq_len = 16").replace("num_kv_pairs = [4]", "num_kv_pairs = [2]"),
    )
    .unwrap();
    let out = tmp.join("analysis");
    let argv = ["analyze", "--model", m, "--policy", p, "--compare", p, "--sequences", "8", "--lengths", "2"];
    let (code, stdout, stderr) =
        ahr(&[&argv[..], &["--env", env.to_str().unwrap(), "--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{stderr}");
    for section in
        ["## Findings", "- Layer 0:", "Spearman", "## Feature ablation", "## Length generalisation", "| 32 | 2 |"]
    {
        assert!(stdout.contains(section), "{section} missing from {stdout}");
    }
    for f in ["report.md", "analysis.json", "options_by_layer.png", "bytes_by_position.png", "bytes_by_token.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    let buckets = a["by_position"].as_array().unwrap();
    let count: f64 = buckets.iter().map(|b| b["count"].as_f64().unwrap()).sum();
    let kept: f64 = buckets.iter().map(|b| b["count"].as_f64().unwrap() * b["kept"].as_f64().unwrap()).sum();
    assert_eq!(count, 8.0 * 16.0, "one record per token");
    // What the records keep per token is the cache's final size (no expiring options here).
    let mem = a["policy"]["peak_frac"].as_f64().unwrap();
    assert!((kept / count - mem).abs() < 1e-9, "records keep {} but the environment held {mem}", kept / count);
    let roles: Vec<&str> = a["by_token"].as_array().unwrap().iter().map(|b| b["label"].as_str().unwrap()).collect();
    assert_eq!(roles, ["key", "value", "query", "filler"]);
    for row in a["options_by_layer"].as_array().unwrap() {
        let total: f64 = row.as_array().unwrap().iter().map(|f| f.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
    // Comparing the policy with itself reproduces its numbers; the ablations cover every feature.
    assert_eq!(a["compared"][0][2]["mem_frac"], a["policy"]["mem_frac"]);
    assert_eq!(
        a["ablations"].as_array().unwrap().len(),
        7 + 3 + 1 + 1,
        "7 global features (version 3), 3 per layer, the token id, all features at once"
    );
    // The decisions replayed through the parallel forward are the policy; its own table pairs
    // with it over the same sequences.
    let t = &a["as_table"];
    for k in ["metric", "mem_frac"] {
        let (replay, policy) = (t["replay"][k].as_f64().unwrap(), a["policy"][k].as_f64().unwrap());
        assert!((replay - policy).abs() < 1e-6, "{k}: replayed {replay}, the policy {policy}");
    }
    assert_eq!(t["margin"]["sequences"], 8);
    assert!((0.0..=1.0).contains(&t["changed_decisions"].as_f64().unwrap()));
    assert!(stdout.contains("As a per-token table"), "{stdout}");
    let (code, _, stderr) =
        ahr(&[&argv[..5], &["--env", env.to_str().unwrap(), "--lengths", "1", "--out", "/tmp/x"]].concat());
    assert_eq!(code, 1);
    assert!(stderr.contains("--lengths") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_mqar_preset_file_is_the_code_preset() {
    let file = ahr_train::ModelFile::load(&root().join("configs/model/mqar.toml")).unwrap();
    assert_eq!(file.model, ahr_tpa::ModelConfig::mqar());
    // The fine-tuning preset starts from mqar models, so `--init` needs the same shape.
    let tune = ahr_train::ModelFile::load(&root().join("configs/model/mqar-offset-ft.toml")).unwrap();
    assert_eq!(tune.model, file.model);
    for preset in ["tiny", "mqar", "mqar-mha", "mqar-tiny", "small", "mqar-offset-ft", "mqar-scattered-ft"] {
        ahr_train::ModelFile::load(&root().join(format!("configs/model/{preset}.toml"))).unwrap();
    }
    for env in [
        "mqar",
        "mqar-mixed",
        "mqar-offset",
        "mqar-tiny",
        "text",
        "text-recent",
        "text-recent-per-layer",
        "mqar-mixed-offset-128",
        "mqar-scattered",
        "mqar-updates",
    ] {
        ahr_env::EnvSpec::load(&root().join(format!("envs/{env}.toml"))).unwrap();
    }
    for ppo in [
        "tiny",
        "mqar",
        "mqar-budget",
        "mqar-tiny",
        "mqar-tiny-budget",
        "text-recent-budget",
        "text-recent-layer-budget",
        "mqar-offset-budget",
        "cartpole",
    ] {
        ahr_train::policy::load_ppo_config(&root().join(format!("configs/ppo/{ppo}.toml"))).unwrap();
    }
}
