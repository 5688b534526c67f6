"""Moved to `jupyter_keyvault.hub.peruser` (JupyterHub config code runs in the hub process).
This path keeps working for one release: existing jupyterhub_config.py files import it, and
`python -m jupyter_keyvault.peruser` still runs the same command."""

import sys

from .hub.peruser import (  # noqa: F401 - re-exported names
    DEFAULT_SECRET_ENV,
    configure_per_user_keys,
    derive_user_key,
    generate_secret,
    main,
    parse_hub_secret,
    rekey_vault,
    user_master_key_env,
)

if __name__ == "__main__":
    sys.exit(main())
