"""A jupyter_client kernel provisioner that starts any kernelspec's argv under the Landlock launcher.

Registered as the `keyvault-isolated` entry point of `jupyter_client.kernel_provisioners`. The server
decides the policy: it sets `KeyVaultIsolatedProvisioner.policy_factory` (called per kernel launch
with the provisioner and the launch kwargs); without one, `default_policy()` of the current user's
Jupyter paths is used, with the kernel's working directory as the notebook root.
"""

from __future__ import annotations

import codecs
import os
import subprocess
import sys
import threading
from typing import Any, Callable, ClassVar

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

from .policy import IsolationPolicy, default_policy

LAUNCHER_MODULE = "jupyter_keyvault.isolation.launch"
PROVISIONER_NAME = "keyvault-isolated"


class KernelSpecNotWrappable(RuntimeError):
    """The kernelspec's argv cannot be started under the isolation launcher."""


def wrap_kernel_cmd(
    cmd: list[str],
    policy_file: str,
    *,
    read_files: list[str] = (),
    python: str | None = None,
    kernel_name: str = "",
) -> list[str]:
    """`cmd` started through the launcher: python -m ...launch --policy F [--read-file X] -- cmd..."""
    label = f"kernelspec {kernel_name!r}" if kernel_name else "the kernel command"
    if not isinstance(cmd, (list, tuple)) or not cmd:
        raise KernelSpecNotWrappable(f"{label} has an empty argv: nothing to start under kernel isolation")
    if not all(isinstance(a, str) for a in cmd) or not cmd[0].strip():
        raise KernelSpecNotWrappable(f"{label} has an argv whose first item is not a program: {cmd!r}")
    if cmd[0] == sys.executable and cmd[1:3] == ["-m", LAUNCHER_MODULE]:
        return list(cmd)  # already wrapped (a restart reuses the command)
    wrapped = [python or sys.executable, "-m", LAUNCHER_MODULE, "--policy", policy_file]
    for f in read_files:
        wrapped += ["--read-file", f]
    return [*wrapped, "--", *cmd]


class KeyVaultIsolatedProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernel process is confined by Landlock before it execs the kernel,
    and whose stdout and stderr (fds 1 and 2: subprocesses, C libraries, sys.__stderr__) pass through
    the server's scrubber before they reach the server's own console and logs."""

    # Set by the server: (provisioner, launch kwargs) -> policy. Class-level so every kernel gets it.
    policy_factory: ClassVar[Callable[[KeyVaultIsolatedProvisioner, dict[str, Any]], IsolationPolicy] | None] = None
    # Set by the server: a factory of stream scrubbers (text in, redacted text out, split-safe).
    output_scrubber: ClassVar[Callable[[], Any] | None] = None

    _policy_file: str | None = None

    def _make_policy(self, kwargs: dict[str, Any]) -> IsolationPolicy:
        factory = type(self).policy_factory
        if factory is not None:
            return factory(self, kwargs)
        return default_policy(notebook_root=kwargs.get("cwd") or os.getcwd())

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        policy = self._make_policy(kwargs)
        km = self.parent
        if policy.mode != "off" and km is not None and policy.connection_dir:
            # jupyter_server writes connection files into the runtime dir, but a bare KernelManager
            # defaults to a tempfile in /tmp, where every kernel could read every other kernel's key.
            current = os.path.realpath(km.connection_file) if km.connection_file else ""
            if not current.startswith(policy.connection_dir.rstrip("/") + "/"):
                os.makedirs(policy.connection_dir, mode=0o700, exist_ok=True)
                km.connection_file = os.path.join(policy.connection_dir, f"kernel-{self.kernel_id}.json")
        kwargs = await super().pre_launch(**kwargs)
        if policy.mode == "off":
            return kwargs
        connection_file = getattr(km, "connection_file", "") or ""
        if not connection_file:
            raise KernelSpecNotWrappable("kernel isolation needs a kernel manager that writes a connection file")
        # The policy sits next to the connection file, in the runtime dir that kernels cannot read.
        self._policy_file = os.path.splitext(connection_file)[0] + "-isolation.json"
        fd = os.open(self._policy_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(policy.to_json())
        kernel_name = getattr(km, "kernel_name", "") or ""
        kwargs["cmd"] = wrap_kernel_cmd(
            kwargs.get("cmd") or [],
            self._policy_file,
            read_files=[connection_file],
            kernel_name=kernel_name,
        )
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        make_stream = type(self).output_scrubber
        if make_stream is None:
            return await super().launch_kernel(cmd, **kwargs)
        piped = [name for name in ("stdout", "stderr") if kwargs.get(name) is None]  # a caller's own stream stays
        for name in piped:
            kwargs[name] = subprocess.PIPE  # every launch, restarts included
        info = await super().launch_kernel(cmd, **kwargs)
        targets = {"stdout": sys.__stdout__, "stderr": sys.__stderr__}
        for name in piped:
            pipe, target = getattr(self.process, name), targets[name]
            if pipe is not None and target is not None:
                threading.Thread(target=_pump, args=(pipe, target, make_stream()), daemon=True,
                                 name=f"keyvault-kernel-output-{self.kernel_id}").start()
        return info

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        if not restart and self._policy_file:
            try:
                os.unlink(self._policy_file)
            except FileNotFoundError:
                pass
            self._policy_file = None


def _pump(pipe, target, stream) -> None:
    """Copy a kernel's output pipe to the server's stream, scrubbed; ends when the kernel closes it."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        while True:
            chunk = pipe.read1(65536)
            if not chunk:
                break
            text = stream.feed(decoder.decode(chunk))
            if text:
                target.write(text)
                target.flush()
        target.write(stream.feed(decoder.decode(b"", final=True)) + stream.flush())
        target.flush()
    except (OSError, ValueError):  # the server's stream closed at shutdown: nothing left to protect
        pass
    finally:
        pipe.close()


def isolated_spec(kernel_spec: Any, kernel_name: str, mode: str, *, provision_when_off: bool = False) -> Any:
    """`kernel_spec` set to start through the isolating provisioner, whatever its kernel.json says.

    A kernelspec that names a provisioner of its own (remote, container, ...) cannot be wrapped:
    with mode "on" that is an error naming the kernelspec; with "auto" it is left as it is.
    """
    if mode == "off" and not provision_when_off:
        return kernel_spec
    if not kernel_spec.argv:
        raise KernelSpecNotWrappable(f"kernelspec {kernel_name!r} has an empty argv: nothing to start under "
                                     "kernel isolation")
    named = (kernel_spec.metadata or {}).get("kernel_provisioner", {}).get("provisioner_name")
    if named not in (None, "local-provisioner", PROVISIONER_NAME):
        if mode == "on":
            raise KernelSpecNotWrappable(
                f"kernelspec {kernel_name!r} names its own kernel provisioner {named!r}, which kernel isolation "
                "cannot wrap; remove it from the kernel.json or set c.KeyVault.isolate_kernels = 'auto'")
        return kernel_spec
    metadata = dict(kernel_spec.metadata or {})
    metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER_NAME, "config": {}}
    kernel_spec.metadata = metadata
    return kernel_spec


class IsolatingKernelSpecManager(KernelSpecManager):
    """Hands out every kernelspec set to start through `keyvault-isolated`, so no kernel.json
    (including one a kernel wrote) can opt out. Install with
    `c.ServerApp.kernel_spec_manager_class`, or by replacing the server's instance at start-up."""

    isolate_kernels = Unicode("on", help="'on' | 'auto' | 'off', as c.KeyVault.isolate_kernels").tag(config=True)

    def get_kernel_spec(self, kernel_name: str) -> Any:
        return isolated_spec(super().get_kernel_spec(kernel_name), kernel_name, self.isolate_kernels)
