//! ONNX `LSTM`/`GRU`/`RNN` weight layout (placeholder).
