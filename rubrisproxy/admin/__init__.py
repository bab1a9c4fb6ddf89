"""The admin listener: a JSON API over the running proxy's backends and servers."""

from ._api import AdminAPI, RunningProxy, admin_site

__all__ = ["AdminAPI", "RunningProxy", "admin_site"]
