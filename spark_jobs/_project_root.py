"""Imported by a job that spark-submit runs as a plain file: puts the project root on sys.path.

spark-submit starts ``spark_jobs/<job>.py`` with ``spark_jobs/`` as ``sys.path[0]``, so this module is
importable by its bare name there, and ``spark_jobs.*`` becomes importable after it runs, whether the
project is installed or not.
"""

import sys
from pathlib import Path

_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)
