"""The JupyterHub service of jupyter-keyvault: personal credentials, shared keys, quotas.

Run as `python -m jupyter_keyvault.hub` (a JupyterHub-managed service); see docs/jupyterhub.md.
`service.py` is the application; `apihandlers/` its HTTP API, proxy and admin page.
"""

from .common import SERVICE_NAME_DEFAULT

__all__ = ["SERVICE_NAME_DEFAULT"]
