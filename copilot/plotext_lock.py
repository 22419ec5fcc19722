"""The one lock around plotext, whose module-level API draws on a single global figure.

Every caller that builds a plotext chart (the report's text charts, the app's live
panels, from any thread) holds `PLOTEXT_LOCK` from `clear_figure()` to `build()`;
two builds interleaved would draw into each other. Nothing else lives here.
"""

from __future__ import annotations

import threading

PLOTEXT_LOCK = threading.Lock()
