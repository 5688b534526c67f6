"""Confine this process with Landlock, then exec the kernel:

    python -m jupyter_keyvault.isolation.launch --policy POLICY.json [--read-file CONNECTION_FILE] -- KERNEL ARGV...

The kernel's connection file lives in the Jupyter runtime dir, which kernels may not read
(it holds the server's jpserver-*.json and every other kernel's connection file). The launcher
grants read of exactly that one file (`--read-file`, a Landlock rule on the file's inode): the
kernel reads its own HMAC key and ports where jupyter_client wrote them, and no copy of the key
is ever made elsewhere. Stdlib only, so it adds little to kernel start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys

from . import landlock as ll
from .policy import IsolationPolicy, PolicyError, kernel_temp_root, plan_rules, rights_for, writes_freely

REFUSAL_EXIT = 78  # EX_CONFIG: the kernel was not started because isolation was required and impossible
_CONFIG_SUFFIX = "_config.py"


def apply(policy: IsolationPolicy, abi: int) -> int:
    """Confines the current process as `policy` says; returns the number of rules."""
    ruleset = ll.Ruleset(abi)
    try:
        rules = plan_rules(policy)
        for path, cls in rules:
            try:
                ruleset.allow(path, rights_for(cls, abi))
            except FileNotFoundError:
                continue  # removed since it was listed: nothing to grant
        ruleset.restrict_self()
    finally:
        ruleset.close()
    return len(rules)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _own_dir(parent_fd: int, name: str) -> int:
    """An fd of directory `name` in `parent_fd`, made if missing. The kernels' state dir is written
    by kernels, and this runs unconfined: a symlink (or file) a kernel left there is removed,
    never followed, so the copy below cannot be steered into a protected place."""
    for _ in range(2):
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except (NotADirectoryError, OSError) as exc:
            if isinstance(exc, PermissionError):
                raise
            os.unlink(name, dir_fd=parent_fd)  # a symlink or a file where our directory belongs
    raise PolicyError(f"cannot make the kernel directory {name!r}")


def _clear_dir(fd: int) -> None:
    for entry in os.listdir(fd):
        st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(entry, _DIR_FLAGS, dir_fd=fd)
            try:
                _clear_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(entry, dir_fd=fd)
        else:
            os.unlink(entry, dir_fd=fd)


def _copy_into(src_path: str, dst_fd: int, name: str) -> None:
    with open(src_path, "rb") as src:
        data = src.read()
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst_fd)
    with os.fdopen(fd, "wb") as dst:
        dst.write(data)


def mirror_ipython_dir(real_dir: str, mirror_dir: str) -> None:
    """Copies the user's IPython startup files and config into the kernels' own IPython dir.

    The real dir is read-only to kernels (a planted startup file would run in every later
    kernel). Kernels run with IPYTHONDIR=mirror, so history and caches stay writable; startup
    files and config there are reset from the real ones at every launch, dropping any extra.
    """
    parent, name = os.path.split(mirror_dir.rstrip("/"))
    parent_fd = os.open(parent, _DIR_FLAGS)
    try:
        mirror_fd = _own_dir(parent_fd, name)
    finally:
        os.close(parent_fd)
    try:
        real_profiles = set()
        if os.path.isdir(real_dir):
            real_profiles = {n for n in os.listdir(real_dir) if n.startswith("profile_")}
        mirror_profiles = {n for n in os.listdir(mirror_fd) if n.startswith("profile_")}
        for profile in sorted(real_profiles | mirror_profiles | {"profile_default"}):
            src = os.path.join(real_dir, profile)
            dst_fd = _own_dir(mirror_fd, profile)
            try:
                for entry in os.listdir(dst_fd):
                    if entry.endswith(_CONFIG_SUFFIX):
                        st = os.stat(entry, dir_fd=dst_fd, follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            sub = os.open(entry, _DIR_FLAGS, dir_fd=dst_fd)
                            _clear_dir(sub)
                            os.close(sub)
                            os.rmdir(entry, dir_fd=dst_fd)
                        else:
                            os.unlink(entry, dir_fd=dst_fd)
                startup_fd = _own_dir(dst_fd, "startup")
                try:
                    _clear_dir(startup_fd)
                    if os.path.isdir(src):
                        for entry in sorted(os.listdir(src)):
                            path = os.path.join(src, entry)
                            if entry.endswith(_CONFIG_SUFFIX) and os.path.isfile(path):
                                _copy_into(path, dst_fd, entry)
                        real_startup = os.path.join(src, "startup")
                        if os.path.isdir(real_startup):
                            for entry in sorted(os.listdir(real_startup)):
                                path = os.path.join(real_startup, entry)
                                if os.path.isfile(path):  # IPython runs only the files directly in startup/
                                    _copy_into(path, startup_fd, entry)
                finally:
                    os.close(startup_fd)
            finally:
                os.close(dst_fd)
    finally:
        os.close(mirror_fd)


def private_temp_dir(policy: IsolationPolicy) -> str | None:
    """The kernels' own temp dir (made 0700, a planted link replaced), when their temp root is not
    theirs to write: a protected path inside it (the runtime dir, a venv under /tmp) leaves it only
    listing, and then no cell runs ("No usable temporary directory"). None when the root is fine."""
    if not policy.kernel_state_dir or writes_freely(policy, kernel_temp_root(os.environ)):
        return None
    os.makedirs(policy.kernel_state_dir, mode=0o700, exist_ok=True)
    state_fd = os.open(policy.kernel_state_dir, _DIR_FLAGS)
    try:
        os.close(_own_dir(state_fd, os.path.basename(policy.kernel_temp_dir())))
    finally:
        os.close(state_fd)
    return policy.kernel_temp_dir()


def kernel_env_changes(policy: IsolationPolicy, argv: list[str]) -> dict[str, str]:
    """Environment the confined kernel needs: its IPython dir, a temp dir it may write when its own
    is not, and a pip target when its interpreter is read-only to it (the server's environment), so
    `%pip install` still works."""
    env: dict[str, str] = {}
    if policy.ipython_dir:
        env["IPYTHONDIR"] = policy.kernel_ipython_dir()
    temp_dir = private_temp_dir(policy)
    if temp_dir:
        env["TMPDIR"] = temp_dir  # looked at first by Python's tempfile, mktemp and most tools
    exe = shutil.which(argv[0]) or argv[0]
    exe = os.path.abspath(exe)
    if any(exe.startswith(p.rstrip("/") + "/") for p in policy.read_only_prefixes):
        target = os.path.join(policy.pip_target(), f"python{sys.version_info[0]}.{sys.version_info[1]}")
        os.makedirs(target, mode=0o700, exist_ok=True)
        env["PIP_TARGET"] = target
        env["PYTHONPATH"] = os.pathsep.join([target, *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _read_policy(source: str) -> IsolationPolicy:
    try:
        if source.startswith("fd:"):
            with os.fdopen(int(source[3:]), encoding="utf-8") as f:
                text = f.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot read isolation policy {source}: {exc}") from None
    return IsolationPolicy.from_json(text)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_keyvault.isolation.launch",
        description="Start a Jupyter kernel confined by Landlock (jupyter-keyvault kernel isolation).",
    )
    parser.add_argument("--policy", required=True, help="policy JSON file, or fd:N to read it from a descriptor")
    parser.add_argument("--read-file", action="append", default=[],
                        help="a file the kernel may read although it lies in a denied dir (its connection file)")
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the kernel command line")
    opts = parser.parse_args(args)
    argv = opts.argv[1:] if opts.argv[:1] == ["--"] else opts.argv
    if not argv:
        parser.error("no kernel command given after --")
    try:
        policy = _read_policy(opts.policy)
    except PolicyError as exc:
        print(f"jupyter-keyvault: refusing to start the kernel: {exc}", file=sys.stderr)
        return REFUSAL_EXIT
    policy.read_files = [*policy.read_files, *(os.path.abspath(f) for f in opts.read_file)]

    if policy.mode != "off":
        found = ll.detect(policy.mode)
        if not found.abi:
            if policy.mode == "on":
                print("jupyter-keyvault: refusing to start the kernel: isolate_kernels is 'on' but Landlock "
                      f"is unavailable ({found.reason}). Use 'auto' to allow unconfined kernels.", file=sys.stderr)
                return REFUSAL_EXIT
            print(f"jupyter-keyvault: kernel starts WITHOUT isolation: {found.reason}", file=sys.stderr)
        else:
            try:
                if policy.ipython_dir:
                    mirror_ipython_dir(policy.ipython_dir, policy.kernel_ipython_dir())
                os.environ.update(kernel_env_changes(policy, argv))
                ll.drop_all_capabilities()  # a root kernel would otherwise reach around Landlock
                apply(policy, found.abi)
            except (OSError, PolicyError) as exc:
                print(f"jupyter-keyvault: refusing to start the kernel: cannot apply isolation: {exc}",
                      file=sys.stderr)
                return REFUSAL_EXIT
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - exec the kernelspec argv as given, no shell
    except OSError as exc:
        print(f"jupyter-keyvault: cannot start kernel command {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":
    sys.exit(main())
