//! Metrics sinks: a small trait with TensorBoard, JSONL and null implementations (border's shape).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Where training scalars and histograms go.
pub trait MetricsSink {
    /// Record a scalar.
    fn scalar(&mut self, tag: &str, value: f64, step: u64);
    /// Record a histogram of integer-valued samples given as counts per bucket `0..counts.len()`.
    fn histogram(&mut self, tag: &str, counts: &[u64], step: u64);
    /// Flush to disk.
    fn flush(&mut self);
}

/// Discards everything.
pub struct NullSink;

impl MetricsSink for NullSink {
    fn scalar(&mut self, _: &str, _: f64, _: u64) {}
    fn histogram(&mut self, _: &str, _: &[u64], _: u64) {}
    fn flush(&mut self) {}
}

/// TensorBoard event files through tensorboard-rs.
pub struct TensorBoardSink {
    writer: tensorboard_rs::summary_writer::SummaryWriter,
}

impl TensorBoardSink {
    /// Write events under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { writer: tensorboard_rs::summary_writer::SummaryWriter::new(dir) }
    }
}

impl MetricsSink for TensorBoardSink {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.writer.add_scalar(tag, value as f32, step as usize);
    }

    fn histogram(&mut self, tag: &str, counts: &[u64], step: u64) {
        let num: u64 = counts.iter().sum();
        if num == 0 {
            return;
        }
        let (mut sum, mut sum_sq) = (0f64, 0f64);
        for (i, &c) in counts.iter().enumerate() {
            sum += i as f64 * c as f64;
            sum_sq += (i * i) as f64 * c as f64;
        }
        let min = counts.iter().position(|&c| c > 0).unwrap_or(0) as f64;
        let max = counts.iter().rposition(|&c| c > 0).unwrap_or(0) as f64;
        // Bucket i holds option i: limits at i + 0.5.
        let limits: Vec<f64> = (0..counts.len()).map(|i| i as f64 + 0.5).collect();
        let buckets: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        self.writer.add_histogram_raw(tag, min, max, num as f64, sum, sum_sq, &limits, &buckets, step as usize);
    }

    fn flush(&mut self) {
        self.writer.flush();
    }
}

/// One JSON object per step: `{"step": s, "<tag>": value, …}`; histograms as arrays.
pub struct JsonlSink {
    file: std::fs::File,
    pending: BTreeMap<String, serde_json::Value>,
    step: Option<u64>,
}

impl JsonlSink {
    /// Append to `path`.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file, pending: BTreeMap::new(), step: None })
    }

    fn roll(&mut self, step: u64) {
        if self.step.is_some_and(|s| s != step) {
            self.write_pending();
        }
        self.step = Some(step);
    }

    fn write_pending(&mut self) {
        if let Some(step) = self.step
            && !self.pending.is_empty()
        {
            let mut obj = serde_json::Map::new();
            obj.insert("step".into(), step.into());
            obj.extend(std::mem::take(&mut self.pending));
            let _ = writeln!(self.file, "{}", serde_json::Value::Object(obj));
        }
    }
}

impl MetricsSink for JsonlSink {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.roll(step);
        let v = serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, serde_json::Value::Number);
        self.pending.insert(tag.to_string(), v);
    }

    fn histogram(&mut self, tag: &str, counts: &[u64], step: u64) {
        self.roll(step);
        self.pending.insert(tag.to_string(), serde_json::json!(counts));
    }

    fn flush(&mut self) {
        self.write_pending();
        self.pending.clear();
        let _ = self.file.flush();
    }
}

/// Several sinks at once.
pub struct Fanout(pub Vec<Box<dyn MetricsSink>>);

impl MetricsSink for Fanout {
    fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.0.iter_mut().for_each(|s| s.scalar(tag, value, step));
    }
    fn histogram(&mut self, tag: &str, counts: &[u64], step: u64) {
        self.0.iter_mut().for_each(|s| s.histogram(tag, counts, step));
    }
    fn flush(&mut self) {
        self.0.iter_mut().for_each(|s| s.flush());
    }
}
