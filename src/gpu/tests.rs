use super::*;

#[test]
fn device_specs_parse_and_print() {
    for (s, want) in [
        ("auto", DeviceSpec::Auto),
        ("cpu", DeviceSpec::Cpu),
        ("cuda", DeviceSpec::Cuda(0)),
        ("cuda:0", DeviceSpec::Cuda(0)),
        ("cuda:7", DeviceSpec::Cuda(7)),
    ] {
        assert_eq!(s.parse::<DeviceSpec>().unwrap(), want, "{s}");
    }
    assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
}

#[test]
fn bad_device_specs_say_why() {
    for (s, why) in [
        ("gpu", "unknown device kind"),
        ("cuda:", "decimal number"),
        ("cuda:-1", "decimal number"),
        ("cuda:+1", "decimal number"),
        ("cuda:1x", "decimal number"),
        ("cuda:99999999999999999999999", "too large"),
        ("cuda:1024", "too large"),
        ("CPU", "unknown device kind"),
        ("", "unknown device kind"),
    ] {
        let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(e.contains(why), "{s:?}: {e}");
        assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
    }
}

#[test]
fn load_paths_parse_and_a_bad_one_is_named() {
    assert_eq!("staged".parse::<LoadPath>().unwrap(), LoadPath::Staged);
    assert_eq!(
        "device-decrypt".parse::<LoadPath>().unwrap(),
        LoadPath::DeviceDecrypt
    );
    let e = "Staged".parse::<LoadPath>().unwrap_err();
    assert!(
        matches!(&e, GpuError::LoadPath { value } if value == "Staged"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "unknown GPU load path \"Staged\" (expected staged or device-decrypt)"
    );
}

#[test]
fn cpu_and_auto_open_without_a_gpu() {
    assert!(open(DeviceSpec::Cpu).unwrap().is_cpu());
    if cuda_device_count() == 0 {
        assert!(open(DeviceSpec::Auto).unwrap().is_cpu());
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_cpu_build_is_a_clear_error() {
    let e = open(DeviceSpec::Cuda(0)).unwrap_err().to_string();
    assert!(e.contains("built without it"), "{e}");
    assert!(e.contains("--features cuda"), "{e}");
}

mod kernels_cpu {
    use candle_core::{Device, Tensor};

    use crate::engine::Mlp;
    use crate::engine::synthetic;
    use crate::gpu::mlp::{BiasAct, DescError, MlpDesc, MlpOp, NONE};
    use crate::gpu::sensitivity::{PerturbOp, ScoresOp, reference_perturb, reference_scores};

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * y.abs().max(1.0))
    }

    #[test]
    fn fused_mlp_reference_matches_the_engine_forward() {
        for widths in [vec![30, 16, 2], vec![64, 256, 256, 10], vec![5, 3]] {
            let (config, weights) = synthetic::mlp(&widths, 7).unwrap();
            let mlp = Mlp::from_safetensors(&config, &weights, &Device::Cpu).unwrap();
            let (params, desc) = mlp.pack().unwrap();
            let desc = desc.plan(1 << 30).unwrap();
            for rows in [1usize, 3, 65] {
                let x = synthetic::values(rows * widths[0], rows as u64, 8.0);
                let want = mlp.forward_fused_cpu(&x, rows).unwrap();
                let xt = Tensor::from_slice(&x, (rows, widths[0]), &Device::Cpu).unwrap();
                let got = xt.apply_op2_no_bwd(&params, &MlpOp::new(desc)).unwrap();
                let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(close(&got, &want, 1e-5), "{widths:?} rows {rows}");
            }
        }
    }

    #[test]
    fn the_mlp_descriptor_rejects_what_would_read_out_of_bounds() {
        let (config, weights) = synthetic::mlp(&[8, 4, 2], 1).unwrap();
        let mlp = Mlp::from_safetensors(&config, &weights, &Device::Cpu).unwrap();
        let (params, desc) = mlp.pack().unwrap();
        let len = params.elem_count();
        assert_eq!(desc.validate(len), Ok(()));
        let mut d = desc;
        d.layers[0].w_off = len as u32;
        assert_eq!(d.validate(len), Err(DescError::LayerOutside(0)));
        let mut d = desc;
        d.layers[1].inp = 5;
        assert!(matches!(
            d.validate(len),
            Err(DescError::Layer {
                layer: 1,
                inp: 5,
                ..
            })
        ));
        let mut d = desc;
        d.n_layers = 9;
        assert_eq!(d.validate(len), Err(DescError::LayerCount(9)));
        assert!(matches!(
            desc.validate(len + 1),
            Err(DescError::ParamLen { buffer, .. }) if buffer == len + 1
        ));
        let mut d = desc;
        d.norm_off = NONE - 1;
        assert_eq!(d.validate(len), Err(DescError::NormOutside));
        // A tile plan that cannot fit one row is refused, so wide models take cuBLAS.
        assert!(desc.plan(16).is_none());
        let planned: MlpDesc = desc.plan(48 * 1024).unwrap();
        assert!(planned.shared_bytes(planned.tile_rows) <= 48 * 1024);
        // A wrong input width is an error, not an out-of-bounds read.
        let x = Tensor::zeros((2, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
        let e = x
            .apply_op2_no_bwd(&params, &MlpOp::new(planned))
            .unwrap_err();
        assert!(e.to_string().contains("7 features"), "{e}");
    }

    #[test]
    fn bias_act_reference() {
        let y = Tensor::from_slice(&[-1.0f32, 0.5, 2.0, -3.0], (2, 2), &Device::Cpu).unwrap();
        let b = Tensor::from_slice(&[0.5f32, -1.0], 2, &Device::Cpu).unwrap();
        let out = y.apply_op2_no_bwd(&b, &BiasAct { act: 1 }).unwrap();
        assert_eq!(
            out.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 2.5, 0.0]
        );
        let bad = Tensor::from_slice(&[1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
        assert!(y.apply_op2_no_bwd(&bad, &BiasAct { act: 0 }).is_err());
    }

    #[test]
    fn perturbations_follow_the_stream_and_the_scales() {
        let key = [1u32, 2, 3, 4, 5, 6, 7, 8];
        let x = vec![1.0f32, -2.0, 3.0];
        let sigma = vec![0.5f32, 0.0, 2.0];
        let a = reference_perturb(&x, &sigma, 4000, &key, 9);
        let b = reference_perturb(&x, &sigma, 4000, &key, 9);
        assert_eq!(a, b, "same key and stream, same copies");
        assert_ne!(a, reference_perturb(&x, &sigma, 4000, &key, 10));
        for (f, (&x0, &s)) in x.iter().zip(&sigma).enumerate() {
            let v: Vec<f64> = a.iter().skip(f).step_by(3).map(|&v| f64::from(v)).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let sd = (v.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            assert!(
                (mean - f64::from(x0)).abs() < 0.1 * f64::from(s).max(0.01),
                "{f}: {mean}"
            );
            assert!(
                (sd - f64::from(s)).abs() < 0.05 * f64::from(s).max(0.01),
                "{f}: {sd}"
            );
        }
        // The op's CPU path is the reference.
        let xt = Tensor::from_slice(&x, (1, 3), &Device::Cpu).unwrap();
        let st = Tensor::from_slice(&sigma, 3, &Device::Cpu).unwrap();
        let op = PerturbOp {
            copies: 4000,
            key,
            stream: 9,
        };
        let got = xt.apply_op2_no_bwd(&st, &op).unwrap();
        assert_eq!(got.dims(), [4000, 3]);
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a);
    }

    #[test]
    fn scores_match_the_screener_definition() {
        // 2 rows, width 2, 2 copies: rows then copies (row 0's first).
        let outputs = [
            0.0f32, 1.0, 2.0, 2.0, 0.5, 1.0, 0.0, 0.0, 2.0, 3.0, 1.0, 2.0,
        ];
        let s = reference_scores(&outputs, 2, 2, 2);
        assert!((s[0] - (0.5 + 0.0 + 0.0 + 1.0) / 4.0).abs() < 1e-7);
        assert!((s[1] - (0.0 + 1.0 + 1.0 + 0.0) / 4.0).abs() < 1e-7);
        let t = Tensor::from_slice(&outputs, (6, 2), &Device::Cpu).unwrap();
        let got = t
            .apply_op1_no_bwd(&ScoresOp { rows: 2, copies: 2 })
            .unwrap();
        assert_eq!(got.to_vec1::<f32>().unwrap(), s);
        assert!(
            t.apply_op1_no_bwd(&ScoresOp { rows: 3, copies: 2 })
                .is_err()
        );
    }

    #[test]
    fn forward_screened_on_the_cpu_matches_forward_and_scores() {
        let (config, weights) = synthetic::mlp(&[6, 8, 3], 3).unwrap();
        let mlp = Mlp::from_safetensors(&config, &weights, &Device::Cpu).unwrap();
        let x = synthetic::values(4 * 6, 5, 4.0);
        let (out, scores) = mlp.forward_screened(&x, 4, &[0.0; 6], 3).unwrap();
        let want = mlp.forward_fused_cpu(&x, 4).unwrap();
        assert!(close(&out, &want, 1e-5));
        // Zero noise: every copy equals its row, so every score is zero.
        assert!(scores.iter().all(|s| *s == 0.0), "{scores:?}");
        let (_, scores) = mlp.forward_screened(&x, 4, &[0.5; 6], 3).unwrap();
        assert!(scores.iter().all(|s| *s > 0.0), "{scores:?}");
        assert!(mlp.forward_screened(&x, 4, &[0.5; 5], 3).is_err());
    }
}

#[test]
fn models_on_cuda_n_attest_with_gpu_n_and_on_the_cpu_with_none() {
    use super::serving_ordinals;
    assert_eq!(serving_ordinals(DeviceSpec::Cuda(3)), [3]);
    assert!(serving_ordinals(DeviceSpec::Cpu).is_empty());
    // Without the cuda feature (or a device), auto runs on the CPU.
    if super::cuda_device_count() == 0 {
        assert!(serving_ordinals(DeviceSpec::Auto).is_empty());
    }
}
