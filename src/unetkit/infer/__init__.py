"""Prediction and export: whole or tiled inference with TTA, and ONNX/TorchScript files."""

from unetkit.infer.predictor import Predictor, decode_probabilities, predict

__all__ = ["Predictor", "decode_probabilities", "predict"]
