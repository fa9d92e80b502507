//! burn modules across ranks: one flat f32 all-reduce of a gradient set, rank 0's parameters on
//! every rank, and a digest to check that ranks hold the same parameters.

use std::hash::{DefaultHasher, Hasher};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

use crate::Comm;

fn to_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("a float tensor converts to f32")
}

/// Every float parameter's gradient, flattened in visiting order (zeros where a rank has none),
/// then one presence flag per parameter.
struct Flatten<'a> {
    grads: &'a GradientsParams,
    flat: Vec<f32>,
    present: Vec<f32>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match self.grads.get::<D>(param.id) {
            Some(g) => {
                self.flat.extend(to_f32(g));
                self.present.push(1.0);
            }
            None => {
                let n: usize = param.val().dims().iter().product();
                self.flat.extend(std::iter::repeat_n(0.0, n));
                self.present.push(0.0);
            }
        }
    }
}

/// Puts the summed gradients back, for every parameter some rank had a gradient for.
struct Unflatten<'a> {
    grads: &'a mut GradientsParams,
    flat: &'a [f32],
    present: &'a [f32],
    offset: usize,
    index: usize,
}

impl ModuleVisitor for Unflatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let dims = value.dims();
        let n: usize = dims.iter().product();
        let slice = &self.flat[self.offset..self.offset + n];
        if self.present[self.index] > 0.0 {
            let device = match self.grads.remove::<D>(param.id) {
                Some(g) => g.device(),
                None => value.inner().device(),
            };
            let summed = Tensor::<D>::from_data(TensorData::new(slice.to_vec(), dims), &device);
            self.grads.register(param.id, summed);
        }
        self.offset += n;
        self.index += 1;
    }
}

/// Sum a gradient set over all ranks in one flat f32 all-reduce (visit, flatten, sum,
/// re-register). Every rank must pass the same module structure. A parameter that has a gradient
/// on some rank gets the sum on every rank (zeros standing in where a rank had none); one without
/// any stays without, so the optimiser treats it as one process would. Scale the losses so the
/// sum is the gradient you want (e.g. divide each rank's summed loss by the global count).
/// Nothing happens in a single process.
pub fn all_reduce_grads<M: Module>(comm: &Comm, module: &M, grads: &mut GradientsParams) {
    if !comm.is_distributed() {
        return;
    }
    let mut flat = Flatten { grads, flat: Vec::new(), present: Vec::new() };
    module.visit(&mut flat);
    let (mut values, mut present) = (flat.flat, flat.present);
    let n = values.len();
    values.append(&mut present);
    comm.sum_f32(&mut values);
    let (values, present) = values.split_at(n);
    module.visit(&mut Unflatten { grads, flat: values, present, offset: 0, index: 0 });
}

struct CollectParams(Vec<f32>);

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.extend(to_f32(param.val()));
    }
}

struct LoadParams<'a> {
    flat: &'a [f32],
    offset: usize,
}

impl ModuleMapper for LoadParams<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (flat, offset) = (self.flat, self.offset);
        let mut n = 0;
        let param = param.map(|t| {
            let dims = t.dims();
            n = dims.iter().product();
            // A fresh tensor does not track gradients: keep the parameter's setting.
            Tensor::<D>::from_data(TensorData::new(flat[offset..offset + n].to_vec(), dims), &t.device())
                .set_require_grad(t.is_require_grad())
        });
        self.offset += n;
        param
    }
}

/// Every float parameter of `module`, flattened in visiting order.
pub fn flat_params<M: Module>(module: &M) -> Vec<f32> {
    let mut c = CollectParams(Vec::new());
    module.visit(&mut c);
    c.0
}

/// Rank 0's parameters on every rank (parameter ids and gradient tracking kept).
pub fn broadcast_module<M: Module>(comm: &Comm, module: M) -> M {
    if !comm.is_distributed() {
        return module;
    }
    let mut flat = flat_params(&module);
    comm.broadcast_f32(&mut flat);
    module.map(&mut LoadParams { flat: &flat, offset: 0 })
}

/// A 64-bit digest of every float parameter's bits, in visiting order: equal digests mean
/// (with overwhelming probability) bit-identical parameters.
pub fn module_digest<M: Module>(module: &M) -> u64 {
    let mut h = DefaultHasher::new();
    for x in flat_params(module) {
        h.write_u32(x.to_bits());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    fn dev() -> burn::tensor::Device {
        burn::tensor::Device::flex()
    }

    /// Flattening visits every float parameter (weights and biases) once, and loading the flat
    /// vector back gives the same bits, still trainable; the digest sees the change.
    #[test]
    fn parameters_round_trip_through_the_flat_vector() {
        let d = dev().autodiff();
        let m = Two { a: LinearConfig::new(2, 3).init(&d), b: LinearConfig::new(3, 1).init(&d) };
        let flat = flat_params(&m);
        assert_eq!(flat.len(), 2 * 3 + 3 + 3 + 1);
        let digest = module_digest(&m);
        let shifted: Vec<f32> = flat.iter().map(|x| x + 1.0).collect();
        let m2 = m.clone().map(&mut LoadParams { flat: &shifted, offset: 0 });
        assert_eq!(flat_params(&m2), shifted);
        assert_ne!(module_digest(&m2), digest);
        let back = m2.map(&mut LoadParams { flat: &flat, offset: 0 });
        assert_eq!(module_digest(&back), digest);
        let y = back.b.forward(back.a.forward(Tensor::<2>::ones([1, 2], &d))).sum();
        let grads = GradientsParams::from_grads(y.backward(), &back);
        assert!(grads.get::<2>(back.a.weight.id).is_some(), "loaded parameters still get gradients");
    }
}
