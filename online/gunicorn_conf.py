"""gunicorn settings for ``python -m online.serve``.

The service's modules (Flask, Feast, onnxruntime, the clients) are imported once here, in the master:
every worker is forked with them already loaded, so a worker started by a graceful reload (SIGHUP) only
loads the new versions (a second or two) instead of importing everything again (~10 s) while requests
wait. The versions themselves are still loaded by each worker (``online.wsgi``), never by the master,
so a reload picks up what ``current`` points to now.
"""

import online.app
import online.services  # noqa: F401
