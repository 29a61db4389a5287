//! Data-parallel training across the devices of one machine, shared by both trainers.
//!
//! One step: the global batch is split into contiguous shards, one per device; each device runs
//! a replica of the model (`Module::fork` onto it) on its shard, on a thread of its own, and
//! returns its gradients; the gradients are summed onto the first device; the optimizer steps
//! the one model there, and the next step forks the updated model again. Each shard's loss is
//! its *sum* divided by the global batch's count (tokens, pixels, samples), so the summed
//! gradient is exactly the single-device gradient of the global batch, up to the order of f32
//! additions. This is DDP's arithmetic (an all-reduce of summed gradients, identical updates)
//! with the reduction done by gathering onto the first device.
//!
//! Why not burn's collective all-reduce: in burn 0.22.1 `burn::tensor::distributed::all_reduce`
//! and the gradient-sync server behind `Tensor::set_distributed` (what `burn-train`'s
//! `DistributedDataParallel` strategy uses) are implemented only for the CubeCL backends: the
//! `flex` (CPU) backend's `DistributedOps` are the unimplemented defaults, so the CI path (two
//! CPU replicas) could not run them, and the CPU and GPU code paths would differ. The gather
//! here runs on every backend through `Tensor::to_device`.
//!
//! Devices are written `cpu` (one replica), `cpu:N` (replica N on the CPU: several give
//! data-parallel replicas on threads, the CI check of this path) and `cuda:N`.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

/// Parses device strings (`cpu`, `cpu:N`, `cuda:N`); several give data-parallel replicas.
pub fn parse_devices(specs: &[String]) -> Result<Vec<Device>, String> {
    if specs.is_empty() {
        return Err("devices is empty: name at least one (cpu, cpu:0, cuda:0, ...)".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let s = s.trim();
        if !seen.insert(s.to_string()) {
            return Err(format!("device `{s}` is listed twice: list each device once"));
        }
        let base = match s.split_once(':') {
            Some(("cpu", n)) => {
                n.parse::<usize>().map_err(|_| format!("`{s}`: write CPU replicas as cpu:N, for example cpu:0, cpu:1"))?;
                "cpu"
            }
            _ => s,
        };
        out.push(crate::fpn::parse_device(base).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Splits `n` items into `k` contiguous shards as evenly as possible (the first `n % k` shards
/// get one more); a shard may be empty when `n < k`.
pub fn shard_ranges(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let k = k.max(1);
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// Adds `other`'s gradient of every parameter of `model` into `into` (moved to `device`).
struct AddGrads<'a> {
    into: &'a mut GradientsParams,
    other: &'a mut GradientsParams,
    device: &'a Device,
}
impl ModuleVisitor for AddGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.other.remove::<D>(param.id) {
            let g = g.to_device(self.device);
            let sum = match self.into.remove::<D>(param.id) {
                Some(a) => a + g,
                None => g,
            };
            self.into.register::<D>(param.id, sum);
        }
    }
}

/// Runs `work(replica, shard_index)` for every device (a thread each when there are several)
/// and returns the summed gradients on the first device with every shard's extra output.
pub fn data_parallel<M, S, O, F>(model: &M, devices: &[Device], shards: Vec<S>, work: F) -> Result<(GradientsParams, Vec<O>), String>
where
    M: Module + Send + Sync,
    S: Send,
    O: Send,
    F: Fn(&M, S, usize) -> Result<(GradientsParams, O), String> + Sync,
{
    if devices.len() != shards.len() {
        return Err(format!("{} shards for {} devices", shards.len(), devices.len()));
    }
    if devices.len() == 1 {
        let s = shards.into_iter().next().ok_or("no shard")?;
        let (g, o) = work(model, s, 0)?;
        return Ok((g, vec![o]));
    }
    let main = devices[0].clone().autodiff();
    // shard 0 runs on this thread with the model itself (so its state updates, such as
    // BatchNorm running statistics, are the ones kept, as DDP keeps rank 0's buffers); the others
    // on threads of their own with replicas forked onto their devices
    let mut shards = shards.into_iter();
    let first = shards.next().ok_or("no shard")?;
    let results: Vec<Result<(GradientsParams, O), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .zip(&devices[1..])
            .enumerate()
            .map(|(i, (shard, device))| {
                let replica = model.clone().fork(&device.clone().autodiff());
                let work = &work;
                scope.spawn(move || work(&replica, shard, i + 1))
            })
            .collect();
        let mine = work(model, first, 0);
        std::iter::once(mine)
            .chain(handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a replica's thread panicked".into()))))
            .collect()
    });
    let mut total: Option<GradientsParams> = None;
    let mut outs = Vec::with_capacity(results.len());
    for r in results {
        let (mut g, o) = r?;
        outs.push(o);
        match total.as_mut() {
            None => {
                // bring the first shard's gradients onto the main device as well
                let mut into = GradientsParams::new();
                model.visit(&mut AddGrads { into: &mut into, other: &mut g, device: &main });
                total = Some(into);
            }
            Some(t) => model.visit(&mut AddGrads { into: t, other: &mut g, device: &main }),
        }
    }
    Ok((total.unwrap_or_default(), outs))
}

/// Sums of squares of every parameter's gradient.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sq: f64,
}
impl ModuleVisitor for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sq += g.powi_scalar(2).sum().into_scalar::<f64>();
        }
    }
}
struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}
impl ModuleVisitor for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Clips the global L2 norm of the gradients to `max` (PyTorch's `clip_grad_norm_`); returns the
/// norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max: f64) -> f64 {
    let mut n = GradNorm { grads, sq: 0.0 };
    model.visit(&mut n);
    let norm = n.sq.sqrt();
    if norm > max {
        model.visit(&mut GradScale { grads, factor: max / (norm + 1e-6) });
    }
    norm
}

