//! Rotary position embedding, T6's layout and sign convention.
//!
//! Rotate-half layout (first half / second half of the head dim), base from the config, and
//! `y1 = x1·cos + x2·sin`, `y2 = −x1·sin + x2·cos` with `θ_i = pos · base^(−2i/d_h)`, positions from 0.
//! Tables are computed in f32 (T6 caches them in bf16; we keep full precision).

use burn::tensor::{Device, Tensor, TensorData};

/// `cos θ` and `sin θ`, `θ_i = pos · base^(−2i/d_h)` (angles in f64), for positions
/// `start..start + len`, each `[len, d_h/2]` row-major.
pub fn angles(start: usize, len: usize, head_dim: usize, base: f64) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in start..start + len {
        for i in 0..half {
            let inv_freq = base.powf(-((2 * i) as f64) / head_dim as f64);
            let angle = pos as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotate one row of `d_h` features in place at one position (`cos`, `sin`: that position's
/// [`angles`]) — [`RopeTables::apply`] for host memory.
pub fn rotate(row: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = row.len() / 2;
    for i in 0..half {
        let (x1, x2) = (row[i], row[half + i]);
        row[i] = x1 * cos[i] + x2 * sin[i];
        row[half + i] = x2 * cos[i] - x1 * sin[i];
    }
}

/// Cos and sin tables shaped `[B or 1, T, 1, d_h/2]` for broadcasting over `[B, T, R, d_h/2]`.
#[derive(Clone, Debug)]
pub struct RopeTables {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl RopeTables {
    /// Tables for positions `start..start + len`, shared by every sequence of a batch.
    pub fn new(start: usize, len: usize, head_dim: usize, base: f64, device: &Device) -> Self {
        let half = head_dim / 2;
        let (cos, sin) = angles(start, len, head_dim, base);
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [1, len, 1, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [1, len, 1, half]), device),
        }
    }

    /// Rotate `x`.
    ///
    /// # Shapes
    /// - `x`: `[B, T, R, d_h]` (R = rank components or heads)
    /// - returns the same shape.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, t, r, dh] = x.dims();
        let half = dh / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        let y1 = x1.clone() * self.cos.clone() + x2.clone() * self.sin.clone();
        let y2 = x2 * self.cos.clone() - x1 * self.sin.clone();
        let y = Tensor::cat(vec![y1, y2], 3);
        debug_assert_eq!(y.dims(), [b, t, r, dh]);
        y
    }
}
