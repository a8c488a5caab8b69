//! The forward passes with adversarial-sensitivity screening: on the model's device with the
//! perturbed copies made by the `perturb_rows` kernel (or its CPU reference), and on the
//! fused CPU path with the copies drawn in the first layer's pre-activation space
//! ([`PreactFactor`]).

use candle_core::Tensor;

use super::kernel::{activate, dense_accumulate, with_cpu_f32};
use super::load::scrub;
use super::{Mlp, PreactFactor};
use crate::engine::config::Activation;
use crate::engine::error::EngineError;

impl Mlp {
    /// The forward pass and the sensitivity scores of `rows` rows in one pass on the model's
    /// device: the perturbed copies are made by the `perturb_rows` kernel (or its CPU
    /// reference), batched with the rows, and reduced by `sensitivity_scores`. Returns the
    /// rows' outputs (`rows × out`) and one score per row.
    pub fn forward_screened(
        &self,
        values: &[f32],
        rows: usize,
        sigmas: &[f32],
        copies: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
        use crate::gpu::sensitivity::{PerturbOp, ScoresOp};
        let compute = |m: String| EngineError::Compute(candle_core::Error::Msg(m));
        if rows == 0 || values.len() != rows * self.in_features || sigmas.len() != self.in_features
        {
            return Err(compute(format!(
                "forward_screened: {} values, {} sigmas for {rows} rows of {}",
                values.len(),
                sigmas.len(),
                self.in_features
            )));
        }
        let copies32 = u32::try_from(copies).map_err(|_| compute("too many copies".into()))?;
        let rows32 = u32::try_from(rows).map_err(|_| compute("too many rows".into()))?;
        let op =
            PerturbOp::from_os(copies32).map_err(|e| compute(format!("OS randomness: {e}")))?;
        let x = Tensor::from_slice(values, (rows, self.in_features), &self.device)?;
        let sigma = Tensor::from_slice(sigmas, self.in_features, &self.device)?;
        let perturbed = x.apply_op2_no_bwd(&sigma, &op)?;
        let all = Tensor::cat(&[&x, &perturbed], 0)?;
        let y = self.forward(&all)?;
        let scores = y
            .apply_op1_no_bwd(&ScoresOp {
                rows: rows32,
                copies: copies32,
            })?
            .to_vec1::<f32>()?;
        let out = y.narrow(0, 0, rows)?.flatten_all()?.to_vec1::<f32>()?;
        scrub(x);
        scrub(perturbed);
        scrub(all);
        scrub(y);
        Ok((out, scores))
    }

    /// The factor that lets adversarial-sensitivity screening draw its perturbations in the
    /// first layer's pre-activation space (see [`PreactFactor`]), for input noise of
    /// standard deviation `sigmas[i]` on raw feature `i`. `None` when the model does not run
    /// on the fused CPU path, where the copies are made in input space instead.
    pub fn preact_factor(&self, sigmas: &[f32]) -> Result<Option<PreactFactor>, EngineError> {
        if !self.fused_cpu_fits(1) || sigmas.len() != self.in_features {
            return Ok(None);
        }
        let Some(first) = self.layers.first() else {
            return Ok(None);
        };
        let hidden = self.layer_width(0);
        let inp = self.in_features;
        // s_i: the noise scale of feature i after standardization.
        let mut scale: Vec<f64> = sigmas.iter().map(|&s| f64::from(s)).collect();
        if let Some((_, inv_std)) = &self.normalization {
            with_cpu_f32(inv_std, |inv| {
                for (s, i) in scale.iter_mut().zip(inv) {
                    *s *= f64::from(*i);
                }
            })?;
        }
        // M = diag(s) · W1, `[inp, hidden]`: the pre-activation moves by Mᵀ z for z ~ N(0, I).
        let m: Vec<f64> = with_cpu_f32(&first.weight_t, |w| {
            w.chunks_exact(hidden.max(1))
                .zip(&scale)
                .flat_map(|(row, s)| row.iter().map(move |v| f64::from(*v) * s))
                .collect()
        })?;
        let factor = PreactFactor::from_input_map(&m, inp, hidden);
        Ok(Some(factor))
    }

    /// The fused CPU forward pass of `rows` rows and, after them, `copies` perturbed copies
    /// of each (row 0's copies first), with each copy's first-layer pre-activation moved by
    /// `Fᵀ u` for its `factor.rank()` standard normals in `normals` (`rows × copies × rank`
    /// values). Returns `rows × (1 + copies)` output rows, in the layout the input-space
    /// path ([`Screener::perturb_into`](super::Screener::perturb_into) then
    /// [`forward_rows`](Self::forward_rows)) produces.
    pub fn forward_screened_cpu(
        &self,
        values: &[f32],
        rows: usize,
        copies: usize,
        factor: &PreactFactor,
        normals: &[f32],
    ) -> Result<Vec<f32>, EngineError> {
        let hidden = self.layer_width(0);
        if rows == 0
            || values.len() != rows * self.in_features
            || factor.hidden != hidden
            || normals.len() != rows * copies * factor.rank
        {
            return Err(EngineError::Compute(candle_core::Error::Msg(format!(
                "screened forward: {} values, {} normals for {rows} rows, {copies} copies, \
                 rank {} (model: {} features, {hidden} hidden)",
                values.len(),
                normals.len(),
                factor.rank,
                self.in_features
            ))));
        }
        let Some(first) = self.layers.first() else {
            return Err(EngineError::Compute(candle_core::Error::Msg(
                "screened forward: the model has no layers".into(),
            )));
        };
        let x = self.normalized(values)?;
        let mut base = Vec::new();
        first.apply_cpu(&x, rows, self.in_features, Activation::None, &mut base)?;
        let mut all = Vec::with_capacity(rows * (1 + copies) * hidden);
        all.extend_from_slice(&base);
        for row in base.chunks_exact(hidden.max(1)) {
            for _ in 0..copies {
                all.extend_from_slice(row);
            }
        }
        if factor.rank > 0 {
            dense_accumulate(
                normals,
                rows * copies,
                factor.rank,
                &factor.f,
                hidden,
                &mut all[rows * hidden..],
            );
        }
        activate(&mut all, first.activation);
        self.fused_layers(all, rows * (1 + copies), 1)
    }
}
