//! ONNX tensors on the host: [`Tensor`] to and from `TensorProto` (the message of an ONNX
//! initializer, a `Constant` node's value, and the `.pb` files of ONNX's test data sets).

use std::path::Path;

use prost::Message;

use super::proto::{TensorProto, tensor_proto::DataLocation, tensor_proto::DataType};
use crate::error::{Error, Result};

/// The elements of a [`Tensor`], row-major. ONNX's recurrent operators take `float` data and
/// `int32` sequence lengths; `int64` is read too (shape constants, lengths some exporters
/// write as `int64`).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// ONNX `FLOAT`.
    F32(Vec<f32>),
    /// ONNX `INT32`.
    I32(Vec<i32>),
    /// ONNX `INT64`.
    I64(Vec<i64>),
}

/// A named, shaped ONNX tensor on the host: what an initializer, a `Constant` node or a
/// `TensorProto` `.pb` file holds. `data` has `dims.iter().product()` elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The tensor's name (may be empty).
    pub name: String,
    /// Its shape; `[]` is a scalar.
    pub dims: Vec<usize>,
    /// Its elements.
    pub data: TensorData,
}

impl Tensor {
    /// A `float` tensor. Errors: [`Error::ShapeMismatch`] naming `name` when `data` does not
    /// hold `dims.iter().product()` elements.
    pub fn from_f32(name: &str, dims: &[usize], data: Vec<f32>) -> Result<Tensor> {
        check_count(name, dims, data.len())?;
        Ok(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            data: TensorData::F32(data),
        })
    }

    /// An `int32` tensor, as `sequence_lens` is. Errors as [`Tensor::from_f32`].
    pub fn from_i32(name: &str, dims: &[usize], data: Vec<i32>) -> Result<Tensor> {
        check_count(name, dims, data.len())?;
        Ok(Tensor {
            name: name.into(),
            dims: dims.to_vec(),
            data: TensorData::I32(data),
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// The elements of a `float` tensor. Errors: [`Error::WrongDtype`] for another type.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Ok(v),
            other => Err(self.wrong_dtype("FLOAT", other)),
        }
    }

    /// The elements of an integer tensor (`int32` or `int64`) as `i64`. Errors:
    /// [`Error::WrongDtype`] for a `float` tensor.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        match &self.data {
            TensorData::I32(v) => Ok(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::I64(v) => Ok(v.clone()),
            other => Err(self.wrong_dtype("INT32 or INT64", other)),
        }
    }

    /// Sequence lengths (`int32` or `int64`, `[B]`) as `usize`. Errors:
    /// [`Error::WrongDtype`] for a `float` tensor; [`Error::ShapeMismatch`] naming the tensor
    /// for a negative entry (a zero is refused later, with the run's `T`).
    pub fn to_lengths(&self) -> Result<Vec<usize>> {
        self.to_i64()?
            .into_iter()
            .enumerate()
            .map(|(b, v)| {
                usize::try_from(v).map_err(|_| Error::ShapeMismatch {
                    name: format!("{}[{b}] (a sequence length, at least 1)", self.name),
                    expected: vec![1],
                    got: vec![],
                })
            })
            .collect()
    }

    /// Decode a serialized `TensorProto` (an ONNX test data set's `input_0.pb`, say).
    ///
    /// Errors: [`Error::OnnxDecode`] for bytes that are no `TensorProto`; as
    /// the conversion from `TensorProto` otherwise (external data, a negative dimension, a
    /// `raw_data` of the wrong size: [`Error::OnnxModel`]; another element type:
    /// [`Error::WrongDtype`]).
    pub fn from_pb_bytes(bytes: &[u8]) -> Result<Tensor> {
        let proto = TensorProto::decode(bytes).map_err(|e| Error::OnnxDecode {
            what: "tensor bytes".into(),
            why: e.to_string(),
        })?;
        from_proto(&proto)
    }

    /// Read a `.pb` file holding one serialized `TensorProto`. Errors: [`Error::Io`], and as
    /// [`Tensor::from_pb_bytes`].
    pub fn read_pb(path: impl AsRef<Path>) -> Result<Tensor> {
        Tensor::from_pb_bytes(&std::fs::read(path)?)
    }

    /// Serialize as a `TensorProto` (the inverse of [`Tensor::from_pb_bytes`]).
    pub fn to_pb_bytes(&self) -> Vec<u8> {
        to_proto(self).encode_to_vec()
    }

    fn wrong_dtype(&self, expected: &'static str, got: &TensorData) -> Error {
        Error::WrongDtype {
            name: self.name.clone(),
            expected,
            got: match got {
                TensorData::F32(_) => "FLOAT",
                TensorData::I32(_) => "INT32",
                TensorData::I64(_) => "INT64",
            }
            .into(),
        }
    }
}

