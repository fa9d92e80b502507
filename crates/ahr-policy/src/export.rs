//! Exported policies: `policies/<name>/manifest.json` + `policy.bpk` (burn record) +
//! `policy.safetensors` (the same weights for consumers outside Rust).
//!
//! The manifest says what the policy observes and decides and which model it was trained on;
//! loading checks it against the model and refuses any mismatch with a message naming the field.

use std::path::Path;

use ahr_tpa::checkpoint::{load_record, save_record, write_atomic, write_atomic_with};
use ahr_tpa::{Invalid, ModelConfig};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::net::{ActorCritic, PolicyConfig, PolicyDims};
use crate::obs::{Granularity, ObsSpec, RunningNorm};

/// Version of the export format written (2 added `budget` and the safetensors copy).
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version this build still reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Manifest file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Weights file name.
pub const WEIGHTS_FILE: &str = "policy.bpk";
/// Safetensors copy of the weights (tensor names are the module paths, e.g. `actor.l1.weight`).
pub const SAFETENSORS_FILE: &str = "policy.safetensors";

/// Everything needed to rebuild and check a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Export format version.
    pub format_version: u32,
    /// Observation spec (feature names and version).
    pub obs: ObsSpec,
    /// Feature normalisation frozen at export.
    pub norm: RunningNorm,
    /// Menu the actions index into, cheapest first (written as `drop`, `rank:ρ`, …).
    pub menu: Vec<ahr_tpa::StoreOption>,
    /// Decision granularity.
    pub granularity: Granularity,
    /// Layers (heads).
    pub n_layers: usize,
    /// Network config.
    pub policy: PolicyConfig,
    /// Network sizes.
    pub dims: PolicyDims,
    /// Fingerprint of the model directory the policy was trained on.
    pub model_fingerprint: String,
    /// Budget mode's target memory fraction the policy was trained for (it feeds the
    /// `budget_left` feature); absent without budget mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// Second decisions (DESIGN.md §10): the policy also decides again for each token this many
    /// queries after writing it, or (`"spike"`) one step after the token tops a query's attention
    /// row (L more action heads, review features); absent without reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ahr_tpa::ReviewAt>,
    /// Learned eviction ([`crate::evict`]): every token written at `store`, the policy picks which
    /// token leaves a layer holding more than `budget`; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evict: Option<crate::evict::Eviction>,
    /// Fingerprint of the text corpus the policy was trained on (`ahr_tasks::Task::data_fingerprint`),
    /// so a judge on a changed corpus can say so; absent for generated tasks and older policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    /// Deployment's memory calibration (`ahr calibrate`): the deterministic decisions priced so
    /// that they hold the target memory; absent: plain argmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// A price on memory applied where a policy decides deterministically (deployment, `eval`,
/// `analyze`, `generate`): option `o` is picked by `argmax_o log p_o − price · costs[o]`.
///
/// A policy trained in budget mode meets its budget as a *sampling* policy; its most probable
/// option per token holds a different memory (usually less: a token kept with probability 0.3 is
/// never kept by the argmax). `ahr calibrate` finds the price at which the deterministic policy
/// holds the target on training sequences, so a user who asked for 10 % deploys 10 %.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Price per unit of `costs` (negative: the policy is paid to keep more).
    pub price: f64,
    /// Per menu option, its time-averaged bytes over a sequence of the env's length relative to
    /// the exact option's (`drop` 0, the exact option 1).
    pub costs: Vec<f64>,
    /// The memory target, as a fraction of the exact choice's bytes.
    pub target: f64,
    /// The deterministic policy's memory fraction at `price` on the training sequences it was
    /// calibrated on, and without a price.
    pub memory: f64,
    /// … without a price.
    pub memory_uncalibrated: f64,
    /// Training sequences it was calibrated on (the task's training stream for `seed`).
    pub sequences: usize,
    /// Seed of that stream.
    pub seed: u64,
}

impl Calibration {
    /// The shift of the log-probabilities per option ([`price_shift`]).
    pub fn shift(&self) -> Vec<f32> {
        price_shift(&self.costs, self.price)
    }
}

/// The shift of the log-probabilities per option at `price`: `−price · cost`, empty at price 0
/// (the plain argmax, exactly as without a calibration).
pub fn price_shift(costs: &[f64], price: f64) -> Vec<f32> {
    if price == 0.0 { Vec::new() } else { costs.iter().map(|c| (-price * c) as f32).collect() }
}

/// Errors of export and import.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Underlying file or record error.
    #[error(transparent)]
    Model(#[from] ahr_tpa::Error),
    /// The manifest is unreadable.
    #[error("{path}: cannot parse the manifest: {msg}")]
    Manifest {
        /// The file.
        path: String,
        /// Parser message.
        msg: String,
    },
    /// The policy does not fit the model.
    #[error("policy {path} does not match the model: {cause}")]
    Mismatch {
        /// The policy directory.
        path: String,
        /// What differs.
        cause: Invalid,
    },
}

impl Manifest {
    /// The policy's timed options (`recent:W`, schedules: what an env's `[env] recent` and
    /// `[env] schedules` add to the model's menu), in menu order.
    pub fn timed_options(&self) -> Vec<ahr_tpa::StoreOption> {
        self.menu.iter().copied().filter(|o| o.is_timed()).collect()
    }

