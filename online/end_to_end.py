"""From raw MovieLens files to a running recommendation service in one command.

    python -m online.end_to_end [--profile embedded|services] [--data DIR] [--output DIR] [--port 8000]
                                [--exit] [--force] [--max-epochs N]

Stages, in order, each through its own command (stages share only tables and artifacts):

1. batch      ``python -m spark_jobs.run_batch``         raw files -> Delta tables, Parquet exports
2. train      ``python -m models.train``                 recall, ranking and sequence models (AUCs)
3. feast      ``python -m feature_repo.publish``         apply + materialise (SQLite; Redis for services)
4. services   ``python -m online.local_services up``     services profile only: Redis, Elasticsearch,
              + ``loaders.redis_loader``, ``loaders.es_loader``, ``loaders.triton_repo``
5. serve      ``python -m online.serve``                 gunicorn on http://<host>:<port>, then one sample
                                                         user's recommendations are printed, and the API
                                                         token of the write routes (``--api-token``, or
                                                         one made for the run)

A stage whose outputs are current is skipped, and says so: the batch when the dataset files, the
feature spec and the batch settings are those of the last run (recorded in ``<output>/end_to_end.json``)
and its export is still ``current``; training when the current models (recall, ranking and, where one was
trained, the sequence model) were trained on the current batch run; Feast when it was materialised from that
run into that store; the loaders when Redis and Elasticsearch already hold that run and recall model.
``--force`` runs everything.

The service keeps running until Ctrl-C (which stops it and the services this command started);
``--exit`` stops after printing the sample recommendations.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import requests

from contracts.errors import CommandError
from contracts.feature_spec import SPEC
from contracts.settings import (
    BatchSettings,
    EndToEndSettings,
    FeastSettings,
    LakeSettings,
    LocalServicesSettings,
    RedisLoaderSettings,
    ServicesSettings,
    ServingSettings,
    TrainingSettings,
)
from contracts.tables import Export, ModelFiles

log = logging.getLogger(__name__)

STATE_FILE = "end_to_end.json"


class StageFailedError(CommandError):
    """A stage's command failed; its output is above, and earlier outputs are untouched."""


