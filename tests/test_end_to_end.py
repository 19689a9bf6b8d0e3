"""The README's first command on generated raw files: batch, training, Feast, the service, a sample user's
recommendations; then again, skipping every stage whose outputs are current, serving until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import psutil
import pytest
import requests
from conftest import REPO_ROOT
from processes import free_port

from feature_repo import publish
from spark_jobs.synthetic import generate, write_ml1m

pytestmark = pytest.mark.slow


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_one_command_from_raw_files_to_recommendations_then_skips_what_is_current(tmp_path):
    data, output = tmp_path / "data", tmp_path / "output"
    write_ml1m(generate(2_500, n_users=30, n_items=90, seed=8), data)
    yaml = tmp_path / "feature_store.yaml"  # a private Feast registry and online store
    yaml.write_text(publish.SQLITE_YAML.read_text()
                    .replace("registry: data/registry.db", f"registry: {tmp_path / 'registry.db'}")
                    .replace("path: data/online_store.db", f"path: {tmp_path / 'online_store.db'}"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    port = free_port()
    command = [sys.executable, "-m", "online.end_to_end", "--data", str(data), "--output", str(output),
               "--feast-yaml", str(yaml), "--port", str(port), "--max-epochs", "2"]

    first = subprocess.run([*command, "--exit"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("[1/4] batch:", "[2/4] train:", "[3/4] feast:", "[4/4] serve:"):
        assert stage in first.stdout
    assert "skipped" not in first.stdout
    assert " 1. item " in first.stdout and " 10. item " in first.stdout  # the sample user's list, printed
    assert '"url": "http://127.0.0.1:' in first.stdout and '"test_auc"' in first.stdout
    assert not port_is_open(port)  # --exit stopped the service

    # Again, without --exit: nothing to redo, then serving until Ctrl-C.
    second = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    lines = []
    try:
        for line in second.stdout:
            lines.append(line)
            if "(Ctrl-C stops it)" in line:
                break
        assert port_is_open(port)
        # The run's token, printed with an example: a rating posted with it is accepted, another token is refused.
        text = "".join(lines)
        token = re.search(r"Bearer ([A-Za-z0-9_-]+)'", text).group(1)
        userid, itemid = re.search(r'/users/(\d+)/events .*"itemid": (\d+)', text).groups()
        url = f"http://127.0.0.1:{port}/users/{userid}/events"
        posted = requests.post(url, json={"itemid": int(itemid), "rating": 5},
                               headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert posted.status_code == 202 and posted.json()["applied"] is True
        assert requests.post(url, json={"itemid": int(itemid), "rating": 5},
                             headers={"Authorization": "Bearer not-it"}, timeout=30).status_code == 403
        # the token reaches the server (its master and workers) in the environment, never on a command line
        command_lines = [" ".join(process.info["cmdline"] or []) for process in psutil.process_iter(["cmdline"])]
        assert not [line for line in command_lines if token in line]
        os.killpg(second.pid, signal.SIGINT)
        second.wait(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
    text = "".join(lines)
    assert "batch: current" in text and "train: the models trained" in text and "feast: materialised" in text
    assert second.returncode == 0
    assert not port_is_open(port)