    /// Check this manifest against a model config and fingerprint.
    pub fn check(&self, model: &ModelConfig, fingerprint: &str) -> Result<(), Invalid> {
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.format_version) {
            return Err(Invalid::new(
                "format_version",
                format!(
                    "{} is unknown to this build (it reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if self.n_layers != model.n_layers {
            return Err(Invalid::new(
                "n_layers",
                format!("the policy has {}, the model {}", self.n_layers, model.n_layers),
            ));
        }
        // An evicter writes every token at its store (its second tier: a lower rank of it) and
        // decides over candidate slots, not menu options: a menu that holds the store runs it the
        // same, whatever else it holds (an env's windows, for rules judged beside it).
        let fits = match self.evict {
            Some(e) => model.menu.contains(&e.store) && e.tier2.is_none_or(|t| model.menu.contains(&t.store)),
            None => self.menu == model.menu,
        };
        if !fits {
            let hint = match self.timed_options() {
                w if w.is_empty() => String::new(),
                w => format!(
                    " (the policy keeps timed options [{}]; run it with an env whose `[env] recent` and \
                     `[env] schedules` add them)",
                    w.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
                ),
            };
            let names = |m: &[ahr_tpa::StoreOption]| m.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ");
            return Err(Invalid::new(
                "menu",
                format!("the policy's is [{}], the model's [{}]{hint}", names(&self.menu), names(&model.menu)),
            ));
        }
        let Some(expected) = ObsSpec::rank_version(self.obs.version, model.n_layers, model.vocab_size) else {
            return Err(Invalid::new(
                "obs.version",
                format!(
                    "{} is unknown to this build (it reads 1 to {})",
                    self.obs.version,
                    crate::obs::MAX_OBS_VERSION
                ),
            ));
        };
        let expected = match (self.review, self.evict) {
            (_, Some(eviction)) => ObsSpec::evict(model.n_layers, eviction),
            (Some(at), None) => expected.with_review(model.n_layers, at),
            (None, None) => expected,
        }
        .windowed(self.policy.window);
        if self.obs.version != expected.version || self.obs.features != expected.features {
            return Err(Invalid::new(
                "obs",
                format!(
                    "version {} with {} features; this build produces version {} with {}",
                    self.obs.version,
                    self.obs.features.len(),
                    expected.version,
                    expected.features.len()
                ),
            ));
        }
        if let Some(c) = &self.calibration {
            if self.evict.is_some() {
                return Err(Invalid::new(
                    "calibration",
                    "a learned evicter holds its budget by construction and has no calibration".to_string(),
                ));
            }
            let options = self.menu.len();
            if c.costs.len() != options
                || self.dims.options != options
                || !c.price.is_finite()
                || c.costs.iter().any(|x| !x.is_finite())
            {
                return Err(Invalid::new(
                    "calibration",
                    format!(
                        "needs one finite cost per option of the menu ({options}; the network has {}) and a finite \
                         price: found {} costs and price {}",
                        self.dims.options,
                        c.costs.len(),
                        c.price
                    ),
                ));
            }
        }
        if self.model_fingerprint != fingerprint {
            return Err(Invalid::new(
                "model_fingerprint",
                format!(
                    "the model's {} differs from the policy's {}",
                    short(fingerprint),
                    short(&self.model_fingerprint)
                ),
            ));
        }
        Ok(())
    }
}

fn short(s: &str) -> &str {
    &s[..s.len().min(12)]
}

/// Write a policy directory atomically file by file.
pub fn save_policy(dir: &Path, manifest: &Manifest, net: &ActorCritic) -> Result<(), ExportError> {
    std::fs::create_dir_all(dir).map_err(|e| ahr_tpa::Error::io(dir, e))?;
    let json = serde_json::to_string_pretty(manifest).expect("manifest should serialise");
    write_atomic(&dir.join(MANIFEST_FILE), json.as_bytes())?;
    save_record(net.clone(), &dir.join(WEIGHTS_FILE))?;
    let path = dir.join(SAFETENSORS_FILE);
    write_atomic_with(&path, |tmp| {
        let mut store = SafetensorsStore::from_file(tmp)
            .overwrite(true)
            .metadata("format", "ahr-policy")
            .metadata("format_version", FORMAT_VERSION.to_string());
        net.save_into(&mut store).map_err(|e| ahr_tpa::Error::weights(tmp, e.to_string()))
    })?;
    Ok(())
}

/// Load the safetensors copy of a policy's weights into `net` (as a consumer outside burn would
/// read them: by tensor name).
pub fn load_safetensors(dir: &Path, mut net: ActorCritic) -> Result<ActorCritic, ExportError> {
    let path = dir.join(SAFETENSORS_FILE);
    if !path.is_file() {
        return Err(
            ahr_tpa::Error::io(&path, std::io::Error::new(std::io::ErrorKind::NotFound, "file not found")).into()
        );
    }
    let mut store = SafetensorsStore::from_file(&path);
    let applied = net.load_from(&mut store).map_err(|e| ahr_tpa::Error::weights(&path, e.to_string()))?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() {
        return Err(ahr_tpa::Error::weights(&path, format!("tensors missing or mismatched: {applied}")).into());
    }
    Ok(net)
}

/// Read a manifest.
pub fn load_manifest(dir: &Path) -> Result<Manifest, ExportError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ahr_tpa::Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| ExportError::Manifest { path: path.display().to_string(), msg: e.to_string() })
}

/// Load a policy and check it against the model it will drive; a calibrated policy decides with
/// its calibration's price ([`Calibration`]).
pub fn load_policy(
    dir: &Path,
    model: &ModelConfig,
    fingerprint: &str,
    device: &Device,
) -> Result<(Manifest, ActorCritic), ExportError> {
    let manifest = load_manifest(dir)?;
    manifest
        .check(model, fingerprint)
        .map_err(|cause| ExportError::Mismatch { path: dir.display().to_string(), cause })?;
    let net = load_record(ActorCritic::new(&manifest.policy, manifest.dims, device), &dir.join(WEIGHTS_FILE))?;
    let net = match &manifest.calibration {
        Some(c) => net.with_deploy_shift(c.shift()),
        None => net,
    };
    Ok((manifest, net))
}
