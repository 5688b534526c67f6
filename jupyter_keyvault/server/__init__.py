"""The jupyter_server extension: the process that holds decrypted values (with the local vault).

`app.KeyVaultApp` wires it into jupyter_server; `manager.KeyVaultManager` owns the state;
handlers (`rest`, `kernel_api`, `oauth_pages`, `proxy`) read the manager from tornado settings.
"""
