"""Triton python-backend model: the ranking model's ONNX file under onnxruntime, for the ``tritonserver``
that ``nvidia-pytriton`` ships (python backend only). ``loaders.triton_repo`` copies this file into each
model version as ``model.py``; it runs inside Triton's own environment, not the project's."""

import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

INPUT, OUTPUT, MODEL_FILE = "ml_input", "ml_output", "model.onnx"


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one request's 200 rows: threads cost more than they save
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(folder, MODEL_FILE), options,
                                            providers=["CPUExecutionProvider"])

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, INPUT).as_numpy().astype(np.float32, copy=False)
            scores = self.session.run([OUTPUT], {INPUT: rows})[0].astype(np.float32, copy=False)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, scores)]))
        return responses