fn check_count(name: &str, dims: &[usize], len: usize) -> Result<()> {
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::ShapeMismatch {
            name: name.into(),
            expected: dims.to_vec(),
            got: vec![len],
        })?;
    if want != len {
        return Err(Error::ShapeMismatch {
            name: name.into(),
            expected: dims.to_vec(),
            got: vec![len],
        });
    }
    Ok(())
}

/// A `TensorProto` as a [`Tensor`]: `float`, `int32` and `int64` data, from the typed fields
/// or from little-endian `raw_data`.
///
/// Errors: [`Error::OnnxModel`] naming the tensor for external data (weights in a separate
/// file), a negative dimension or a `raw_data` of the wrong byte count;
/// [`Error::WrongDtype`] for any other element type (`float16`, `double`, ...);
/// [`Error::ShapeMismatch`] when the element count does not match the dims.
pub(crate) fn from_proto(p: &TensorProto) -> Result<Tensor> {
    let name = p.name.clone().unwrap_or_default();
    let place = || format!("tensor `{name}`");
    if p.data_location == Some(DataLocation::External as i32) || !p.external_data.is_empty() {
        return Err(Error::OnnxModel {
            place: place(),
            why: "its data is stored in an external file, which this loader does not read \
                  (save the model with its tensors inside: onnx.save(model, path, \
                  save_as_external_data=False))"
                .into(),
        });
    }
    let dims = p
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| Error::OnnxModel {
            place: place(),
            why: format!("negative dimension in {:?}", p.dims),
        })?;
    let raw = p.raw_data.as_deref();
    let from_raw = |width: usize| -> Result<Vec<[u8; 8]>> {
        let raw = raw.unwrap_or_default();
        if !raw.len().is_multiple_of(width) {
            return Err(Error::OnnxModel {
                place: place(),
                why: format!(
                    "raw_data of {} bytes is not a whole number of {width}-byte elements",
                    raw.len()
                ),
            });
        }
        Ok(raw
            .chunks_exact(width)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(c);
                b
            })
            .collect())
    };
    let data_type = p.data_type.unwrap_or(0);
    let data = if data_type == DataType::Float as i32 {
        TensorData::F32(match raw {
            Some(_) => from_raw(4)?
                .into_iter()
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            None => p.float_data.clone(),
        })
    } else if data_type == DataType::Int32 as i32 {
        TensorData::I32(match raw {
            Some(_) => from_raw(4)?
                .into_iter()
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            None => p.int32_data.clone(),
        })
    } else if data_type == DataType::Int64 as i32 {
        TensorData::I64(match raw {
            Some(_) => from_raw(8)?.into_iter().map(i64::from_le_bytes).collect(),
            None => p.int64_data.clone(),
        })
    } else {
        return Err(Error::WrongDtype {
            name,
            expected: "FLOAT, INT32 or INT64",
            got: DataType::try_from(data_type)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_else(|_| format!("data_type {data_type}")),
        });
    };
    let t = Tensor { name, dims, data };
    check_count(&t.name, &t.dims, t.numel())?;
    Ok(t)
}

/// A [`Tensor`] as a `TensorProto`, data in `raw_data` (little-endian), as onnx's own
/// `numpy_helper.from_array` writes it.
pub(crate) fn to_proto(t: &Tensor) -> TensorProto {
    let (data_type, raw): (DataType, Vec<u8>) = match &t.data {
        TensorData::F32(v) => (
            DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::I32(v) => (
            DataType::Int32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::I64(v) => (
            DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    TensorProto {
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        name: Some(t.name.clone()),
        raw_data: Some(raw),
        ..Default::default()
    }
}
