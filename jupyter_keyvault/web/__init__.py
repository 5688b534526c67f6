"""HTTP plumbing shared by the server extension and the hub service (tornado and aiohttp only,
no jupyter_server): the proxied-URL check, the header policy, one relay, one credential-body
parser and one error-to-HTTP mapping."""
