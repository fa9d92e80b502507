//! Element-wise tensor functions of the policy computed on the host where burn's CPU backend is
//! slow, with burn's bits: `tanh` ([`crate::tanh`]) and `exp` (the C library's `expf`,
//! [`ahr_tpa::expf`]), both vectorised, and `log_softmax` built from that `exp` exactly as burn
//! composes it.
//!
//! Under autodiff each is tracked as `y + (x − x̄)·s` with `y` (the value) and `s` (its slope)
//! constants and `x̄` detached: the value is `y` — `x − x̄` is exactly zero — and the gradient
//! `grad·s`, the product burn's own backward forms, without its second evaluation of the function
//! (burn 0.22's `tanh` and `exp` backward passes recompute it from their input). Other backends
//! (libtorch) keep burn's functions.

use burn::tensor::{Device, Tensor, TensorData};

/// `f` applied on the host to `x`'s values (in place), with `slope(y)` the derivative at output
/// `y`; `None` where the device is not burn's CPU backend (or the values are not `f32`): the
/// caller then uses burn's own function.
fn on_host<const D: usize>(x: &Tensor<D>, f: impl FnOnce(&mut [f32]), slope: impl Fn(f32) -> f32) -> Option<Tensor<D>> {
    let y = ahr_tpa::host::map_on_host(x, f)?;
    let (device, shape) = (x.device(), x.shape());
    if !x.is_tracked() {
        return Some(Tensor::from_data(TensorData::new(y, shape), &device));
    }
    let s: Vec<f32> = y.iter().map(|&v| slope(v)).collect();
    let y = Tensor::<D>::from_data(TensorData::new(y, shape.clone()), &device);
    let s = Tensor::<D>::from_data(TensorData::new(s, shape), &device);
    Some(y + (x.clone() - x.clone().detach()) * s)
}

/// `tanh`, burn's bits five times faster ([`crate::tanh::tanh_in_place`]); slope `1 − y²`, as
/// burn's backward forms it.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    on_host(&x, crate::tanh::tanh_in_place, |y| 1.0 - y * y).unwrap_or_else(|| burn::tensor::activation::tanh(x))
}

/// `exp(x)` as the C library computes it, vectorised ([`ahr_tpa::expf`]).
pub use ahr_tpa::expf::exp_in_place;

/// `exp`, burn's bits ([`exp_in_place`]); slope `y`, as burn's backward forms it.
pub fn exp<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    on_host(&x, exp_in_place, |y| y).unwrap_or_else(|| x.exp())
}

/// `log_softmax` along `dim` as burn composes it (`x − max`, the max detached; minus the log of
/// the sum of `exp` along `dim`), with [`exp`].
pub fn log_softmax<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    if x.device().inner() != Device::flex() {
        return burn::tensor::activation::log_softmax(x, dim);
    }
    let max = x.clone().detach().max_dim(dim);
    let shifted = x - max;
    let log_sum_exp = exp(shifted.clone()).sum_dim(dim).log();
    shifted - log_sum_exp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn differ(a: &[f32], b: &[f32]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count()
    }

    /// Each function gives burn's values and, under autodiff, burn's gradients, bit for bit.
    #[test]
    fn the_functions_match_burns_values_and_gradients() {
        let dev = Device::flex().autodiff();
        // Pre-activations in ±5.6, and logits with masked options (−10⁹) for the softmax.
        let vals: Vec<f32> = (0..64 * 48).map(|i| ((i * 7919 % 10007) as f32 / 1500.0 - 3.3) * 1.7).collect();
        let logits: Vec<f32> = vals.iter().enumerate().map(|(i, &v)| if i % 5 == 2 { -1.0e9 } else { v }).collect();
        let w: Vec<f32> = (0..64 * 48).map(|i| (i * 104729 % 8191) as f32 / 4096.0 - 1.0).collect();
        type F = fn(Tensor<2>) -> Tensor<2>;
        let cases: [(&str, &[f32], F, F); 3] = [
            ("tanh", &vals, tanh, burn::tensor::activation::tanh),
            ("exp", &logits, exp, |x| x.exp()),
            ("log_softmax", &logits, |x| log_softmax(x, 1), |x| burn::tensor::activation::log_softmax(x, 1)),
        ];
        for (name, input, ours, burns) in cases {
            let run = |f: F| {
                let x = Tensor::<2>::from_data(TensorData::new(input.to_vec(), [64, 48]), &dev).require_grad();
                let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [64, 48]), &dev);
                // Through an op first, so that the function sees a tracked non-leaf, as in the net.
                let y = f(x.clone() * 1.5);
                let grads = (y.clone() * wt).sum().backward();
                (values(y), values(x.grad(&grads).unwrap()))
            };
            let ((y1, g1), (y2, g2)) = (run(ours), run(burns));
            assert_eq!(differ(&y1, &y2), 0, "{name}: values");
            assert_eq!(differ(&g1, &g2), 0, "{name}: gradients");
            // Outside autodiff (rollouts, inference) too.
            let plain = Tensor::<2>::from_data(TensorData::new(input.to_vec(), [64, 48]), &Device::flex());
            assert_eq!(differ(&values(ours(plain.clone())), &values(burns(plain))), 0, "{name}: plain");
        }
    }

    /// `exp_in_place` is the C library's `expf` on every float from −200 to 90 and at ±∞ (every
    /// float: `cargo run --release -p ahr-tpa --example expf_exhaustive`).
    #[test]
    fn exp_in_place_is_the_c_librarys_expf() {
        let mut xs: Vec<f32> = (0..=290_000).map(|i| -200.0 + i as f32 * 1e-3).collect();
        xs.extend([f32::NEG_INFINITY, f32::INFINITY, -1.0e9, -103.97, -103.973, -104.0, -104.0001]);
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        exp_in_place(&mut xs);
        assert_eq!(differ(&xs, &want), 0);
    }
}
