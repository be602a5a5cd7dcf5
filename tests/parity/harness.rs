//! Loading parity cases and comparing outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One case folder.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub kind: String,
    pub fixture: serde_json::Value,
    /// Inputs and reference outputs (f32 or integer, as saved).
    pub io: HashMap<String, Tensor>,
    /// Names listed in fixture.json "inputs".
    pub inputs: Vec<String>,
    /// The dtype this run computes in (f32, or bf16 / f16 for the low-precision runs).
    pub dtype: DType,
    /// The device this run computes on (`UNIRES_DEVICE`, see `common::device`).
    pub device: Device,
}

impl Case {
    /// The case in folder `dir`, computed on `device` in f32.
    pub fn load(dir: &Path, device: &Device) -> Res<Self> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("fixture.json"))?)?;
        let kind = fixture["kind"]
            .as_str()
            .ok_or("fixture.json has no \"kind\"")?
            .to_string();
        let io = candle_core::safetensors::load(dir.join("io.safetensors"), &Device::Cpu)?;
        let inputs = fixture["inputs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            kind,
            fixture,
            io,
            inputs,
            dtype: DType::F32,
            device: device.clone(),
        })
    }

    /// An input or output tensor by its reference name.
    pub fn get(&self, name: &str) -> Res<&Tensor> {
        self.io
            .get(name)
            .ok_or_else(|| format!("io.safetensors has no tensor {name:?}").into())
    }

    /// An input on the run's device, converted to the run's dtype (float inputs only).
    /// [`Case::get`] gives the tensor as saved, on the CPU.
    pub fn input(&self, name: &str) -> Res<Tensor> {
        let t = self.get(name)?;
        let t = if t.dtype().is_float() {
            t.to_dtype(self.dtype)?
        } else {
            t.clone()
        };
        Ok(t.to_device(&self.device)?)
    }

    pub fn f64(&self, key: &str) -> Option<f64> {
        self.fixture.get(key).and_then(|v| v.as_f64())
    }

    pub fn i64(&self, key: &str) -> Option<i64> {
        self.fixture.get(key).and_then(|v| v.as_i64())
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.fixture.get(key).and_then(|v| v.as_bool())
    }

    /// The reference config.json text.
    pub fn config_json(&self) -> Res<String> {
        Ok(std::fs::read_to_string(self.dir.join("config.json"))?)
    }

    /// A VarBuilder over weights.safetensors in the run's dtype.
    pub fn weights(&self) -> Res<candle_nn::VarBuilder<'static>> {
        let path = self.dir.join("weights.safetensors");
        // SAFETY: the fixture file is not modified while the test runs.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&[path], self.dtype, &self.device)?
        };
        Ok(vb)
    }
}

/// Outputs named `<prefix>.0`, `<prefix>.1`, … (HF's `hidden_states` tuple).
pub fn numbered(prefix: &str, tensors: Vec<Tensor>) -> Vec<(String, Tensor)> {
    tensors
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("{prefix}.{i}"), t))
        .collect()
}

/// The result of one run (f32, bf16 or f16) of one case: a summary line, then one line per
/// output where there is something to say.
pub struct Outcome {
    pub ok: bool,
    pub lines: Vec<String>,
    /// Low-precision (bf16 / f16) outputs whose values were compared, and those skipped
    /// (see [`bf16_checked`]).
    pub half_checked: usize,
    pub half_skipped: usize,
}

impl Outcome {
    pub fn error(name: &str, kind: &str, msg: &str) -> Self {
        Self {
            ok: false,
            lines: vec![format!("parity {name}: {kind} error: {msg} FAIL")],
            half_checked: 0,
            half_skipped: 0,
        }
    }
}

/// Compares `got` to `want` elementwise: returns (max_abs, max_rel, all within atol + rtol·|want|).
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Res<(f64, f64, bool)> {
    check_shape(got, want)?;
    let g = values(got)?;
    let w = values(want)?;
    let (mut max_abs, mut max_rel, mut ok) = (0f64, 0f64, true);
    for (a, b) in g.iter().zip(&w) {
        let d = (a - b).abs();
        if !d.is_finite() && a != b {
            ok = false;
            max_abs = f64::INFINITY;
            continue;
        }
        max_abs = max_abs.max(d);
        if b.abs() > 1e-6 {
            max_rel = max_rel.max(d / b.abs());
        }
        if d > atol + rtol * b.abs() {
            ok = false;
        }
    }
    Ok((max_abs, max_rel, ok))
}

fn check_shape(got: &Tensor, want: &Tensor) -> Res<()> {
    if got.dims() != want.dims() {
        return Err(format!("shape {:?} vs reference {:?}", got.dims(), want.dims()).into());
    }
    Ok(())
}

/// All elements as f64, read on the CPU (any device: Metal has no f64).
fn values(t: &Tensor) -> Res<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?)
}

/// The largest |value| of a reference tensor.
pub fn max_magnitude(want: &Tensor) -> Res<f64> {
    Ok(values(want)?.iter().fold(0f64, |m, v| m.max(v.abs())))
}

/// Whether a bf16 (or f16) comparison with absolute tolerance `atol` can tell a wrong output
/// from a right one: only when `atol` is below a quarter of the reference's largest magnitude.
/// At or above it, an output of zeros (or one off by a quarter of the signal everywhere)
/// would pass, so the values are not compared.
pub fn bf16_checked(atol: f64, max_ref: f64) -> bool {
    atol < max_ref / 4.0
}

