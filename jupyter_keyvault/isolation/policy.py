"""What an isolated kernel may touch, and how that becomes Landlock rules.

Landlock only allows (there is no "deny" rule) and a right granted on a directory holds for
everything beneath it. So "deny X" is built as: walk from `/` towards X; every directory on the
way (an *ancestor* of a protected path) gets READ_DIR only; every other existing entry of an
ancestor gets its class's rights wholesale; X gets its own class. Consequences, by design:

- An ancestor keeps only listing: in it, the kernel cannot create, delete or rename entries
  (create or delete rights there would be inherited by the protected child: a kernel could plant
  `vault.db-journal`, delete the vault, or create a config file that does not exist yet).
  Existing entries of an ancestor stay fully usable. Entries created after the kernel started
  are not covered until the kernel restarts.
- Names (and `stat`) of entries in a protected directory stay visible; their contents do not.
- Symlinks are never followed when a rule is made; protected paths are resolved first, so a
  protection binds the real directory, whatever link leads to it.

Three classes: `deny` (no read, no write), `read` (read and execute), `full` (everything).
Stricter wins when one path is named twice; nothing may be made writable inside a `deny` path.
Stdlib only (the launcher imports this before exec); `default_policy()` imports jupyter_core lazily.
"""

from __future__ import annotations

import json
import os
import site
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from . import landlock as ll

DENY, READ, FULL = "deny", "read", "full"
ANCESTOR = "ancestor"  # a directory on the way to a protected path: READ_DIR only
READ_FILE_ONLY = "read-file"  # one file the kernel must read inside a denied directory (its connection file)
_STRICTNESS = {DENY: 0, READ: 1, FULL: 2}
MODES = ("on", "auto", "off")
POLICY_VERSION = 1
KERNEL_STATE_DIRNAME = "jupyter-keyvault-kernel"
# Granted to kernels (not files this code creates), so /tmp stays usable unless something protected lives there.
SHARED_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # nosec B108  # noqa: S108 - granted to kernels


class PolicyError(ValueError):
    """The policy cannot be built or read; the message says which path or field, and why."""


