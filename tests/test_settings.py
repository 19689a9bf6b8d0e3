import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.settings import (
    BatchSettings,
    EndToEndSettings,
    FeastSettings,
    LakeSettings,
    ServingSettings,
    TrainingSettings,
)


def test_env_then_flags_override_defaults(monkeypatch):
    assert BatchSettings().output_dir == Path("output")
    monkeypatch.setenv("MOVIELENS_DIR", "/data/ml-1m")
    monkeypatch.setenv("RECSYS_OUTPUT_DIR", "/lake")
    monkeypatch.setenv("RECSYS_SHUFFLE_PARTITIONS", "64")
    from_env = BatchSettings.parse([])
    assert from_env.data_dir == Path("/data/ml-1m")
    assert from_env.output_dir == Path("/lake")
    assert from_env.shuffle_partitions == 64
    from_flags = BatchSettings.parse(["--data", "/other", "--shuffle-partitions", "3"])
    assert from_flags.data_dir == Path("/other")
    assert from_flags.shuffle_partitions == 3
    assert from_flags.output_dir == Path("/lake")


def test_derived_paths():
    settings = LakeSettings(output_dir=Path("/lake"))
    assert settings.table_path("ratings") == Path("/lake/delta/ratings")
    assert settings.current_export_dir == Path("/lake/exports/current")


def test_bad_values_are_rejected(monkeypatch):
    monkeypatch.setenv("RECSYS_ON_BAD_LINES", "ignore")
    with pytest.raises(ValidationError, match="on_bad_lines"):
        BatchSettings()
    with pytest.raises(SystemExit):
        BatchSettings.parse(["--on-bad-lines", "maybe"])


def flags_of(settings_class) -> set[str]:
    parser = argparse.ArgumentParser()
    settings_class.add_arguments(parser)
    return {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}


def test_each_command_shows_the_flags_it_reads():
    batch, training, serving = flags_of(BatchSettings), flags_of(TrainingSettings), flags_of(ServingSettings)
    assert {"--data", "--on-bad-lines", "--shuffle-partitions"} <= batch
    assert not batch & {"--port", "--triton-url", "--variant", "--recall-size"}
    assert {"--variant", "--max-epochs", "--no-delta", "--master"} <= training and "--data" not in training
    assert {"--port", "--profile", "--triton-url", "--feast-yaml", "--recall-size"} <= serving
    assert not serving & {"--data", "--variant", "--shuffle-partitions"}
    assert "--online-store" in flags_of(FeastSettings)
    assert batch | training | serving <= flags_of(EndToEndSettings)


def test_choices_come_from_the_literals():
    with pytest.raises(SystemExit):
        ServingSettings.parse(["--profile", "cluster"])
    assert ServingSettings.parse(["--profile", "services"]).profile == "services"
    with pytest.raises(SystemExit):
        TrainingSettings.parse(["--only", "both"])  # an optional Literal keeps its choices


def test_flags_round_trip_to_a_child_command():
    """What end_to_end hands a stage: its values as flags, read back to the same settings."""
    mine = EndToEndSettings(data_dir=Path("/d"), output_dir=Path("/o"), negatives_per_impression=2,
                            ranking_negatives=False, refit=True, max_epochs=3, serve_port=8123, profile="services",
                            api_token="-Ab3_x")  # a generated token may start with "-"
    for stage in (BatchSettings, TrainingSettings, ServingSettings):
        narrowed = mine.narrowed(stage)
        assert stage.parse(narrowed.as_flags()) == narrowed
    assert mine.narrowed(TrainingSettings).ranking_negatives is False
    assert mine.narrowed(TrainingSettings).negatives_per_impression == 2
    assert mine.narrowed(ServingSettings).api_token == "-Ab3_x"


def test_request_threads_make_gunicorn_use_its_threaded_worker():
    from online.serve import ServiceApplication

    assert ServingSettings.parse([], "").request_threads == 1
    threaded = ServingSettings.parse(["--threads", "3", "--workers", "1"], "")
    app = ServiceApplication(threaded)  # load_config only: nothing is bound or started
    assert threaded.request_threads == 3 and app.cfg.threads == 3 and app.cfg.workers == 1
    assert ServiceApplication(ServingSettings.parse([], "")).cfg.threads == 1
