"""Live follow (SPEC section 9): a run's log sent as it grows (`stream`), Get Logs pages
that wait for new lines (`wait`), and the one poller per followed log they share (`watch`)."""

from __future__ import annotations

from .stream import FollowCut, follow_log
from .watch import Watches

__all__ = ["FollowCut", "Watches", "follow_log"]