/// `x` with four significant digits.
pub fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn run_in(case: &Case, run: super::Runner, rtol: f64, atol: f64) -> Outcome {
    let low = case.dtype != DType::F32;
    // "bf16" or "f16": the low-precision dtype of this run.
    let half = dtype_name(case.dtype);
    let label = if low {
        format!("{}[{half}]", case.name)
    } else {
        case.name.clone()
    };
    let verbose = std::env::var("PARITY_VERBOSE").is_ok();
    let mut detail = Vec::new();
    let (mut checked, mut skipped) = (0usize, 0usize);
    let result = (|| -> Res<(f64, f64, bool, usize)> {
        let outputs = run(case)?;
        let produced: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
        for name in case.io.keys() {
            if !case.inputs.contains(name) && !produced.contains(&name.as_str()) {
                return Err(format!("reference output {name:?} was not produced").into());
            }
        }
        let (mut ma, mut mr, mut ok) = (0f64, 0f64, true);
        for (name, t) in &outputs {
            let want = case.get(name)?;
            if low {
                // A case may state a bf16 tolerance per output (`bf16_atol_per_output`).
                let atol = case
                    .fixture
                    .get("bf16_atol_per_output")
                    .and_then(|m| m.get(name.as_str()))
                    .and_then(|v| v.as_f64())
                    .unwrap_or(atol);
                let max_ref = max_magnitude(want)?;
                let quarter = sig(max_ref / 4.0);
                if !bf16_checked(atol, max_ref) {
                    // The values say nothing at this tolerance; the shape and finiteness
                    // still must hold.
                    check_shape(t, want).map_err(|e| format!("{name}: {e}"))?;
                    let finite = values(t)?.iter().all(|v| v.is_finite());
                    detail.push(format!(
                        "    SKIP {half} {}/{name}: atol {} ≥ max|ref|/4 = {quarter} (values not compared; shape and finiteness checked: {})",
                        case.name,
                        sig(atol),
                        if finite { "ok" } else { "non-finite values FAIL" },
                    ));
                    ok &= finite;
                    skipped += 1;
                    continue;
                }
                checked += 1;
                let (a, r, o) = compare(t, want, rtol, atol).map_err(|e| format!("{name}: {e}"))?;
                detail.push(format!(
                    "    CHECK {half} {}/{name}: atol {} < max|ref|/4 = {quarter}: max_abs={a:.2e} max_rel={r:.2e} {}",
                    case.name,
                    sig(atol),
                    if o { "ok" } else { "FAIL" }
                ));
                ma = ma.max(a);
                mr = mr.max(r);
                ok &= o;
                continue;
            }
            let (a, r, o) = compare(t, want, rtol, atol).map_err(|e| format!("{name}: {e}"))?;
            if verbose || !o {
                detail.push(format!(
                    "    {name}: max_abs={a:.2e} max_rel={r:.2e} {}",
                    if o { "ok" } else { "FAIL" }
                ));
            }
            ma = ma.max(a);
            mr = mr.max(r);
            ok &= o;
        }
        Ok((ma, mr, ok, outputs.len()))
    })();
    let mut out = match result {
        Ok((ma, mr, ok, n)) => {
            let errors = if low && checked == 0 {
                "no values compared".to_string()
            } else {
                format!("max_abs={ma:.2e} max_rel={mr:.2e}")
            };
            let counted = if low {
                format!("{checked} of {n} outputs compared, {skipped} skipped")
            } else {
                format!("{n} outputs")
            };
            Outcome {
                ok,
                lines: vec![format!(
                    "parity {label}: {} {errors} ({counted}, rtol={} atol={}) {}",
                    case.kind,
                    sig(rtol),
                    sig(atol),
                    if ok { "ok" } else { "FAIL" }
                )],
                half_checked: checked,
                half_skipped: skipped,
            }
        }
        Err(e) => Outcome::error(&label, &case.kind, &e.to_string()),
    };
    out.lines.extend(detail);
    out
}

/// "f32", "bf16", "f16".
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// The runs `UNIRES_PARITY_DTYPES` asks for: a comma-separated list of `f32`, `bf16` and
/// `f16` (default `f32,bf16`, the CPU's policy). The low-precision runs use the case's
/// `bf16_rtol` / `bf16_atol` (and `bf16_atol_per_output`) for f16 as well: f16 has more
/// mantissa bits than bf16, so they hold a fortiori wherever f16 does not overflow.
pub fn run_dtypes() -> Res<Vec<DType>> {
    let spec = std::env::var("UNIRES_PARITY_DTYPES").unwrap_or_default();
    let spec = if spec.trim().is_empty() {
        "f32,bf16"
    } else {
        spec.as_str()
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = match part {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            other => {
                return Err(format!(
                    "UNIRES_PARITY_DTYPES: unknown dtype {other:?} (expected f32, bf16, f16)"
                )
                .into())
            }
        };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Runs a case in each of `dtypes`: f32 against its `rtol`/`atol`; bf16 and f16 only when
/// it states bf16 tolerances (cases with weights).
pub fn run_case(case: &Case, run: super::Runner, dtypes: &[DType]) -> Vec<Outcome> {
    let mut out = Vec::new();
    if dtypes.contains(&DType::F32) {
        let rtol = case.f64("rtol").unwrap_or(1e-4);
        let atol = case.f64("atol").unwrap_or(1e-4);
        out.push(run_in(case, run, rtol, atol));
    }
    if let (Some(brtol), Some(batol)) = (case.f64("bf16_rtol"), case.f64("bf16_atol")) {
        for &dtype in dtypes.iter().filter(|d| **d != DType::F32) {
            let c = Case {
                name: case.name.clone(),
                dir: case.dir.clone(),
                kind: case.kind.clone(),
                fixture: case.fixture.clone(),
                io: case.io.clone(),
                inputs: case.inputs.clone(),
                dtype,
                device: case.device.clone(),
            };
            out.push(run_in(&c, run, brtol, batol));
        }
    }
    out
}
