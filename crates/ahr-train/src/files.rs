//! The TOML files users edit — model presets (`configs/model/*.toml`), env specs (`envs/*.toml`) —
//! and model directories loaded as an environment or a policy runs them.

use std::path::Path;

use ahr_tpa::checkpoint::load_model;
use ahr_tpa::{Model, ModelConfig};
use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::pretrain::PretrainConfig;

/// A model preset: the model's shape and how to pretrain it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// The model.
    pub model: ModelConfig,
    /// Pretraining recipe (defaults apply to missing keys).
    #[serde(default)]
    pub pretrain: PretrainConfig,
}

/// An env spec (`[task]`, `[env]`, `[reward]`).
pub use ahr_env::EnvSpec as EnvFile;

/// A model directory as the env in `env_path` runs it: with the env's timed options (`recent:W`,
/// schedules) added to its menu.
pub fn load_env_model(model_dir: &Path, spec: &EnvFile, env_path: &Path, device: &Device) -> Result<Model> {
    spec.model(load_model(model_dir, device)?).map_err(|e| anyhow::anyhow!("{}: {e}", env_path.display()))
}

/// An env spec with the model as the env runs it ([`load_env_model`]) and the env's task: what
/// every command that runs a model on an env's data loads first (`eval`, `analyze`, `bench
/// rollout`, the examples).
pub struct EnvRun {
    /// The env spec.
    pub spec: EnvFile,
    /// The model, its menu as the env offers it.
    pub model: Model,
    /// The env's task, checked against the model's vocabulary.
    pub task: ahr_tasks::Task,
}

impl EnvRun {
    /// Load `env_path`, the model in `model_dir` as that env runs it, and the env's task.
    pub fn load(model_dir: &Path, env_path: &Path, device: &Device) -> Result<Self> {
        let spec = EnvFile::load(env_path)?;
        let model = load_env_model(model_dir, &spec, env_path, device)?;
        let task = ahr_env::load_task(&spec, env_path, model.config()).map_err(anyhow::Error::msg)?;
        Ok(Self { spec, model, task })
    }

    /// The env's learned eviction (`[env] evict`) and the menu index its tokens are written at;
    /// an error when the env has none.
    pub fn eviction(&self) -> Result<(ahr_policy::evict::Eviction, usize)> {
        let Some(eviction) = self.spec.env.evict else { bail!("not a learned-eviction env ([env] evict)") };
        let store = self.model.config().option_index(eviction.store).map_err(anyhow::Error::msg)?;
        Ok((eviction, store))
    }
}

/// A model directory as a policy runs it: with the menu of the policy's manifest — the options
/// its env excluded taken off, its timed options added (the model as it is without a policy).
pub fn load_policy_model(model_dir: &Path, policy_dir: Option<&Path>, device: &Device) -> Result<Model> {
    let model = load_model(model_dir, device)?;
    Ok(match policy_dir {
        Some(dir) => {
            let manifest = ahr_policy::export::load_manifest(dir)?;
            let excluded: Vec<_> = model.config().menu.iter().copied().filter(|o| !manifest.menu.contains(o)).collect();
            model.without(&excluded)?.with_timed(&manifest.timed_options())?
        }
        None => model,
    })
}

/// Read a TOML file into `T`, naming the file in errors.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid file", path.display()))
}

impl ModelFile {
    /// Read and validate a model preset.
    pub fn load(path: &Path) -> Result<Self> {
        let file: Self = read_toml(path)?;
        file.model.validate().map_err(|msg| anyhow::anyhow!("{}: invalid [model]: {msg}", path.display()))?;
        file.pretrain
            .validate(&file.model)
            .map_err(|msg| anyhow::anyhow!("{}: invalid [pretrain]: {msg}", path.display()))?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::load_ppo_config;

    /// The `.toml` files of a folder under the workspace root, sorted.
    fn committed(folder: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        files
    }

    /// Every preset the repository ships parses and passes the checks its command runs first, so a
    /// recipe in the docs cannot name a preset that an edit to a config struct broke.
    #[test]
    fn every_committed_preset_loads() {
        let mut failures = Vec::new();
        let models = committed("configs/model");
        for path in &models {
            if let Err(e) = ModelFile::load(path) {
                failures.push(format!("{e:#}"));
            }
        }
        let ppo = committed("configs/ppo");
        for path in &ppo {
            if let Err(e) = load_ppo_config(path) {
                failures.push(format!("{e:#}"));
            }
        }
        let envs = committed("envs");
        for path in &envs {
            if let Err(e) = EnvFile::load(path) {
                failures.push(e.to_string());
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // The folders were found and read (an empty listing would pass the loop vacuously).
        assert!(
            models.len() > 10 && ppo.len() > 10 && envs.len() > 10,
            "{} {} {}",
            models.len(),
            ppo.len(),
            envs.len()
        );
    }
}
