"""The ranking model's ONNX file under onnxruntime: the in-process ranker of the embedded profile and the
offline evaluation."""

from __future__ import annotations

import numpy as np

from contracts.published import ModelFolder
from models.onnx_sessions import inference_session


class OnnxRanker:
    """The ranking model's ONNX file under onnxruntime: rows in spec order -> probabilities."""

    def __init__(self, folder: ModelFolder, threads: int = 1) -> None:
        metadata = folder.metadata()
        self.session = inference_session(folder.path / metadata["onnx"], threads)
        self.input_name, self.output_name = metadata["input_name"], metadata["output_name"]
        self.version = metadata["version"]

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: rows})[0]
