"""The hub service's HTTP routes, one module per resource (as JupyterHub's own apihandlers/)."""

from __future__ import annotations

from .. import health
from ..common import GRANT_KINDS
from . import admin, credentials, page, proxy

_NAME = r"(?P<raw_name>[^/]+)"


def make_handlers(prefix: str) -> list:
    p = prefix.rstrip("/")
    kinds = "|".join(GRANT_KINDS)
    return [
        (rf"{p}/api/credentials/?", credentials.CredentialsHandler),
        (rf"{p}/api/credentials/{_NAME}/test/?", credentials.CredentialTestHandler),
        (rf"{p}/api/credentials/{_NAME}/value/?", credentials.CredentialValueHandler),
        (rf"{p}/api/credentials/{_NAME}/?", credentials.CredentialHandler),
        (rf"{p}/api/usage/?", credentials.UsageHandler),
        (rf"{p}/api/session/?", credentials.SessionHandler),
        (rf"{p}/api/audit/?", credentials.AuditHandler),
        (rf"{p}/api/status/?", credentials.StatusHandler),
        (rf"{p}/api/admin/shared/?", admin.SharedListHandler),
        (rf"{p}/api/admin/shared/{_NAME}/test/?", admin.SharedTestHandler),
        (rf"{p}/api/admin/shared/{_NAME}/grants/(?P<kind>{kinds})/(?P<subject>[^/]+)/?", admin.GrantHandler),
        (rf"{p}/api/admin/shared/{_NAME}/?", admin.SharedHandler),
        (rf"{p}/api/admin/limits/?", admin.LimitsHandler),
        (rf"{p}/api/admin/limits/(?P<kind>user|shared)/(?P<subject>[^/]+)/?", admin.LimitsHandler),
        (rf"{p}/api/admin/usage/?", admin.AdminUsageHandler),
        (rf"{p}/api/admin/audit/?", admin.AdminAuditHandler),
        (rf"{p}/proxy/openai/v1/realtime/?", proxy.RealtimeProxyHandler),
        (rf"{p}/proxy/(?P<provider_id>[a-z_]+)(?P<path>/.*)?", proxy.ProxyHandler),
        (rf"{p}/health/live", health.LiveHandler),
        (rf"{p}/health/ready", health.ReadyHandler),
        (rf"{p}/admin/?", page.AdminPageHandler),
        (rf"{p}/oauth_callback", page.OAuthCallbackHandler),
    ]
