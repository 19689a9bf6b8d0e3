"""The publish guard: a run much smaller than the export serving now does not replace it."""

import json

import pytest

from contracts.tables import Export
from spark_jobs.export import ShrinkingRunError, guard_against_shrinking, switch_current


def serving(settings, counts):
    run_dir = settings.exports_dir / "runs" / "good"
    run_dir.mkdir(parents=True)
    (run_dir / Export.MANIFEST_FILE).write_text(json.dumps({"counts": counts}))
    switch_current(settings, run_dir)


def test_first_run_and_similar_runs_publish(settings, tmp_path):
    new_run = tmp_path / "new"
    guard_against_shrinking(settings, {"ratings": 10, "samples": 8}, new_run)  # nothing serving yet
    serving(settings, {"ratings": 1000, "samples": 800})
    guard_against_shrinking(settings, {"ratings": 500, "samples": 400}, new_run)  # exactly half is allowed
    guard_against_shrinking(settings, {"ratings": 5000, "samples": 4000}, new_run)


@pytest.mark.parametrize(("counts", "named"), [
    ({"ratings": 499, "samples": 800}, "ratings 499 < half of 1,000"),
    ({"ratings": 1000, "samples": 0}, "samples 0 < half of 800"),
])
def test_shrinking_run_is_refused_unless_allowed(settings, tmp_path, counts, named):
    serving(settings, {"ratings": 1000, "samples": 800})
    with pytest.raises(ShrinkingRunError, match=named) as refused:
        guard_against_shrinking(settings, counts, tmp_path / "new")
    assert "--allow-shrink" in str(refused.value) and "not moved" in str(refused.value)
    guard_against_shrinking(settings.model_copy(update={"allow_shrink": True}), counts, tmp_path / "new")
