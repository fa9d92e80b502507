//! Loss and accuracy over labelled positions, under a storage choice, on held-out data.

use ahr_tasks::{Batch, IGNORE, Metrics, Task};
use ahr_tpa::{ChoiceSpec, Choices, Model, cost};
use anyhow::{Result, bail};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

/// What `eval-model` and the rank curve report.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvalReport {
    /// Mean cross-entropy over labelled positions (nats).
    pub loss: f64,
    /// Fraction of labelled positions predicted exactly.
    pub accuracy: f64,
    /// Bits per token over labelled positions (bits per byte for byte-level text).
    pub bits_per_token: f64,
    /// KV-cache bytes per token over all layers (cost model).
    pub kv_bytes_per_token: usize,
    /// Tokens fed through the model.
    pub tokens: u64,
    /// Labelled positions scored.
    pub labelled: u64,
}

/// Indices of labelled positions (flattened `[B·T]`) and their labels.
pub fn labelled_positions(batch: &Batch, device: &Device) -> Option<(Tensor<1, Int>, Tensor<1, Int>, usize)> {
    let (idx, lab): (Vec<i64>, Vec<i64>) =
        batch.labels.iter().enumerate().filter(|(_, l)| **l != IGNORE).map(|(i, l)| (i as i64, *l)).unzip();
    let n = idx.len();
    (n > 0).then(|| {
        (Tensor::from_data(TensorData::new(idx, [n]), device), Tensor::from_data(TensorData::new(lab, [n]), device), n)
    })
}

/// Where the LM head runs during training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HeadAt {
    /// Only at labelled positions (the default: MQAR labels 8 of 128 positions).
    #[default]
    Labelled,
    /// At every position, then the labelled rows are picked (the naive way, for benchmarks).
    All,
}

impl std::str::FromStr for HeadAt {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "labelled" => Ok(HeadAt::Labelled),
            "all" => Ok(HeadAt::All),
            other => Err(format!("unknown head placement `{other}`; choose `labelled` or `all`")),
        }
    }
}

/// Label log-probabilities `[N]`, logits `[N, V]` and labels `[N]` at the labelled positions.
pub type LabelLogprobs = (Tensor<1>, Tensor<2>, Tensor<1, Int>);

/// [`LabelLogprobs`] of `batch` under `choices` (`None` when nothing is labelled).
pub fn label_logprobs(
    model: &Model,
    batch: &Batch,
    choices: &Choices,
    device: &Device,
) -> Result<Option<LabelLogprobs>> {
    label_logprobs_with(model, batch, choices, device, HeadAt::Labelled)
}

/// [`label_logprobs`] with the LM head placement chosen.
pub fn label_logprobs_with(
    model: &Model,
    batch: &Batch,
    choices: &Choices,
    device: &Device,
    head_at: HeadAt,
) -> Result<Option<LabelLogprobs>> {
    label_logprobs_resumed(model, batch, choices, device, head_at, None, None).map(|(out, _)| out)
}

/// [`label_logprobs_with`] whose forward starts at layer `from.0` with `from.1` as its input and
/// also returns the input of layer `capture` ([`Model::forward_hidden_resumed`]).
pub fn label_logprobs_resumed(
    model: &Model,
    batch: &Batch,
    choices: &Choices,
    device: &Device,
    head_at: HeadAt,
    from: Option<(usize, Tensor<3>)>,
    capture: Option<usize>,
) -> Result<(Option<LabelLogprobs>, Option<Tensor<3>>)> {
    let Some((idx, labels, n)) = labelled_positions(batch, device) else {
        return Ok((None, None));
    };
    let vocab = model.config().vocab_size;
    if let Some(bad) = batch.labels.iter().find(|&&l| l != IGNORE && l as usize >= vocab) {
        bail!("label {bad} is outside the model's vocabulary of {vocab}");
    }
    let tokens = model.tokens(&batch.inputs, batch.batch_size, batch.seq_len, device)?;
    let (hidden, captured) = model.forward_hidden_resumed(tokens, choices, from, capture)?;
    let [b, t, d] = hidden.dims();
    let logits = match head_at {
        HeadAt::Labelled => model.head(hidden.reshape([b * t, d]).select(0, idx)),
        HeadAt::All => model.head(hidden.reshape([b * t, d])).select(0, idx),
    };
    // Untracked (the judge, evaluation): `exp` vectorised on the host, the same bits
    // (`ahr_policy::ops`); a training step keeps burn's, whose backward pass it was trained with.
    let logp = if logits.is_tracked() {
        log_softmax(logits.clone(), 1)
    } else {
        ahr_policy::ops::log_softmax(logits.clone(), 1)
    };
    let logp = logp.gather(1, labels.clone().reshape([n, 1])).reshape([n]);
    Ok((Some((logp, logits, labels)), captured))
}

/// Evaluate `model` on the task's held-out data under `spec`.
pub fn evaluate(
    model: &Model,
    task: &Task,
    spec: ChoiceSpec,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    let cfg = model.config();
    let mut metrics = Metrics::default();
    let mut tokens = 0u64;
    for batch in task.valid_batches(batch_size) {
        tokens += (batch.batch_size * batch.seq_len) as u64;
        let choices = spec.choices(cfg, batch.batch_size, batch.seq_len).map_err(anyhow::Error::msg)?;
        let Some((logp, logits, labels)) = label_logprobs(model, &batch, &choices, device)? else {
            continue;
        };
        let n = labels.dims()[0];
        let loss_sum = -logp.sum().into_scalar::<f32>() as f64;
        let correct = logits.argmax(1).reshape([n]).equal(labels).int().sum().into_scalar::<i64>() as u64;
        metrics.add(loss_sum, correct, n as u64);
    }
    if metrics.count == 0 {
        bail!("the held-out data has no labelled positions");
    }
    Ok(EvalReport {
        loss: metrics.loss(),
        accuracy: metrics.accuracy(),
        bits_per_token: metrics.bits_per_token(),
        kv_bytes_per_token: cfg.n_layers * cost::bytes_per_token(cfg, spec.option(cfg)),
        tokens,
        labelled: metrics.count,
    })
}
