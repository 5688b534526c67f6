"""The JupyterHub service of jupyter-keyvault: personal credentials, shared keys, quotas.

Run as `python -m jupyter_keyvault.hub` (a JupyterHub-managed service); see docs/jupyterhub.md.
"""

SERVICE_NAME_DEFAULT = "keyvault"
