//! Learned eviction in the rank environment ([`ahr_policy::evict`]): the book of what every held
//! token has drawn, the observation built from it, and the evictions a policy's actions make.
//!
//! Per step t: the model's step for token t (its query sees the held tokens and itself) gives each
//! held token's weight ([`KeyScorer`]); t joins the candidates last; the observation shows every
//! candidate's features. The action of a layer is a candidate slot: once the layer holds more than
//! `budget` tokens with t pushed, that token leaves the cache from query t + 1 on (TOVA's timing);
//! below the budget only slot 0 is allowed and the action does nothing.

use ahr_policy::ObsBatch;
use ahr_policy::evict::{CANDIDATE_FEATURES, Drawn, EVICT_GLOBALS, Eviction};
use ahr_tpa::review::KeyScorer;
use ahr_tpa::{KvCache, ModelConfig, StepOutput};

use crate::vec_env::EnvError;

/// What each stream's layers hold under learned eviction.
pub(crate) struct EvictBook {
    eviction: Eviction,
    /// The menu index of `eviction.store`.
    option: usize,
    layers: usize,
    scorer: KeyScorer,
    /// Per (stream, layer): the held tokens in position order (the newest last), with their
    /// stored keys.
    held: Vec<Vec<(Drawn, Vec<f32>)>>,
}

/// A token a step's actions evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Evicted {
    pub(crate) stream: usize,
    pub(crate) layer: usize,
    pub(crate) position: usize,
}

impl EvictBook {
    /// An empty book for `streams` streams of a model with config `cfg` (its menu must hold the
    /// eviction's store option as a plain option).
    pub(crate) fn new(cfg: &ModelConfig, streams: usize, eviction: Eviction) -> Result<Self, EnvError> {
        let option = cfg.option_index(eviction.store).map_err(|e| EnvError::Other(format!("[env] evict: {e}")))?;
        Ok(Self {
            eviction,
            option,
            layers: cfg.n_layers,
            scorer: KeyScorer::new(cfg),
            held: vec![Vec::new(); streams * cfg.n_layers],
        })
    }

    /// The menu index every token is written at.
    pub(crate) fn option(&self) -> usize {
        self.option
    }

    /// Record step `t` (tokens `ids`): every held token draws its weight from the step's query,
    /// and the token just processed joins its layer's candidates.
    pub(crate) fn observe(&mut self, out: &StepOutput, ids: &[u32], t: usize) -> Result<(), EnvError> {
        let weights = self.scorer.step(out, |_| true)?;
        let options = vec![self.option; ids.len()];
        for l in 0..self.layers {
            let keys = self.scorer.stored_keys(&out.pending, l, &options)?;
            for (b, key) in keys.into_iter().enumerate() {
                let held = &mut self.held[b * self.layers + l];
                for (drawn, k) in held.iter_mut() {
                    drawn.draw(weights.weight(b, l, k));
                }
                let w = weights.weight(b, l, &key);
                held.push((Drawn::new(t, ids[b], w, self.eviction.decay), key));
            }
        }
        Ok(())
    }

    /// The observation of step `t`: per stream [`EVICT_GLOBALS`], then per layer and slot the
    /// candidates' features (zeros past the held ones), with each layer's allowed slots.
    pub(crate) fn obs(&self, t: usize) -> ObsBatch {
        let streams = self.held.len() / self.layers;
        let (slots, f) = (self.eviction.slots(), CANDIDATE_FEATURES.len());
        let mut obs = ObsBatch { len: streams, ..Default::default() };
        obs.features.reserve(streams * (EVICT_GLOBALS.len() + self.layers * slots * f));
        for b in 0..streams {
            obs.features.extend([t as f32, (t as f32).ln_1p()]);
            for l in 0..self.layers {
                let held = &self.held[b * self.layers + l];
                for (drawn, _) in held {
                    obs.features.extend(drawn.features(t, l, self.layers));
                }
                obs.features.extend(std::iter::repeat_n(0.0, (slots - held.len()) * f));
                let over = held.len() > self.eviction.budget;
                obs.masks.extend((0..slots).map(|j| if over { j < held.len() } else { j == 0 }));
            }
        }
        obs
    }

    /// Apply `actions` (a slot per stream and layer) after step t's token was pushed to `cache`:
    /// in every layer over its budget the chosen token leaves from query t + 1 on.
    pub(crate) fn evict(&mut self, cache: &mut KvCache, actions: &[usize]) -> Result<Vec<Evicted>, EnvError> {
        let mut out = Vec::new();
        for (i, held) in self.held.iter_mut().enumerate() {
            if held.len() <= self.eviction.budget {
                continue;
            }
            let slot = actions[i];
            if slot >= held.len() {
                return Err(EnvError::Other(format!("evict: slot {slot} of {} candidates", held.len())));
            }
            let (stream, layer) = (i / self.layers, i % self.layers);
            cache.evict(stream, layer, self.option, slot)?;
            out.push(Evicted { stream, layer, position: held.remove(slot).0.position });
        }
        Ok(out)
    }
}
