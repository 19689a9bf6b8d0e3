"""ONNX export of the ranking model and the PyTorch/onnxruntime parity check.

    python -m models.onnx_export --model output/models/ranking --exports output/exports/current
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from contracts.errors import PublishCheckError
from contracts.feature_spec import SPEC, FeatureSpec
from contracts.published import open_model
from contracts.tables import Export, ModelFiles
from models.ranking_model import Probability, load_ranking
from models.samples import load_samples

INPUT_NAME = "features"
OUTPUT_NAME = "probability"
OPSET = 17
PARITY_TOLERANCE = 1e-5

log = logging.getLogger(__name__)


class ParityError(PublishCheckError):
    pass


def export_onnx(model: nn.Module, path: Path, spec: FeatureSpec = SPEC) -> Path:
    """Exports sigmoid(model) with a dynamic batch dimension: features (batch, 59) -> probability (batch,)."""
    wrapped = Probability(model).eval()
    example = torch.zeros(2, len(spec.names), dtype=torch.float32)
    torch.onnx.export(
        wrapped, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET, dynamo=False,
    )
    return path


def onnx_scores(path: Path, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([
        session.run([OUTPUT_NAME], {INPUT_NAME: features[start:start + batch_size]})[0]
        for start in range(0, len(features), batch_size)
    ])


def torch_scores(model: nn.Module, features: torch.Tensor, batch_size: int = 65536) -> np.ndarray:
    wrapped = Probability(model).eval()
    with torch.no_grad():
        return torch.cat([wrapped(features[s:s + batch_size]) for s in range(0, len(features), batch_size)]).numpy()


def check_parity(model: nn.Module, path: Path, features: torch.Tensor, tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest absolute difference between PyTorch and onnxruntime scores; raises above tolerance."""
    difference = float(np.max(np.abs(torch_scores(model, features) - onnx_scores(path, features.numpy()))))
    if difference > tolerance:
        raise ParityError(f"ONNX and PyTorch scores differ by {difference:.2e} (> {tolerance:.0e})")
    log.info("ONNX parity on %d rows: max |difference| %.2e", len(features), difference)
    return difference


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="ranking model folder or its root")
    parser.add_argument("--exports", type=Path, required=True, help="the batch's exports (samples_test)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = open_model(args.model)
    model = load_ranking(folder)
    test_rows = load_samples(args.exports, Export.SAMPLES_TEST).features
    difference = check_parity(model, folder.path / ModelFiles.ONNX, test_rows)
    print(f"parity ok: max |torch - onnxruntime| = {difference:.2e}")


if __name__ == "__main__":
    main()
