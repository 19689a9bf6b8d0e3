from pathlib import Path

import pytest
from pydantic import ValidationError

from spark_jobs.settings import Settings, parse_settings


def test_env_then_flags_override_defaults(monkeypatch):
    assert Settings().output_dir == Path("output")
    monkeypatch.setenv("MOVIELENS_DIR", "/data/ml-1m")
    monkeypatch.setenv("RECSYS_OUTPUT_DIR", "/lake")
    monkeypatch.setenv("RECSYS_SHUFFLE_PARTITIONS", "64")
    from_env = parse_settings([])
    assert from_env.data_dir == Path("/data/ml-1m")
    assert from_env.output_dir == Path("/lake")
    assert from_env.shuffle_partitions == 64
    from_flags = parse_settings(["--data", "/other", "--shuffle-partitions", "3"])
    assert from_flags.data_dir == Path("/other")
    assert from_flags.shuffle_partitions == 3
    assert from_flags.output_dir == Path("/lake")


def test_derived_paths():
    settings = Settings(output_dir=Path("/lake"))
    assert settings.table_path("ratings") == Path("/lake/delta/ratings")
    assert settings.current_export_dir == Path("/lake/exports/current")


def test_bad_values_are_rejected(monkeypatch):
    monkeypatch.setenv("RECSYS_ON_BAD_LINES", "ignore")
    with pytest.raises(ValidationError, match="on_bad_lines"):
        Settings()
    with pytest.raises(SystemExit):
        parse_settings(["--on-bad-lines", "maybe"])
