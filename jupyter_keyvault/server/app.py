"""The jupyter_server extension app: wires a KeyVaultManager into the server and adds routes.
Configuration is `c.KeyVault.*` (settings.KeyVault); this class adds nothing of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from functools import partial

from jupyter_server.extension.application import ExtensionApp
from tornado import web

from .. import envguard
from .._version import __version__
from ..isolation import IsolationPolicy, set_non_dumpable
from ..isolation.provisioner import KernelSpecNotWrappable, KeyVaultIsolatedProvisioner, isolated_spec
from ..scrub import install_log_filter
from ..settings import KERNEL_ENV_ALLOWLIST
from ..web.lifecycle import freeze_startup_heap
from . import jupyter_ai, kernel_api, oauth_pages, proxy, rest
from .iopub import scrubbing_connection_class
from .manager import KeyVaultManager


class KeyVaultApp(ExtensionApp):
    """Serves /keyvault/api/*, /keyvault/kernel/*, /keyvault/oauth/* and /keyvault/proxy/*, and the
    provider proxy again on the loopback lane for this server's kernels (lane.py)."""

    name = "jupyter_keyvault"
    extension_url = "/keyvault/api/status"
    load_other_extensions = True
    _unwrappable: dict[str, str]  # kernelspec name -> why kernel isolation cannot start it
    _lane = None  # the loopback proxy (server/lane.py), when on

    def initialize_settings(self):
        env_snapshot = dict(os.environ)  # read before the secrets are removed from it below
        server = self.serverapp
        manager = self.manager = KeyVaultManager(
            parent=self, log=self.log, kernel_manager=server.kernel_manager, session_manager=server.session_manager,
            connection_url=server.connection_url, root_dir=server.root_dir, env=env_snapshot)
        self._isolate_kernels(manager)
        self._install_log_filters(manager)
        if manager.scrub_server_environ:
            removed = envguard.remove_secret_env(
                os.environ, manager.secret_env_patterns, manager.credential_env_names(), KERNEL_ENV_ALLOWLIST)
            if removed:
                self.log.info("jupyter-keyvault: removed %d secret variable(s) from the server environment: %s",
                              len(removed), ", ".join(removed))
        status = manager.vault.status()
        for warning in status["warnings"]:
            self.log.warning("jupyter-keyvault: %s", warning)
        self.log.info("jupyter-keyvault %s: vault at %s, master key from %s", __version__, status["location"],
                      status["protection"]["source"])
        self.settings["keyvault_manager"] = manager
        self._open_loopback_lane(manager)
        self._guard_kernel_env(manager)
        self._install_output_filters(manager)
        server.io_loop.call_later(0, partial(asyncio.ensure_future, self._settle(manager)))
        if manager.jupyter_ai_secrets:  # once every extension (jupyter-ai's among them) has set its settings
            server.io_loop.call_later(0, jupyter_ai.install, server.web_app.settings, manager, self.log)
        server.io_loop.call_later(0, partial(asyncio.ensure_future, manager.start_lifetimes()))

    def _open_loopback_lane(self, manager: KeyVaultManager) -> None:
        """Bind the loopback proxy now, so every kernel is told its URL (server/lane.py)."""
        if not manager.loopback_proxy or manager.server_url:
            return
        from .lane import LoopbackLane

        try:
            self._lane = LoopbackLane(manager, self.serverapp.base_url, manager.loopback_proxy_port)
        except OSError as exc:
            self.log.warning("jupyter-keyvault: no loopback proxy (127.0.0.1:%d: %s); kernels use the server's URL",
                             manager.loopback_proxy_port, exc)
            return
        manager.loopback_url = self._lane.url
        self.serverapp.io_loop.call_later(0, self._lane.listen)
        self.log.info("jupyter-keyvault: kernels reach the proxy at %s", self._lane.url)

    async def _settle(self, manager: KeyVaultManager) -> None:
        """Once running: teach the scrubber every stored value, then freeze the startup heap."""
        try:
            await manager.learn_values()
        finally:
            if manager.freeze_startup_heap:
                freeze_startup_heap(self.log, "c.KeyVault.freeze_startup_heap")

    def initialize_handlers(self):
        self.handlers.extend(rest.handlers + kernel_api.handlers + oauth_pages.handlers + proxy.handlers)

    def _isolate_kernels(self, manager: KeyVaultManager):
        """Every kernel this server starts goes through the keyvault provisioner: its stdout and stderr
        are scrubbed before they reach this server's console, and, where isolation is in force, it
        starts under the Landlock launcher. This process becomes non-dumpable then (no same-uid
        ptrace, no core dumps with values in them)."""
        status, policy = manager.isolation_status(), manager.isolation_policy
        KeyVaultIsolatedProvisioner.output_scrubber = manager.scrubber.stream
        KeyVaultIsolatedProvisioner.policy_factory = lambda _provisioner, _kwargs: policy or IsolationPolicy(mode="off")
        specs = self.serverapp.kernel_spec_manager
        get_spec = specs.get_kernel_spec
        mode = manager.isolate_kernels if policy is not None else "off"
        self._unwrappable = {}

        def get_kernel_spec(kernel_name, *args, **kwargs):
            spec = get_spec(kernel_name, *args, **kwargs)
            try:
                return isolated_spec(spec, kernel_name, mode, provision_when_off=True)
            except KernelSpecNotWrappable as exc:
                if mode != "off":  # still listed (so the user sees it), but start_kernel refuses it, saying why
                    self._unwrappable[kernel_name] = str(exc)
                return spec

        specs.get_kernel_spec = get_kernel_spec  # the instance the kernel manager asks for every start
        if policy is None:
            self.log.warning("jupyter-keyvault: kernels are NOT isolated (%s); code in a notebook can read the "
                             "vault, the runtime dir and this server's memory", status["detail"])
            return
        set_non_dumpable()
        self.log.info("jupyter-keyvault: kernel isolation %s: %s", mode, status["detail"])
        for note in status["limitations"]:
            self.log.info("jupyter-keyvault: kernel isolation limit: %s", note)
        if manager.isolate_terminals:
            self._isolate_terminals(policy)

    def _isolate_terminals(self, policy):
        """New terminals start through the same launcher and policy as kernels."""
        import shlex
        import shutil
        import sys

        from jupyter_core.paths import jupyter_runtime_dir

        from ..isolation.provisioner import wrap_kernel_cmd

        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        policy_file = os.path.join(runtime, f"keyvault-terminal-isolation-{os.getpid()}.json")
        fd = os.open(policy_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(policy.to_json())
        terminado = self.serverapp.terminado_settings
        shell = terminado.get("shell_command")
        if isinstance(shell, str):
            shell = shlex.split(shell)
        if not shell:  # as jupyter_server_terminals chooses it
            shell = [os.environ.get("SHELL") or shutil.which("sh") or "/bin/sh"]
            if not sys.stdout.isatty():
                shell.append("-l")
        wrapped = wrap_kernel_cmd(list(shell), policy_file, kernel_name="terminal")
        terminado["shell_command"] = wrapped  # for a terminal manager created after this extension
        manager = self.serverapp.web_app.settings.get("terminal_manager") if self.serverapp.web_app else None
        if manager is not None:  # ... or one created before it
            manager.shell_command = wrapped
        self.log.info("jupyter-keyvault: terminals are isolated like kernels")

    def _install_log_filters(self, manager: KeyVaultManager):
        """Redact on every handler of every logger that exists now (the access log included)."""
        loggers: list[logging.Logger] = [logging.getLogger(), self.log, self.serverapp.log]
        loggers += [logging.getLogger(n) for n in ("tornado.access", "tornado.application", "tornado.general",
                                                   "jupyter_keyvault")]
        loggers += [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
        install_log_filter(manager.scrubber, loggers)

    def _install_output_filters(self, manager: KeyVaultManager):
        if manager.scrub_iopub:
            settings = self.settings  # merged into the web app's settings after initialize_settings
            base = settings.get("kernel_websocket_connection_class")
            if base is not None and hasattr(base, "handle_outgoing_message"):
                settings["kernel_websocket_connection_class"] = scrubbing_connection_class(
                    base, lambda: manager.scrubber)
            else:
                self.log.warning("jupyter-keyvault: this server's kernel connection cannot be filtered; "
                                 "outputs are scrubbed in kernels and on save only")
        self.serverapp.contents_manager.register_pre_save_hook(manager.pre_save_hook)

    def _guard_kernel_env(self, manager: KeyVaultManager):
        """Every kernel start (and env update) goes through manager.kernel_env."""
        km = self.serverapp.kernel_manager
        start, update = km.start_kernel, getattr(km, "update_env", None)

        async def start_kernel(*args, **kwargs):
            isolation = manager.isolation_status()
            if manager.isolate_kernels == "on" and not isolation["enforced"]:
                raise web.HTTPError(503, f"jupyter-keyvault: no kernel started: {isolation['detail']}")
            if manager.isolation_policy is not None:
                name = kwargs.get("kernel_name") or km.default_kernel_name
                with contextlib.suppress(Exception):  # unknown kernels etc.: jupyter_server reports them itself
                    km.kernel_spec_manager.get_kernel_spec(name)  # records a kernelspec isolation cannot wrap
                if name in self._unwrappable:
                    raise web.HTTPError(400, f"jupyter-keyvault: no kernel started: {self._unwrappable[name]}")
            kwargs["env"] = manager.kernel_env(kwargs.get("env"))
            return await start(*args, **kwargs)

        km.start_kernel = start_kernel
        if update is not None:
            def update_env(*, kernel_id, env):
                return update(kernel_id=kernel_id, env=manager.kernel_env(env))

            km.update_env = update_env

    async def stop_extension(self):
        # The provisioner's hooks are class-level: a later server in this process sets its own.
        KeyVaultIsolatedProvisioner.output_scrubber = None
        KeyVaultIsolatedProvisioner.policy_factory = None
        if self._lane is not None:
            await self._lane.close()
        manager = getattr(self, "manager", None)
        if manager is not None:  # None when start-up failed: jupyter_server's own cleanup must still run
            await manager.close()


main = launch_new_instance = KeyVaultApp.launch_instance
