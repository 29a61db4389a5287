//! One ONNX graph of a multi-graph pipeline (SDXL's encoders, UNet and VAE; E4S's parser and
//! generator): loaded once, checked against the signature its manifest declares, and run with
//! `f32`/`i64` arrays that are converted to whatever element types the graph declares (so fp16
//! exports run unchanged, and token ids may be int32 or int64).

use super::ForgeError;
use super::runtime::Device;
use ndarray::ArrayD;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A tensor the pipeline needs: its name, the element types it accepts (`float32|float16`) and
/// its shape (-1 = any size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
}

/// One graph of a pipeline manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    pub file: String,
    /// Every input the graph must have (and no others).
    pub inputs: Vec<Port>,
    /// The outputs the pipeline reads (the graph may have more).
    pub outputs: Vec<Port>,
}

fn type_name(t: TensorElementType) -> &'static str {
    match t {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float16 => "float16",
        TensorElementType::Float64 => "float64",
        TensorElementType::Int64 => "int64",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int8 => "int8",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Bool => "bool",
        _ => "other",
    }
}

/// Input data before conversion to the graph's element type.
pub enum Data {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// A loaded, checked graph.
pub struct Graph {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    session: Session,
    /// (name, element type) of each input, as the graph declares them
    input_types: Vec<(String, TensorElementType)>,
    pub file_bytes: u64,
}

fn signature(outlets: &[ort::value::Outlet]) -> Vec<(String, String, Vec<i64>)> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => (o.name().to_string(), type_name(*ty).to_string(), shape.iter().copied().collect()),
            other => (o.name().to_string(), format!("{other:?}"), vec![]),
        })
        .collect()
}

fn describe(s: &[(String, String, Vec<i64>)]) -> String {
    s.iter().map(|(n, t, sh)| format!("{n}: {t} {sh:?}")).collect::<Vec<_>>().join(", ")
}

fn describe_ports(p: &[Port]) -> String {
    p.iter().map(|p| format!("{}: {} {:?}", p.name, p.dtype, p.shape)).collect::<Vec<_>>().join(", ")
}

/// A port's name may list alternatives (`latent_parameters|latent_sample`).
fn port_matches(p: &Port, (n, t, s): &(String, String, Vec<i64>)) -> bool {
    p.name.split('|').any(|alt| alt == n)
        && p.dtype.split('|').any(|d| d == t)
        && s.len() == p.shape.len()
        && s.iter().zip(&p.shape).all(|(a, w)| *a == -1 || *w == -1 || a == w)
}

impl Graph {
    /// Loads `dir/spec.file` and checks it: every declared input present with an accepted type
    /// and shape and no undeclared input, every declared output present. A mismatch lists the
    /// expected and the found signatures.
    pub fn load(name: &str, dir: &Path, spec: &GraphSpec, device: Device, threads: usize) -> Result<Self, ForgeError> {
        let path = dir.join(&spec.file);
        if !path.is_file() {
            return Err(ForgeError::Model(format!(
                "{name}: {} is missing: export the model into this layout (see generators/EXPORT.md)",
                path.display()
            )));
        }
        let session = super::runtime::session(&path, device, threads)?;
        let (ins, outs) = (signature(session.inputs()), signature(session.outputs()));
        let inputs_ok = ins.len() == spec.inputs.len() && spec.inputs.iter().all(|p| ins.iter().any(|a| port_matches(p, a)));
        let outputs_ok = spec.outputs.iter().all(|p| outs.iter().any(|a| port_matches(p, a)));
        if !inputs_ok || !outputs_ok {
            return Err(ForgeError::Model(format!(
                "{name}: {} does not have the expected signature.\n  expected inputs:  {}\n  found inputs:     {}\n  expected outputs: {} (at least)\n  found outputs:    {}",
                path.display(),
                describe_ports(&spec.inputs),
                describe(&ins),
                describe_ports(&spec.outputs),
                describe(&outs)
            )));
        }
        let input_types = session
            .inputs()
            .iter()
            .filter_map(|o| match o.dtype() {
                ValueType::Tensor { ty, .. } => Some((o.name().to_string(), *ty)),
                _ => None,
            })
            .collect();
        let bytes = std::fs::read(&path).map_err(|e| ForgeError::Model(format!("cannot read {}: {e}", path.display())))?;
        Ok(Graph {
            name: name.to_string(),
            sha256: Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
            file_bytes: bytes.len() as u64,
            path,
            session,
            input_types,
        })
    }

    /// The graph's own name for an output whose spec lists alternatives.
    pub fn output_name(&self, spec: &str) -> String {
        let names: Vec<String> = self.session.outputs().iter().map(|o| o.name().to_string()).collect();
        spec.split('|').find(|alt| names.iter().any(|n| n == alt)).unwrap_or(spec).to_string()
    }

    /// The element type the graph declares for an input.
    pub fn input_type(&self, name: &str) -> Option<TensorElementType> {
        self.input_types.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
    }

    /// Runs the graph; returns the named outputs as `f32` arrays.
    pub fn run(&mut self, inputs: Vec<(&str, Data)>, outputs: &[&str]) -> Result<Vec<ArrayD<f32>>, ForgeError> {
        let e = |e: ort::Error| ForgeError::Model(e.to_string());
        let mut values: Vec<(std::borrow::Cow<'_, str>, ort::session::SessionInputValue<'_>)> = Vec::new();
        for (name, data) in inputs {
            let ty = self.input_type(name).ok_or_else(|| ForgeError::Model(format!("{}: no input named {name}", self.name)))?;
            let v: ort::value::DynValue = match (ty, data) {
                (TensorElementType::Float32, Data::F32(a)) => Tensor::from_array(a).map_err(e)?.into_dyn(),
                (TensorElementType::Float16, Data::F32(a)) => Tensor::from_array(a.mapv(half::f16::from_f32)).map_err(e)?.into_dyn(),
                (TensorElementType::Int64, Data::F32(a)) => Tensor::from_array(a.mapv(|x| x.round() as i64)).map_err(e)?.into_dyn(),
                (TensorElementType::Int64, Data::I64(a)) => Tensor::from_array(a).map_err(e)?.into_dyn(),
                (TensorElementType::Int32, Data::I64(a)) => Tensor::from_array(a.mapv(|x| x as i32)).map_err(e)?.into_dyn(),
                (TensorElementType::Float32, Data::I64(a)) => Tensor::from_array(a.mapv(|x| x as f32)).map_err(e)?.into_dyn(),
                (t, _) => return Err(ForgeError::Model(format!("{}: input {name} has unsupported type {}", self.name, type_name(t)))),
            };
            values.push((name.to_string().into(), v.into()));
        }
        let out = self.session.run(values).map_err(e)?;
        let mut res = Vec::with_capacity(outputs.len());
        for name in outputs {
            let v = &out[*name];
            let arr = if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
                ArrayD::from_shape_vec(shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), data.to_vec())
            } else {
                let (shape, data) = v.try_extract_tensor::<half::f16>().map_err(e)?;
                ArrayD::from_shape_vec(shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), data.iter().map(|x| x.to_f32()).collect())
            }
            .map_err(|err| ForgeError::Model(format!("{}: output {name}: {err}", self.name)))?;
            res.push(arr);
        }
        Ok(res)
    }

    pub fn provenance(&self) -> serde_json::Value {
        serde_json::json!({ "file": self.path.display().to_string(), "sha256": self.sha256, "bytes": self.file_bytes })
    }
}

/// Resident memory of this process in bytes (`VmRSS`), for reporting what a session costs.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0)
        * 1024
}
