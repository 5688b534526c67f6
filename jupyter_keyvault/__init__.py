"""jupyter-keyvault: API keys kept encrypted on the Jupyter server."""

from ._version import __version__

__all__ = ["__version__"]
