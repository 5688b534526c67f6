# jupyter-keyvault autoload: a PYTHONSTARTUP file.
#
# The jupyter-keyvault server (c.KeyVault.autoload = True) starts kernels with
# PYTHONSTARTUP=<this file>, and KEYVAULT_PREVIOUS_PYTHONSTARTUP=<the user's own file> when
# there was one. IPython kernels run PYTHONSTARTUP in the user namespace at start
# (IPython.core.shellapp: exec_PYTHONSTARTUP), so this file:
#   1. inside an IPython kernel, loads the `keyvault` extension (namespace, %keyvault, and
#      the output and history scrubbing hooks);
#   2. in any case, runs the user's previous startup file the way Python/IPython would have
#      (executed in the user namespace).
# It never raises into the kernel's start: a failure is one warning line.
#
# It runs in the user's namespace, so it defines nothing there: no module docstring, no
# top-level imports, one function that deletes itself.


def _keyvault_autoload(this_globals):
    import os
    import runpy
    import sys

    def warn(what, exc=None):
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        line = " ".join(f"keyvault: warning: {what}{detail}".split())[:300]
        try:
            print(line, file=sys.stderr)
        except Exception:  # noqa: BLE001, S110 - a warning must never fail the caller
            pass
        try:
            kernel = getattr(ip, "kernel", None)
            if kernel is not None and getattr(kernel, "log", None) is not None:
                kernel.log.warning(line)
        except Exception:  # noqa: BLE001, S110 - a warning must never fail the caller
            pass

    ip = None
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        try:
            ip = ipython.get_ipython()
        except Exception:  # noqa: BLE001
            ip = None

    if ip is not None and getattr(ip, "kernel", None) is not None:
        try:
            ip.extension_manager.load_extension("keyvault")
        except Exception as exc:  # noqa: BLE001
            warn("could not load the keyvault extension (outputs are not scrubbed in this kernel)", exc)

    previous = os.environ.get("KEYVAULT_PREVIOUS_PYTHONSTARTUP", "")
    if not previous:
        return
    this_file = this_globals.get("__file__") or ""
    # The user namespace: IPython's when there is one (where PYTHONSTARTUP runs anyway; also
    # right under %run), else __main__'s globals (plain python runs PYTHONSTARTUP there).
    namespace = ip.user_ns if ip is not None else this_globals
    try:
        full = os.path.abspath(os.path.expanduser(previous))
        if this_file and os.path.realpath(full) == os.path.realpath(this_file):
            return  # pointing at ourselves: nothing more to run
        if not os.path.isfile(full):
            warn(f"PYTHONSTARTUP file {previous!r} not found")
            return
    except Exception as exc:  # noqa: BLE001
        warn(f"could not run PYTHONSTARTUP file {previous!r}", exc)
        return

    saved_file = namespace.get("__file__", None)
    had_file = "__file__" in namespace
    saved_argv = sys.argv
    try:
        namespace["__file__"] = previous
        sys.argv = [full]
        if ip is not None and full.endswith((".ipy", ".ipynb")):
            ip.safe_execfile_ipy(full, raise_exceptions=True)
        elif ip is not None:
            ip.safe_execfile(full, namespace, raise_exceptions=True)
        else:
            # The user's own startup file, run as Python runs it; its names land in the namespace.
            namespace.update(runpy.run_path(full, init_globals=namespace, run_name="__main__"))
    except SystemExit:
        pass
    except BaseException as exc:  # noqa: BLE001 - a broken startup file must not stop the kernel
        warn(f"error in PYTHONSTARTUP file {previous!r}", exc)
    finally:
        sys.argv = saved_argv
        if had_file:
            namespace["__file__"] = saved_file
        else:
            namespace.pop("__file__", None)


try:
    _keyvault_autoload(globals())
except BaseException:  # noqa: BLE001, S110 - never break a kernel's start
    pass
finally:
    del _keyvault_autoload
