"""`python -m jupyter_keyvault.hub` runs the service; `python -m jupyter_keyvault.hub admin ...` administers it."""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "admin":
        from .admin_cli import main as admin_main

        return admin_main(argv[1:])
    from .service import main as service_main

    return service_main(argv)


if __name__ == "__main__":
    sys.exit(main())
