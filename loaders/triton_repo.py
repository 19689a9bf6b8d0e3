"""Write the Triton model repository for the ranking model: model ``ml_rec`` from the ONNX artifact.

    python -m loaders.triton_repo [--output DIR] [--backend python|onnxruntime] [--repository DIR]

One generator, two configurations of the same ONNX file:
- ``onnxruntime`` (``platform: "onnxruntime_onnx"``): the standard Triton image (docker-compose);
  default repository ``<output>/triton/models``.
- ``python`` (``backend: "python"``, ``loaders/triton_python_model.py`` running onnxruntime): the
  ``tritonserver`` shipped in ``nvidia-pytriton`` (python backend only), which ``online.local_services``
  starts; default repository ``<services_dir>/triton/models``.

Names: the reference design's ``ml_input`` (float32 rows of the feature spec's 59 columns, in spec
order) and ``ml_output`` (the click probability per row). The training export names them
``features``/``probability``; the copy in the repository is renamed (same graph and weights). Triton's
batch dimension is not used (``max_batch_size: 0``): the input is ``[-1, 59]``, one request = one user's
candidates, output ``[-1]``.

Each run adds a model version ``<N>`` (written under a temporary name, then renamed, so Triton's
repository polling never loads half a version); Triton serves the newest two, so a service still pinned
to the previous version keeps working until it reloads; older versions are removed. The config's
parameters map each Triton version to the ranking model version it holds.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx

from contracts.feature_spec import SPEC
from contracts.published import open_published
from contracts.settings import ServicesSettings

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME, MODEL_FILE = "ml_input", "ml_output", "model.onnx"
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
VERSIONS_SERVED = 2
VERSION_PARAMETER = "ranking_model_v"  # + Triton version -> the ranking model version string

Backend = Literal["python", "onnxruntime"]


@dataclass(frozen=True)
class TritonRepo:
    repository: Path
    model: str
    version: int
    ranking_model: str
    removed_versions: list[int]


def default_repository(settings: ServicesSettings, backend: Backend) -> Path:
    if backend == "python":
        return settings.services_dir / "triton" / "models"
    return settings.output_dir / "triton" / "models"


def renamed_model(source: Path, input_name: str, output_name: str) -> onnx.ModelProto:
    """The ONNX graph with its one input and one output renamed (every reference to them too)."""
    model = onnx.load(str(source))
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"{source}: expected one input and one output, found {len(graph.input)} and "
                         f"{len(graph.output)}")
    renames = {graph.input[0].name: input_name, graph.output[0].name: output_name}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    graph.input[0].name, graph.output[0].name = input_name, output_name
    onnx.checker.check_model(model)
    return model


def model_config(name: str, backend: Backend, versions: dict[int, str]) -> str:
    engine = 'backend: "python"' if backend == "python" else 'platform: "onnxruntime_onnx"'
    parameters = "\n".join(
        f'parameters {{ key: "{VERSION_PARAMETER}{v}" value: {{ string_value: "{ranking}" }} }}'
        for v, ranking in sorted(versions.items()))
    return f"""name: "{name}"
{engine}
max_batch_size: 0
input [ {{ name: "{INPUT_NAME}" data_type: TYPE_FP32 dims: [ -1, {len(SPEC.names)} ] }} ]
output [ {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
version_policy: {{ latest: {{ num_versions: {VERSIONS_SERVED} }} }}
{parameters}
"""


def versions_in(model_dir: Path) -> dict[int, str]:
    """Triton version -> ranking model version, read from the current config's parameters."""
    config = model_dir / "config.pbtxt"
    found = {}
    if config.exists():
        for line in config.read_text().splitlines():
            if line.startswith("parameters") and VERSION_PARAMETER in line:
                key = line.split('key: "', 1)[1].split('"', 1)[0]
                value = line.split('string_value: "', 1)[1].split('"', 1)[0]
                version = int(key.removeprefix(VERSION_PARAMETER))
                if (model_dir / str(version)).is_dir():
                    found[version] = value
    return found


def write(settings: ServicesSettings, backend: Backend = "python", repository: Path | None = None) -> TritonRepo:
    published = open_published(settings)
    repository = repository or default_repository(settings, backend)
    model_dir = repository / settings.triton_model
    model_dir.mkdir(parents=True, exist_ok=True)
    served = versions_in(model_dir)
    metadata = published.ranking_model.metadata()
    if served and served[max(served)] == metadata["version"] and (model_dir / str(max(served)) / MODEL_FILE).exists():
        log.info("triton: %s version %d already holds ranking model %s", settings.triton_model, max(served),
                 metadata["version"])
        return TritonRepo(repository, settings.triton_model, max(served), metadata["version"], [])
    numbered = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    version = max(numbered, default=0) + 1
    staging = model_dir / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    onnx.save(renamed_model(published.ranking_model.path / metadata["onnx"], INPUT_NAME, OUTPUT_NAME),
              str(staging / MODEL_FILE))
    if backend == "python":
        shutil.copy2(PYTHON_MODEL, staging / "model.py")
    staging.rename(model_dir / str(version))
    kept = sorted({*served, version})[-VERSIONS_SERVED:]
    versions = {v: served.get(v, metadata["version"]) for v in kept}
    config_staging = model_dir / ".config.pbtxt.staging"
    config_staging.write_text(model_config(settings.triton_model, backend, versions))
    os.replace(config_staging, model_dir / "config.pbtxt")
    removed = sorted(v for v in numbered if v not in kept)
    for old in removed:
        shutil.rmtree(model_dir / str(old), ignore_errors=True)
    log.info("triton: %s version %d = ranking model %s (%s backend) in %s; removed %s", settings.triton_model,
             version, metadata["version"], backend, repository, removed)
    return TritonRepo(repository, settings.triton_model, version, metadata["version"], removed)


def main(argv: Sequence[str] | None = None) -> TritonRepo:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServicesSettings.add_arguments(parser)
    parser.add_argument("--backend", choices=("python", "onnxruntime"), default="python")
    parser.add_argument("--repository", type=Path, default=None, help="model repository folder")
    args = parser.parse_args(argv)
    settings = ServicesSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = write(settings, args.backend, args.repository)
    print(f"triton: {result.model} version {result.version} (ranking model {result.ranking_model}) "
          f"in {result.repository}")
    return result


if __name__ == "__main__":
    main()