/// Splits gradients into (matrices and other >= 2-D tensors, 1-D tensors: biases and norms), the
/// two AdamW groups (weight decay on the first only).
struct SplitDecay<'a> {
    grads: &'a mut GradientsParams,
    decay: GradientsParams,
    no_decay: GradientsParams,
}
impl ModuleVisitor for SplitDecay<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            if D >= 2 { self.decay.register::<D>(param.id, g) } else { self.no_decay.register::<D>(param.id, g) }
        }
    }
}

/// `(decayed, not decayed)`: LAVIS' groups (weight decay on parameters with 2 or more dimensions,
/// none on biases and norms).
pub fn split_decay<M: Module>(model: &M, mut grads: GradientsParams) -> (GradientsParams, GradientsParams) {
    let mut v = SplitDecay { grads: &mut grads, decay: GradientsParams::new(), no_decay: GradientsParams::new() };
    model.visit(&mut v);
    (v.decay, v.no_decay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(5, 2), vec![0..3, 3..5]);
        assert_eq!(shard_ranges(4, 4), vec![0..1, 1..2, 2..3, 3..4]);
        assert_eq!(shard_ranges(1, 2), vec![0..1, 1..1]);
    }

    #[test]
    fn device_lists_are_checked() {
        assert_eq!(parse_devices(&["cpu:0".into(), "cpu:1".into()]).map(|d| d.len()), Ok(2));
        assert!(parse_devices(&["cpu:0".into(), "cpu:0".into()]).unwrap_err().contains("twice"));
        assert!(parse_devices(&[]).unwrap_err().contains("at least one"));
        assert!(parse_devices(&["cpu:x".into()]).unwrap_err().contains("cpu:N"));
        assert!(parse_devices(&["tpu".into()]).unwrap_err().contains("unknown device"));
    }
}

/// `grad_clip` in the training TOMLs: a positive norm, or `0` for no clipping. A key left out
/// takes the preset's value, so "off" must be spelled: without this `None` would not survive
/// `run.toml`'s round trip (it would come back as the preset's clip and refuse the resume).
pub mod grad_clip_toml {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(v.unwrap_or(0.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let v = f64::deserialize(d)?;
        Ok(if v == 0.0 { None } else { Some(v) })
    }
}
