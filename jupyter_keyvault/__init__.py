"""jupyter-keyvault: API keys kept encrypted on the Jupyter server."""

from ._version import __version__


def _jupyter_server_extension_points():
    from .server.app import KeyVaultApp

    return [{"module": "jupyter_keyvault", "app": KeyVaultApp}]


def _jupyter_labextension_paths():
    # The prebuilt sidebar, installed by the wheel under share/jupyter/labextensions as well.
    return [{"src": "labextension", "dest": "jupyter-keyvault"}]


__all__ = ["__version__"]