class Pipeline:
    def __init__(self, settings: EndToEndSettings, force: bool) -> None:
        self.settings = settings
        self.force = force
        self.state_path = settings.output_dir / STATE_FILE
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.started_services: list[str] = []  # stopped again at the end; ones already running are left
        self.summary: dict[str, Any] = {}
        self.stage_number = 0

    # --- bookkeeping ----------------------------------------------------------------------------------

    def _record(self, stage: str, value: Any) -> None:
        self.state[stage] = value
        self.settings.output_dir.mkdir(parents=True, exist_ok=True)
        staged = self.state_path.with_suffix(".tmp")
        staged.write_text(json.dumps(self.state, indent=2))
        staged.replace(self.state_path)

    def _banner(self, stage: str, what: str) -> None:
        self.stage_number += 1
        print(f"\n[{self.stage_number}/{5 if self.settings.profile == 'services' else 4}] {stage}: {what}",
              flush=True)

    def _run(self, stage: str, module: str, reads: type[LakeSettings], *args: str) -> None:
        """``python -m module`` with this run's values of the settings it ``reads``, as flags."""
        command = [sys.executable, "-m", module, *self.settings.narrowed(reads).as_flags(), *args]
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            raise StageFailedError(f"{stage} failed ({' '.join(command)}); the previous outputs are untouched")
        print(f"    {stage} done in {time.monotonic() - started:.0f} s", flush=True)

    # --- stages ---------------------------------------------------------------------------------------

    def batch_fingerprint(self) -> str:
        digest = hashlib.sha256(SPEC.version.encode())
        for name in BatchSettings.CONTENT_FIELDS:
            digest.update(f"{name}={getattr(self.settings, name)}".encode())
        data = self.settings.data_dir
        if not data.is_dir():
            raise StageFailedError(f"{data} is not a directory: give the dataset with --data or MOVIELENS_DIR")
        for path in sorted(p for p in data.iterdir() if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def current_run(self) -> str | None:
        manifest = self.settings.current_export_dir / Export.MANIFEST_FILE
        if not manifest.exists():
            return None
        content = json.loads(manifest.read_text())
        return content["run_id"] if content.get("spec_version") == SPEC.version else None

    def batch(self) -> None:
        fingerprint = self.batch_fingerprint()
        recorded = self.state.get("batch", {})
        if (not self.force and recorded.get("fingerprint") == fingerprint
                and recorded.get("run_id") == self.current_run() is not None):
            self._banner("batch", f"current (run {recorded['run_id']} from {self.settings.data_dir}): skipped")
        else:
            self._banner("batch", f"{self.settings.data_dir} -> {self.settings.output_dir}")
            self._run("batch", "spark_jobs.run_batch", BatchSettings)
            self._record("batch", {"fingerprint": fingerprint, "run_id": self.current_run()})
        manifest = json.loads((self.settings.current_export_dir / Export.MANIFEST_FILE).read_text())
        self.summary["tables"] = {"delta": sorted(manifest["delta_versions"]), "exports": manifest["exports"],
                                  "run_id": manifest["run_id"]}

    def models(self) -> dict[str, dict]:
        found = {}
        for name in (ModelFiles.RECALL, ModelFiles.RANKING, ModelFiles.NEXT_ITEM):
            path = self.settings.models_dir / name / ModelFiles.CURRENT / ModelFiles.METADATA
            if path.exists():
                found[name] = json.loads(path.read_text())
        return found

    def train(self) -> None:
        run_id = self.current_run()
        models = self.models()
        current = ({ModelFiles.RECALL, ModelFiles.RANKING} <= set(models)
                   and all(m.get("data_run_id") == run_id for m in models.values())
                   and all(m.get("spec_version") == SPEC.version for m in models.values()))
        if current and not self.force:
            self._banner("train", f"the models trained on run {run_id}: skipped")
        else:
            self._banner("train", f"recall, ranking and sequence models on run {run_id}")
            self._run("train", "models.train", TrainingSettings)
            models = self.models()
        self.summary["models"] = {name: {"version": m.get("version"), "test_auc": m.get("test_auc"),
                                         "data_run_id": m.get("data_run_id")} for name, m in models.items()}

    def feast(self) -> None:
        store = "redis" if self.settings.profile == "services" else "sqlite"
        key = {"run_id": self.current_run(), "online_store": store,
               "redis": self.settings.redis_address if store == "redis" else None}
        if self.state.get(f"feast_{store}") == key and not self.force and store == "sqlite":
            self._banner("feast", f"materialised from run {key['run_id']} into {store}: skipped")
            return
        # Redis is a server that may have been emptied since: it is cheap to materialise again.
        self._banner("feast", f"apply + materialise run {key['run_id']} into {store}")
        if store == "redis":
            self._start_services()
        self._run("feast", "feature_repo.publish", FeastSettings, "--online-store", store)
        self._record(f"feast_{store}", key)

    def _start_services(self, names: str = "redis,redis-events,elasticsearch") -> None:
        from online import local_services

        wanted = [n for n in names.split(",") if local_services.running_pid(self.settings, n) is None]
        if wanted:
            self._run("services", "online.local_services", LocalServicesSettings, "up", "--only", ",".join(wanted))
            self.started_services += wanted

    def services(self) -> None:
        self._banner("services", "Redis, Elasticsearch, Feast server, Triton on 127.0.0.1 and the loaders")
        self._start_services("redis,redis-events,elasticsearch")
        loaded = self._loaded_versions()
        models = self.models()
        wanted = {"data_run": self.current_run(), "recall_model": models["recall"]["version"]}
        for loader, reads in (("redis", RedisLoaderSettings), ("es", ServicesSettings)):
            if not self.force and all(loaded.get(loader, {}).get(k) == v for k, v in wanted.items()):
                print(f"    {loader} already holds run {wanted['data_run']}: skipped", flush=True)
            else:
                self._run(f"{loader} loader", f"loaders.{loader}_loader", reads)
        self._run("triton repository", "loaders.triton_repo", ServicesSettings)
        self._start_services("feast,triton")

    def _loaded_versions(self) -> dict[str, dict]:
        import redis
        from elasticsearch import Elasticsearch

        from loaders import redis_layout

        found: dict[str, dict] = {}
        s = self.settings
        client = redis.Redis(host=s.redis_host, port=s.redis_port, socket_timeout=5)
        version = redis_layout.active_version(client, s.redis_prefix)
        if version is not None:
            found["redis"] = {k.decode(): v.decode() for k, v in
                              client.hgetall(redis_layout.meta_key(s.redis_prefix, version)).items()}
        search = Elasticsearch(s.elasticsearch_url, request_timeout=10)
        if search.indices.exists_alias(name=s.elasticsearch_alias):
            index = next(iter(search.indices.get_alias(name=s.elasticsearch_alias).body))
            found["es"] = search.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})
        return found

    def serve(self) -> subprocess.Popen:
        url = self.settings.url
        self._banner("serve", f"{self.settings.profile} profile under gunicorn on {url}")
        serving = self.settings.narrowed(ServingSettings)
        # The write routes need a token: the one given, or one made for this run. It reaches the server through
        # its environment, not its command line (which every user of the machine can read).
        token = serving.api_token or secrets.token_urlsafe(24)
        server = subprocess.Popen([sys.executable, "-m", "online.serve",
                                   *serving.model_copy(update={"api_token": None}).as_flags()],
                                  env={**os.environ, "RECSYS_API_TOKEN": token})
        self.summary["api_token"] = token
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/ready", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                self.stop(server)
                raise StageFailedError(f"the service did not get ready on {url}")
            time.sleep(0.5)
        self.summary["url"] = url
        return server

    def sample(self) -> dict:
        import pandas as pd

        users = pd.read_parquet(self.settings.current_export_dir / Export.USER_FILTER, columns=["userid"])["userid"]
        userid = int(users.iloc[0])
        url = f"{self.summary['url']}/users/{userid}/recommendations?k=10"
        body = requests.get(url, timeout=30).json()
        print(f"\n$ curl -s '{url}'")
        for rank, item in enumerate(body["item_list"], start=1):
            sources = ", ".join(item["sources"])
            print(f"  {rank:2d}. item {item['itemid']:6d}  score {item['score']:.3f}  from {sources}")
        self.summary["sample"] = {"userid": userid, "itemids": [i["itemid"] for i in body["item_list"]],
                                  "versions": body["versions"]}
        print(f"\nwrite routes (POST /users/<id>/events, /events, /admin/reload) take the token of this run:\n"
              f"$ curl -s -X POST {self.summary['url']}/users/{userid}/events -H 'Authorization: Bearer "
              f"{self.summary['api_token']}' -H 'Content-Type: application/json' "
              f"-d '{{\"itemid\": {body['item_list'][0]['itemid']}, \"rating\": 5}}'", flush=True)
        return body

    def stop(self, server: subprocess.Popen | None) -> None:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if self.started_services:
            subprocess.run([sys.executable, "-m", "online.local_services",
                            *self.settings.narrowed(LocalServicesSettings).as_flags(), "down", "--only",
                            ",".join(self.started_services)])


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    EndToEndSettings.add_arguments(parser)
    parser.add_argument("--exit", action="store_true", help="stop after printing the sample recommendations")
    parser.add_argument("--force", action="store_true", help="run every stage even where its outputs are current")
    args = parser.parse_args(argv)
    settings = EndToEndSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipeline = Pipeline(settings, args.force)
    server = None
    try:
        pipeline.batch()
        pipeline.train()
        pipeline.feast()
        if settings.profile == "services":
            pipeline.services()
        server = pipeline.serve()
        pipeline.sample()
        print("\nsummary:\n" + json.dumps(pipeline.summary, indent=2), flush=True)
        if args.exit:
            return pipeline.summary
        print(f"\nserving on {pipeline.summary['url']} (Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    except StageFailedError as failure:
        raise SystemExit(str(failure)) from None
    finally:
        pipeline.stop(server)
    return pipeline.summary


if __name__ == "__main__":
    main()