@dataclass
class IsolationPolicy:
    """Plain data, JSON-serialisable: the server builds it, the launcher applies it."""

    mode: str = "on"  # "on": refuse to start a kernel without Landlock; "auto": start it unconfined
    deny: list[str] = field(default_factory=list)
    read_only: list[str] = field(default_factory=list)
    writable: list[str] = field(default_factory=list)
    read_files: list[str] = field(default_factory=list)  # exact files readable inside denied dirs
    kernel_state_dir: str = ""  # writable, never imported or read by the server: pip target, IPython dir mirror
    ipython_dir: str = ""  # the user's real IPython dir (read-only to kernels; mirrored into kernel_state_dir)
    read_only_prefixes: list[str] = field(default_factory=list)  # interpreters whose kernels get the pip target
    connection_dir: str = ""  # a denied dir where connection files must live (the Jupyter runtime dir)
    notes: list[str] = field(default_factory=list)  # limitations found while building, for status/logs
    version: int = POLICY_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> IsolationPolicy:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PolicyError(f"isolation policy is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != POLICY_VERSION:
            raise PolicyError(f"isolation policy must be a JSON object with version {POLICY_VERSION}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise PolicyError(f"isolation policy has unknown field(s): {', '.join(sorted(unknown))}")
        policy = cls(**data)
        if policy.mode not in MODES:
            raise PolicyError(f"isolation mode must be one of {', '.join(MODES)}, not {policy.mode!r}")
        for name in ("deny", "read_only", "writable", "read_files", "read_only_prefixes", "notes"):
            value = getattr(policy, name)
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise PolicyError(f"isolation policy field {name!r} must be a list of strings")
        for name in ("deny", "read_only", "writable", "read_files", "read_only_prefixes"):
            for p in getattr(policy, name):
                if not os.path.isabs(p):
                    raise PolicyError(f"isolation policy path in {name!r} must be absolute: {p!r}")
        return policy

    def pip_target(self) -> str:
        """Where `%pip install` goes for kernels whose interpreter is read-only to them."""
        return os.path.join(self.kernel_state_dir, "site-packages")

    def kernel_ipython_dir(self) -> str:
        return os.path.join(self.kernel_state_dir, "ipython")

    def kernel_temp_dir(self) -> str:
        """TMPDIR of kernels whose own temp root holds protected paths (see `writes_freely`)."""
        return os.path.join(self.kernel_state_dir, "tmp")


def kernel_temp_root(env: Mapping[str, str]) -> str:
    """The directory a process with `env` writes temp files to first, as Python's tempfile picks it."""
    default = SHARED_TEMP_DIRS[0]  # names where a process writes; nothing is created here
    return next((env[name] for name in ("TMPDIR", "TEMP", "TMP") if env.get(name)), default)


def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def classify(policy: IsolationPolicy) -> dict[str, str]:
    """Real path → class, stricter class winning; writable entries inside a denied path are refused."""
    classes: dict[str, str] = {}
    for cls, paths in ((DENY, policy.deny), (READ, policy.read_only), (FULL, policy.writable)):
        for p in paths:
            real = _real(p)
            if real in classes and _STRICTNESS[classes[real]] <= _STRICTNESS[cls]:
                continue
            classes[real] = cls
    denied = [p for p, c in classes.items() if c == DENY]
    for p, c in list(classes.items()):
        if c != DENY and any(_is_within(p, d) and p != d for d in denied):
            raise PolicyError(f"{p} cannot be {'writable' if c == FULL else 'readable'} to kernels: "
                              f"it is inside the protected {next(d for d in denied if _is_within(p, d))}")
    return classes


def writes_freely(policy: IsolationPolicy, path: str | os.PathLike) -> bool:
    """Whether kernels may create and delete entries in the directory `path` and everywhere beneath
    it: its class is full and no protected path lies inside it (that would make it an ancestor)."""
    real = _real(path)
    if not os.path.isdir(real):
        return False
    classes = classify(policy)
    owner = max((p for p in classes if _is_within(real, p)), key=len, default=None)
    if owner is not None and classes[owner] != FULL:
        return False
    return not any(c != FULL and p != real and _is_within(p, real) for p, c in classes.items())


def plan_rules(policy: IsolationPolicy) -> list[tuple[str, str]]:
    """The (path, class) rules that implement `policy` on the filesystem as it is now.

    Classes: full / read (whole hierarchy), ancestor (READ_DIR on that directory only, hence
    inherited below: listing), read-file (one file). Denied paths get no rule at all.
    """
    classes = classify(policy)
    rules: list[tuple[str, str]] = []

    def descendants_differ(directory: str, cls: str) -> bool:
        return any(_is_within(p, directory) and p != directory and c != cls for p, c in classes.items())

    def visit(path: str, inherited: str, is_dir: bool) -> None:
        cls = classes.get(path, inherited)
        if cls == DENY:
            return
        if is_dir and descendants_differ(path, cls):
            rules.append((path, ANCESTOR))
            try:
                entries = sorted(os.scandir(path), key=lambda e: e.name)
            except OSError:
                return  # the server cannot list it either: nothing beneath is granted
            for entry in entries:
                if entry.is_symlink():
                    continue  # a link grants nothing; its target is covered where it lives
                try:
                    child_is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                visit(entry.path, cls, child_is_dir)
        else:
            rules.append((path, cls))

    visit("/", FULL, True)
    for f in policy.read_files:
        real = _real(f)
        if os.path.isfile(real):
            rules.append((real, READ_FILE_ONLY))
    return rules


def rights_for(cls: str, abi: int) -> int:
    if cls == FULL:
        return ll.handled_fs_rights(abi)
    if cls == READ:
        return ll.READ_FILE | ll.READ_DIR | ll.EXECUTE
    if cls == ANCESTOR:
        return ll.READ_DIR
    if cls == READ_FILE_ONLY:
        return ll.READ_FILE
    raise PolicyError(f"unknown rule class {cls!r}")


def interpreter_paths() -> list[str]:
    """Everything the server's interpreter imports from: prefixes, site-packages (user site too), stdlib."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if user_site:
        paths.add(user_site)
        paths.add(os.path.join(site.getuserbase(), "bin"))  # console scripts a later `jupyter lab` would run
    for key in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):
        try:
            paths.add(sysconfig.get_path(key))
        except KeyError:
            pass
    return sorted(p for p in paths if p)


def build_policy(
    *,
    mode: str = "on",
    vault_dir: str | os.PathLike | None = None,
    key_files: list[str | os.PathLike] = (),
    runtime_dir: str | os.PathLike | None = None,
    config_dirs: list[str | os.PathLike] = (),
    user_config_dir: str | os.PathLike | None = None,
    data_dirs: list[str | os.PathLike] = (),
    ipython_dir: str | os.PathLike | None = None,
    notebook_root: str | os.PathLike | None = None,
    kernel_state_dir: str | os.PathLike | None = None,
    protect_interpreter: bool = True,
    extra_denied: list[str | os.PathLike] = (),
    extra_read_only: list[str | os.PathLike] = (),
    extra_writable: list[str | os.PathLike] = (),
    create_missing: bool = True,
) -> IsolationPolicy:
    """A policy from plain paths (no traitlets). `create_missing` makes the user's absent protected
    directories (vault, runtime, user config, IPython, 0700) so that their parent does not lose
    create rights for nothing."""
    if mode not in MODES:
        raise PolicyError(f"isolate_kernels must be one of {', '.join(MODES)}, not {mode!r}")
    deny = [p for p in [vault_dir, runtime_dir, *key_files, *extra_denied] if p]
    read_only = [*config_dirs, *data_dirs, *extra_read_only]
    if user_config_dir:
        read_only.append(user_config_dir)
    if ipython_dir:
        read_only.append(ipython_dir)
    prefixes: list[str] = []
    if protect_interpreter:
        prefixes = [_real(p) for p in {sys.prefix, sys.base_prefix}]
        read_only += interpreter_paths()
    state_dir = _real(kernel_state_dir or default_kernel_state_dir())
    writable = [state_dir, *SHARED_TEMP_DIRS, *extra_writable]
    if notebook_root:
        writable.append(notebook_root)
    if create_missing:
        # Only the user's own places; a missing system dir (/etc/jupyter) just makes its parent an ancestor.
        for d in [vault_dir, runtime_dir, user_config_dir, ipython_dir, state_dir]:
            if d and not os.path.exists(d):
                try:
                    os.makedirs(d, mode=0o700, exist_ok=True)
                except OSError:
                    pass  # still protected: a kernel cannot create it either (its parent is an ancestor)
    policy = IsolationPolicy(
        mode=mode,
        deny=[_real(p) for p in deny],
        read_only=[_real(p) for p in read_only],
        writable=[_real(p) for p in writable],
        kernel_state_dir=state_dir,
        ipython_dir=_real(ipython_dir) if ipython_dir else "",
        read_only_prefixes=prefixes,
        connection_dir=_real(runtime_dir) if runtime_dir else "",
    )
    classes = classify(policy)  # raises on writable-inside-denied, before anything is launched
    if policy.connection_dir and classes.get(policy.connection_dir) != DENY:
        raise PolicyError(f"the runtime dir {policy.connection_dir} must be denied to kernels")
    if classes.get(state_dir) != FULL:
        raise PolicyError(f"the kernel state dir {state_dir} must not be inside a protected path")
    policy.notes = limitations(policy)
    return policy


def limitations(policy: IsolationPolicy) -> list[str]:
    """Writable roots that lost create rights because protected paths live beneath them."""
    classes = classify(policy)
    notes = []
    for p, c in classes.items():
        if c != FULL:
            continue
        inner = sorted(q for q, qc in classes.items() if q != p and _is_within(q, p) and qc != FULL)
        if inner:
            notes.append(f"kernels cannot create or delete entries directly in {p} (it contains protected "
                         f"{', '.join(inner)}); existing entries and subdirectories stay usable")
    temp_root = kernel_temp_root(os.environ)  # the server's; kernels inherit it unless their env says otherwise
    if policy.kernel_state_dir and not writes_freely(policy, temp_root):
        notes.append(f"kernels get TMPDIR={policy.kernel_temp_dir()}, which is not cleaned at boot: {temp_root} "
                     "is not theirs to write; code that names it directly still cannot create entries there")
    return notes


# Files a later login shell runs: a line added there (PATH, PYTHONPATH) would reach the next server start.
SHELL_STARTUP_FILES = (".bashrc", ".bash_profile", ".bash_login", ".profile", ".zshrc", ".zshenv", ".zprofile",
                       ".zlogin", ".pam_environment")


def shell_startup_files(home: str | None = None) -> list[str]:
    """The user's shell startup files, present or not (a kernel may neither edit nor create them)."""
    home = home or os.path.expanduser("~")
    return [os.path.join(home, name) for name in SHELL_STARTUP_FILES]


def default_kernel_state_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, KERNEL_STATE_DIRNAME)


def default_policy(
    *,
    mode: str = "on",
    vault_dir: str | os.PathLike | None = None,
    key_files: list[str | os.PathLike] = (),
    notebook_root: str | os.PathLike | None = None,
    extra_writable: list[str | os.PathLike] = (),
    extra_read_only: list[str | os.PathLike] = (),
    extra_denied: list[str | os.PathLike] = (),
) -> IsolationPolicy:
    """The policy for this user's Jupyter paths (honours JUPYTER_*_DIR, IPYTHONDIR, XDG)."""
    from jupyter_core.paths import (
        jupyter_config_dir,
        jupyter_config_path,
        jupyter_data_dir,
        jupyter_path,
        jupyter_runtime_dir,
    )

    data_dir = jupyter_data_dir()
    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
    return build_policy(
        mode=mode,
        vault_dir=vault_dir or os.path.join(data_dir, "keyvault"),
        key_files=key_files,
        runtime_dir=jupyter_runtime_dir(),
        config_dirs=jupyter_config_path(),
        user_config_dir=jupyter_config_dir(),
        # kernelspecs (a kernel.json could name another provisioner), lab extensions (browser code), trust db
        data_dirs=jupyter_path(),
        ipython_dir=ipython_dir,
        notebook_root=notebook_root or os.getcwd(),
        extra_writable=extra_writable,
        extra_read_only=[*shell_startup_files(), *extra_read_only],
        extra_denied=extra_denied,
    )


def resolve_mode(mode: str, abi: int) -> bool:
    """Whether kernels get the sandbox; "on" without Landlock is the caller's error to raise."""
    if mode not in MODES:
        raise PolicyError(f"isolate_kernels must be one of {', '.join(MODES)}, not {mode!r}")
    return mode == "on" or (mode == "auto" and abi > 0)


__all__ = [
    "IsolationPolicy",
    "PolicyError",
    "build_policy",
    "default_policy",
    "plan_rules",
    "rights_for",
    "resolve_mode",
    "writes_freely",
]
