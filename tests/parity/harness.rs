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
    /// The dtype this run computes in (f32, or bf16 for the low-precision run).
    pub dtype: DType,
    pub device: Device,
}

impl Case {
    pub fn load(dir: &Path) -> Res<Self> {
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
            device: Device::Cpu,
        })
    }

    /// An input or output tensor by its reference name.
    pub fn get(&self, name: &str) -> Res<&Tensor> {
        self.io
            .get(name)
            .ok_or_else(|| format!("io.safetensors has no tensor {name:?}").into())
    }

    /// An input converted to the run's dtype (float inputs only).
    pub fn input(&self, name: &str) -> Res<Tensor> {
        let t = self.get(name)?;
        Ok(if t.dtype().is_float() {
            t.to_dtype(self.dtype)?
        } else {
            t.clone()
        })
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

/// The result of comparing one run of one case.
pub struct Outcome {
    pub ok: bool,
    text: String,
}

impl Outcome {
    pub fn error(name: &str, kind: &str, msg: &str) -> Self {
        Self {
            ok: false,
            text: format!("parity {name}: {kind} error: {msg} FAIL"),
        }
    }

    pub fn line(&self) -> &str {
        &self.text
    }
}

/// Compares `got` to `want` elementwise: returns (max_abs, max_rel, all within atol + rtol·|want|).
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Res<(f64, f64, bool)> {
    if got.dims() != want.dims() {
        return Err(format!("shape {:?} vs reference {:?}", got.dims(), want.dims()).into());
    }
    let g: Vec<f64> = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let w: Vec<f64> = want.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
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

fn run_in(case: &Case, run: super::Runner, dtype: DType, rtol: f64, atol: f64) -> Outcome {
    let tag = if dtype == DType::F32 { "" } else { "[bf16]" };
    let label = format!("{}{tag}", case.name);
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
            let (a, r, o) = compare(t, want, rtol, atol).map_err(|e| format!("{name}: {e}"))?;
            if std::env::var("PARITY_VERBOSE").is_ok() {
                println!(
                    "    {name}: max_abs={a:.2e} max_rel={r:.2e} {}",
                    if o { "ok" } else { "FAIL" }
                );
            }
            ma = ma.max(a);
            mr = mr.max(r);
            ok &= o;
        }
        Ok((ma, mr, ok, outputs.len()))
    })();
    match result {
        Ok((ma, mr, ok, n)) => Outcome {
            ok,
            text: format!(
                "parity {label}: {} max_abs={ma:.2e} max_rel={mr:.2e} ({n} outputs, rtol={rtol:.0e} atol={atol:.0e}) {}",
                case.kind,
                if ok { "ok" } else { "FAIL" }
            ),
        },
        Err(e) => Outcome::error(&label, &case.kind, &e.to_string()),
    }
}

/// Runs a case in f32 and, when it has weights and states bf16 tolerances, in bf16.
pub fn run_case(case: &Case, run: super::Runner) -> Vec<Outcome> {
    let rtol = case.f64("rtol").unwrap_or(1e-4);
    let atol = case.f64("atol").unwrap_or(1e-4);
    let mut out = vec![run_in(case, run, DType::F32, rtol, atol)];
    if let (Some(brtol), Some(batol)) = (case.f64("bf16_rtol"), case.f64("bf16_atol")) {
        let mut c = Case {
            name: case.name.clone(),
            dir: case.dir.clone(),
            kind: case.kind.clone(),
            fixture: case.fixture.clone(),
            io: case.io.clone(),
            inputs: case.inputs.clone(),
            dtype: DType::BF16,
            device: case.device.clone(),
        };
        c.dtype = DType::BF16;
        out.push(run_in(&c, run, DType::BF16, brtol, batol));
    }
    out
}
