"""streamer: training-run logs from object storage, streamed as file downloads."""

from __future__ import annotations

__version__ = "0.1.0"
