//! Host weights: PyTorch names and shapes for every cell, and safetensors round trips.

use rnn_wgpu::weights::tensor_names;
use rnn_wgpu::{Nonlinearity, RnnConfig, Weights};

fn names(cfg: &RnnConfig) -> Vec<(String, Vec<usize>)> {
    tensor_names(cfg)
}

#[test]
fn names_and_shapes_follow_pytorch() {
    let s = |n: &str, shape: &[usize]| (n.to_string(), shape.to_vec());
    assert_eq!(
        names(&RnnConfig::gru(5, 7).build().unwrap()),
        vec![
            s("weight_ih_l0", &[21, 5]),
            s("weight_hh_l0", &[21, 7]),
            s("bias_ih_l0", &[21]),
            s("bias_hh_l0", &[21]),
        ]
    );
    assert_eq!(
        names(
            &RnnConfig::rnn(5, 7, Nonlinearity::Relu)
                .bias(false)
                .build()
                .unwrap()
        ),
        vec![s("weight_ih_l0", &[7, 5]), s("weight_hh_l0", &[7, 7])]
    );
    // nn.LSTM(5, 7, proj_size=3): weight_hh is [4H, P], weight_hr is [P, H].
    assert_eq!(
        names(
            &RnnConfig::lstm(5, 7)
                .proj_size(3)
                .peepholes(true)
                .build()
                .unwrap()
        ),
        vec![
            s("weight_ih_l0", &[28, 5]),
            s("weight_hh_l0", &[28, 3]),
            s("bias_ih_l0", &[28]),
            s("bias_hh_l0", &[28]),
            s("weight_hr_l0", &[3, 7]),
            s("peephole_l0", &[21]),
        ]
    );
}

#[test]
fn every_cell_round_trips_through_safetensors() {
    for cfg in [
        RnnConfig::lstm(4, 6).build().unwrap(),
        RnnConfig::lstm(4, 6)
            .proj_size(2)
            .peepholes(true)
            .build()
            .unwrap(),
        RnnConfig::gru(4, 6).bias(false).build().unwrap(),
        RnnConfig::rnn(4, 6, Nonlinearity::Tanh).build().unwrap(),
    ] {
        let w = Weights::init(&cfg, 3);
        w.validate().unwrap();
        let back = Weights::from_safetensors(&cfg, &w.to_safetensors().unwrap()).unwrap();
        assert_eq!(back, w, "{cfg:?}");
        // Every parameter is drawn from U(-1/sqrt(H), 1/sqrt(H)).
        let k = 1.0 / 6f32.sqrt();
        for (name, _, data) in w.named_tensors() {
            assert!(data.iter().all(|v| v.abs() <= k), "{name}");
        }
    }
}
