"""The admin listener: a JSON API over the running proxy's backends and servers."""

from ._api import AdminAPI, AdminAPISite, APIError, Call, RunningProxy, admin_site, upgrade_failed
from ._channel import MAX_BODY

__all__ = ["MAX_BODY", "APIError", "AdminAPI", "AdminAPISite", "Call", "RunningProxy", "admin_site", "upgrade_failed"]
