//! `roi_align` cases: torchvision.ops.roi_align forward and the gradient of
//! `sum(output * grad_output)` with respect to the features, both through candle's autograd
//! and through `roi_align_backward`.

use candle_core::{Tensor, Var};
use unires::ops::roi_align::{roi_align, roi_align_backward, RoiAlign};

use crate::harness::{Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let size = case.fixture["output_size"]
        .as_array()
        .and_then(|a| Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize)))
        .ok_or("fixture.json: output_size must be [h, w]")?;
    let p = RoiAlign {
        output_size: size,
        spatial_scale: case.f64("spatial_scale").ok_or("no spatial_scale")? as f32,
        sampling_ratio: case.i64("sampling_ratio").ok_or("no sampling_ratio")? as i32,
        aligned: case.bool("aligned").ok_or("no aligned")?,
    };
    let input = case.input("input")?;
    let boxes = case.input("boxes")?;
    let grad_output = case.input("grad_output")?;
    let var = Var::from_tensor(&input)?;
    let output = roi_align(var.as_tensor(), &boxes, &p)?;
    let grads = (&output * &grad_output)?.sum_all()?.backward()?;
    let grad_input = grads
        .get(var.as_tensor())
        .ok_or("no gradient for the input")?
        .clone();
    // The same gradient from the explicit backward function.
    let direct = roi_align_backward(&grad_output, &boxes, &p, input.dims4()?)?;
    Ok(vec![
        ("output".into(), output.detach()),
        ("grad_input".into(), grad_input),
        ("grad_input".into(), direct),
    ])
}
