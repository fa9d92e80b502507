//! Gradient helpers shared by every trainer of the workspace (nested-rank pretraining and PPO):
//! global L2-norm clipping over a whole module, as `torch.nn.utils.clip_grad_norm_` does.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Squared gradient norms and scaling for global clipping.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct ScaleGrads<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for ScaleGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g * self.factor);
        }
    }
}

/// Scale gradients so their global L2 norm is at most `max_norm` (0 = no clipping); returns the
/// norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut sq = GradSquares { grads, total: None };
    model.visit(&mut sq);
    let norm = sq.total.map_or(0.0, |t| (t.into_scalar::<f32>() as f64).sqrt());
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut ScaleGrads { grads, factor: (max_norm / (norm + 1e-6)) as f32 });
    }
    norm
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, Tensor};

    use super::*;

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    fn grads_of(model: &Two, dev: &Device, scale: f32) -> GradientsParams {
        let x = Tensor::<2>::ones([1, 2], dev);
        let y = model.b.forward(model.a.forward(x)).sum() * scale;
        GradientsParams::from_grads(y.backward(), model)
    }

    /// The norm is the L2 norm over every parameter of every submodule; clipping scales all
    /// gradients by `max / norm` and leaves them alone below the bound.
    #[test]
    fn clips_the_global_norm_over_every_parameter() {
        let dev = crate::device::from_env().autodiff();
        let model = Two { a: LinearConfig::new(2, 3).init(&dev), b: LinearConfig::new(3, 1).init(&dev) };
        let mut grads = grads_of(&model, &dev, 1.0);
        // Reference: the square root of the sum of squared gradient entries, computed by hand.
        let sq = |g: Option<Tensor<2>>| g.map_or(0.0, |g| g.square().sum().into_scalar::<f32>() as f64);
        let sq1 = |g: Option<Tensor<1>>| g.map_or(0.0, |g| g.square().sum().into_scalar::<f32>() as f64);
        let reference = (sq(grads.get::<2>(model.a.weight.id))
            + sq1(model.a.bias.as_ref().and_then(|b| grads.get::<1>(b.id)))
            + sq(grads.get::<2>(model.b.weight.id))
            + sq1(model.b.bias.as_ref().and_then(|b| grads.get::<1>(b.id))))
        .sqrt();
        let norm = clip_global_norm(&model, &mut grads, 0.0);
        assert!((norm - reference).abs() < 1e-5 * reference.max(1.0), "{norm} vs {reference}");
        let unclipped = clip_global_norm(&model, &mut grads, 10.0 * norm);
        assert!((unclipped - norm).abs() < 1e-6 * norm.max(1.0), "no clipping below the bound");
        let mut grads = grads_of(&model, &dev, 1.0);
        clip_global_norm(&model, &mut grads, norm / 4.0);
        let after = clip_global_norm(&model, &mut grads, 0.0);
        assert!((after - norm / 4.0).abs() < 1e-4 * norm, "clipped to the bound: {after} vs {}", norm / 4.0);
    }
}
