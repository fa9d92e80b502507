//! `ahr quickstart`: the main job on the built-in default, nothing to fetch. Start from the `mqar`
//! model shipped in the binary (or pretrain the preset on Zoology's MQAR point with `--pretrain`),
//! train a rank policy with PPO, evaluate it against every baseline, print the Pareto table and
//! the plot's path.
//!
//! The preset, env and PPO files and the shipped model are compiled into the binary and written
//! under `--out`, so the command works from any directory; each finished stage is reused when run
//! again.

use std::path::Path;

use anyhow::Result;

use ahr_eval::{EvalArgs, Family};
use ahr_train::PretrainArgs;
use ahr_train::policy::PolicyRunArgs;

use crate::args::Common;
use crate::device::device;
use crate::stages;

const MODEL_PRESET: &str = include_str!("../../../../configs/model/mqar.toml");
const ENV_SPEC: &str = include_str!("../../../../envs/mqar.toml");
const PPO_CONFIG: &str = include_str!("../../../../configs/ppo/mqar-budget.toml");

/// `policies/models/mqar` — the `mqar` preset pretrained on `envs/mqar.toml` with seed 0 — file by
/// file, so the quickstart trains its policy in minutes instead of pretraining for twenty.
pub const SHIPPED_MODEL: [(&str, &[u8]); 4] = [
    ("config.json", include_bytes!("../../../../policies/models/mqar/config.json")),
    ("model.bpk", include_bytes!("../../../../policies/models/mqar/model.bpk")),
    ("pretrain.json", include_bytes!("../../../../policies/models/mqar/pretrain.json")),
    ("rank_curve.json", include_bytes!("../../../../policies/models/mqar/rank_curve.json")),
];

/// Write the shipped model into `dir` (each file atomically).
pub fn write_shipped_model(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in SHIPPED_MODEL {
        ahr_tpa::checkpoint::write_atomic(&dir.join(name), bytes)?;
    }
    Ok(())
}

/// Run the quickstart into `out`; `sequences` limits the held-out sequences per evaluated point.
/// With `pretrain`, the model is pretrained here from the preset instead of taken from the binary.
pub fn quickstart(out: &Path, pretrain: bool, sequences: Option<usize>, workers: usize, common: &Common) -> Result<()> {
    let started = std::time::Instant::now();
    let dev = device(&common.device)?;
    let configs = out.join("configs");
    std::fs::create_dir_all(&configs)?;
    let (model_cfg, env, ppo) = (configs.join("model.toml"), configs.join("env.toml"), configs.join("ppo.toml"));
    for (path, text) in [(&model_cfg, MODEL_PRESET), (&env, ENV_SPEC), (&ppo, PPO_CONFIG)] {
        ahr_tpa::checkpoint::write_atomic(path, text.as_bytes())?;
    }

    let model = out.join("model");
    if model.join("rank_curve.json").is_file() {
        eprintln!("[1/3] reusing the pretrained model in {}", model.display());
    } else if !pretrain {
        eprintln!(
            "[1/3] the shipped mqar model (the preset pretrained with seed 0; `--pretrain` pretrains it \
             here, ~22 min) into {}",
            model.display()
        );
        write_shipped_model(&model)?;
    } else {
        eprintln!("[1/3] pretraining the mqar preset into {}", model.display());
        let resume = model.join("checkpoint").is_dir();
        let args = PretrainArgs {
            model_config: model_cfg,
            env: env.clone(),
            out: model.clone(),
            steps: None,
            seed: 0,
            resume,
            init: None,
            stop_after: None,
        };
        stages::pretrain(&args, &dev, &ahr_dist::Comm::single())?;
    }

    let policy = out.join("policy");
    if policy.join(ahr_policy::export::MANIFEST_FILE).is_file() {
        eprintln!("[2/3] reusing the policy in {}", policy.display());
    } else {
        eprintln!("[2/3] training a rank policy into {}", policy.display());
        let run_dir = out.join("policy-run");
        let args = PolicyRunArgs {
            model: model.clone(),
            env: env.clone(),
            config: ppo,
            out: policy.clone(),
            resume: run_dir.join("checkpoint").is_dir(),
            run_dir: Some(run_dir),
            workers,
            seed: 1,
            total_timesteps: None,
            eval_examples: sequences,
        };
        stages::train_policy(&args, &dev, &ahr_dist::Comm::single())?;
    }

    eprintln!("[3/3] evaluating the policy against the baselines");
    let eval_dir = out.join("eval");
    let args = EvalArgs {
        models: vec![model],
        env,
        policies: vec![policy],
        // Every family but the surprisal and spike rules with their own cache: on the default
        // task (V = 8192) their searches decode token by token tens to hundreds of times, longer
        // than the rest of the judge; the optimistic full-cache surprisal rule runs. The opt-in
        // families stay out as in `ahr eval`'s default.
        families: Family::ALL.into_iter().filter(|f| !f.search_decodes() && !f.opt_in()).collect(),
        sequences,
        // Every family at the policy's memory (the verdict); `ahr eval` also searches fixed
        // targets (10 / 25 / 50 %), which would triple this stage.
        fractions: Vec::new(),
        workers,
        fit_sequences: Vec::new(),
        fit_rounds: None,
        fit_cache: None,
        rule_tables: Vec::new(),
    };
    stages::judge(&args, &eval_dir, &dev)?;
    println!("quickstart finished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ahr_tpa::checkpoint::{fingerprint, load_model};

    use super::write_shipped_model;

    /// The model the quickstart writes is `policies/models/mqar` to the byte: it loads, and the
    /// policies committed for that model accept it (same fingerprint).
    #[test]
    fn the_shipped_model_is_the_committed_mqar_model() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap();
        write_shipped_model(dir.path()).unwrap();
        let shipped = fingerprint(dir.path()).unwrap();
        assert_eq!(shipped, fingerprint(&root.join("policies/models/mqar")).unwrap());
        let dev = ahr_tpa::device::from_env();
        let model = load_model(dir.path(), &dev).unwrap();
        let manifest = ahr_policy::export::load_manifest(&root.join("policies/mqar-budget-seed1")).unwrap();
        manifest.check(model.config(), &shipped).unwrap();
    }
}
