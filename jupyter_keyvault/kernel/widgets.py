"""`keyvault.panel()`: manage credentials from a notebook (ipywidgets 8; JupyterLab 4, Notebook 7).

The value typed into the password field travels once, from the browser to the kernel and on to the
Jupyter server (or the local vault when the kernel was not started by a keyvault server), and is
never sent back: it is kept out of every widget trait, so it is in no comm message from the kernel,
no ``echo_update``, no widget state saved in the notebook, and no output.

Selectors (CSS classes, stable; browser tests rely on them)
-----------------------------------------------------------
``.keyvault-panel``            the whole panel (a ``VBox``)
``.keyvault-panel-list``       the credential list (HTML ``<table>``: name, provider, presence, last used);
                               one ``<tr class="keyvault-panel-row" data-name="NAME">`` per credential,
                               or a ``.keyvault-panel-empty`` line when there is none
``.keyvault-panel-name``       ``Text``: the credential name (e.g. ``OPENAI_API_KEY``)
``.keyvault-panel-provider``   ``Dropdown``: provider; the labels carry the key-format hint;
                               the first option, "auto", lets the server detect it from the name/key
``.keyvault-panel-hint``       the format hint of the selected provider
``.keyvault-panel-value``      ``Password``: the value (cleared the moment Save is clicked)
``.keyvault-panel-save``       ``Button``: store the value under the name (add or replace)
``.keyvault-panel-test``       ``Button``: run the provider's test request with the stored key
``.keyvault-panel-delete``     ``Button``: ask for confirmation (shows the two buttons below)
``.keyvault-panel-confirm``    ``Button``: present in the DOM only while a delete awaits confirmation
``.keyvault-panel-cancel``     ``Button``: abandons the pending delete
``.keyvault-panel-refresh``    ``Button``: reload the list
``.keyvault-panel-connect``    ``Button``: one per OAuth provider configured on the server ("Connect NAME");
                               none in local mode or when the server configures none
``.keyvault-panel-oauth-link`` HTML: after a Connect click, ``<a class="keyvault-panel-oauth-go"
                               target="_blank">`` to the server's sign-in start page (relative URL, so
                               it opens on the origin the user is on)
``.keyvault-panel-status``     HTML: the status message; also carries ``keyvault-status-ok``,
                               ``keyvault-status-error`` or ``keyvault-status-busy``

Semantics
---------
- Save, Test and Delete act on the name in ``.keyvault-panel-name`` at the moment of the click.
- Confirm deletes the name that was in the field when Delete was clicked (shown in the prompt), even
  if the field changed since; Cancel, Save or a second Delete replace the pending deletion.
- Connect uses the name in ``.keyvault-panel-name`` (or ``<PROVIDER>_TOKEN`` when empty); the sign-in
  happens in a new tab that ends on this notebook; Refresh then lists the credential as ``OAuth``.
  OAuth credentials show their provider, token expiry or ``needs reconnecting``.
- Save clears the password field at once (success or not) and then reports.
- Status texts: ``Saved NAME (provider).`` (plus `` Warning: …``), ``NAME works: DETAIL``,
  ``NAME failed: ERROR``, ``Delete NAME? This cannot be undone.``, ``Deleted NAME.``,
  ``Error: MESSAGE`` (bad name, empty value, unknown provider, server errors; nothing is changed).
  Every text shown is scrubbed: the value just entered and anything key-shaped become ``[REDACTED…]``.
"""

from __future__ import annotations

import functools
import html
from typing import Any, Callable
from urllib.parse import quote, urlencode

from .. import providers
from ..scrub import default_scrubber
from .errors import InvalidRequest, KeyVaultError
from .mode import current_backend, valid_name

try:
    import ipywidgets as widgets
    from traitlets import TraitError, Unicode
except ImportError:  # pragma: no cover - exercised by test_widgets_unit with the import blocked
    widgets = None

AUTO = ""
MISSING_IPYWIDGETS = (
    "keyvault.panel() needs ipywidgets 8 in this kernel's environment: "
    "pip install 'jupyter-keyvault[widgets]' (or pip install 'ipywidgets>=8'), then restart the kernel"
)


def _require_ipywidgets() -> None:
    if widgets is None:
        raise KeyVaultError(MISSING_IPYWIDGETS)
    major = int(str(widgets.__version__).split(".", 1)[0])
    if major < 8:
        raise KeyVaultError(MISSING_IPYWIDGETS + f" (found ipywidgets {widgets.__version__})")


def provider_options() -> list[tuple[str, str]]:
    options = [("auto (detect from the name or key)", AUTO)]
    for p in providers.PROVIDERS.values():
        options.append((f"{p.label} — {p.key_hint}" if p.key_hint else p.label, p.id))
    return options


def _hint(provider_id: str) -> str:
    if not provider_id:
        return "The provider is taken from a conventional name (OPENAI_API_KEY, …) or the key's prefix."
    p = providers.PROVIDERS.get(provider_id)
    if p is None:
        return ""
    parts = []
    if p.env_var:
        parts.append(f"Usual name: {p.env_var}.")
    if p.key_hint:
        parts.append(f"Key {p.key_hint}.")
    if not p.needs_key:
        parts.append("Needs no key.")
    return " ".join(parts)


if widgets is not None:

    class SecretInput(widgets.Password):
        """A `Password` whose value never becomes widget state in the kernel.

        The frontend sends `{"value": …}` updates; they are taken out of the sync data before
        ipywidgets sees them, so the kernel neither stores them in a trait (→ manager state,
        saved notebook) nor echoes them back (`echo_update`). `clear()` tells the frontend to
        empty its field.
        """

        # Belt and braces: never echo this trait even if it were set through the normal path.
        value = Unicode("", help="Always empty in the kernel; see SecretInput.").tag(sync=True, echo_update=False)

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self._pending = ""

        def set_state(self, sync_data: dict) -> None:
            if "value" in sync_data:
                sync_data = dict(sync_data)
                received = sync_data.pop("value")
                self._pending = received if isinstance(received, str) else ""
            if sync_data:
                super().set_state(sync_data)

        def take(self) -> str:
            """The value typed so far, forgotten here, and the frontend field emptied."""
            value, self._pending = self._pending, ""
            self.clear()
            return value

        def clear(self) -> None:
            self._pending = ""
            if self.comm is not None:
                self.send_state("value")  # the trait is "", so this empties the browser's field


    class ProviderDropdown(widgets.Dropdown):
        """A `Dropdown` that reports a choice outside the provider table instead of raising.

        A stale or forged frontend can send an index that is not an option; ipywidgets would raise
        in the comm handler (a log line, nothing for the user). `on_invalid` gets a clear message.
        """

        def __init__(self, on_invalid: Callable[[str], None], **kwargs: Any):
            super().__init__(**kwargs)
            self._on_invalid = on_invalid

        def set_state(self, sync_data: dict) -> None:
            try:
                super().set_state(sync_data)
            except TraitError:
                choice = sync_data.get("index", sync_data.get("value"))
                self.send_state()  # put the browser back on the current, valid choice
                self._on_invalid(f"unknown provider choice {choice!r}; pick one of: {', '.join(providers.PROVIDERS)}")


def _format_time(value: str | None) -> str:
    if not value:
        return "never"
    return value.replace("T", " ").split(".")[0].rstrip("Z") + " UTC" if "T" in value else value


def render_list(items: list[dict]) -> str:
    if not items:
        return ('<div class="keyvault-panel-empty">No credentials stored yet. Add one below: a name, '
                'a provider and the value.</div>')
    rows = []
    for item in items:
        name = html.escape(str(item.get("name", "")))
        provider = html.escape(str(item.get("provider") or "—"))
        source = item.get("source")
        presence = "stored" if item.get("present", True) else "missing"
        if source and source not in ("vault", "user"):
            presence = f"{presence} ({html.escape(str(source))})"
        oauth = item.get("oauth") if item.get("type") == "oauth2" else None
        if isinstance(oauth, dict):
            provider = html.escape(f"OAuth: {oauth.get('provider') or '?'}")
            if oauth.get("needs_reauth"):
                presence = '<span class="keyvault-panel-reauth">needs reconnecting (Connect again)</span>'
            elif oauth.get("expires_at"):
                presence = f"{presence}, token until {html.escape(_format_time(oauth.get('expires_at')))}"
        presence += lifetime_badges(item)
        last_used = html.escape(_format_time(item.get("last_used_at")))
        rows.append(f'<tr class="keyvault-panel-row" data-name="{name}"><td><code>{name}</code></td>'
                    f"<td>{provider}</td><td>{presence}</td><td>{last_used}</td></tr>")
    return ('<table class="keyvault-panel-table"><thead><tr><th>Name</th><th>Provider</th><th>Present</th>'
            f'<th>Last used</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def lifetime_badges(item: dict) -> str:
    """Badges for a listed credential: session-only, expired (or when it expires), stale (older than the
    server's warning age)."""
    badges = []
    if item.get("lifetime") == "session":
        badges.append('<span class="keyvault-badge keyvault-badge-session" title="kept in the server\'s memory only; '
                      'gone when it stops">session</span>')
    if item.get("expired"):
        badges.append('<span class="keyvault-badge keyvault-badge-expired">expired</span>')
    elif item.get("expires_at"):
        badges.append(f'<span class="keyvault-badge keyvault-badge-expires">until '
                      f'{html.escape(_format_time(item.get("expires_at")))}</span>')
    if item.get("stale"):
        badges.append(f'<span class="keyvault-badge keyvault-badge-stale" title="rotate it">'
                      f'{html.escape(str(item.get("age_days")))} days old</span>')
    return (" " + " ".join(badges)) if badges else ""


class KeyVaultPanel:
    """Builds the widgets and wires the actions; `.widget` is the `VBox` that `panel()` returns."""

    def __init__(self, backend_factory: Callable[[], Any] = current_backend):
        _require_ipywidgets()
        self._backend_factory = backend_factory
        self._pending_delete: str | None = None

        self.list = widgets.HTML(value="").add_class("keyvault-panel-list")
        self.name = widgets.Text(description="Name", placeholder="e.g. OPENAI_API_KEY", continuous_update=False,
                                 ).add_class("keyvault-panel-name")
        self.provider = ProviderDropdown(self._invalid_provider, description="Provider", options=provider_options(), value=AUTO,
                                         ).add_class("keyvault-panel-provider")
        self.hint = widgets.HTML(value=html.escape(_hint(AUTO))).add_class("keyvault-panel-hint")
        self.value = SecretInput(description="Value", placeholder="paste the key (hidden, never shown again)",
                                 ).add_class("keyvault-panel-value")
        self.session = widgets.Checkbox(value=False, description="Only for this session", indent=False,
                                        tooltip="Kept in the server's memory only, never written to disk; "
                                        "gone when the server stops").add_class("keyvault-panel-session")
        self.save = widgets.Button(description="Save", button_style="primary", icon="save",
                                   tooltip="Store the value under this name (encrypted on the server)",
                                   ).add_class("keyvault-panel-save")
        self.test = widgets.Button(description="Test", icon="check",
                                   tooltip="Try the stored key with the provider's cheapest request",
                                   ).add_class("keyvault-panel-test")
        self.delete = widgets.Button(description="Delete", button_style="danger", icon="trash",
                                     tooltip="Delete the credential with this name (asks first)",
                                     ).add_class("keyvault-panel-delete")
        self.refresh = widgets.Button(description="Refresh", icon="refresh",
                                      tooltip="Reload the list").add_class("keyvault-panel-refresh")
        self.confirm = widgets.Button(description="Yes, delete", button_style="danger",
                                      ).add_class("keyvault-panel-confirm")
        self.cancel = widgets.Button(description="Cancel").add_class("keyvault-panel-cancel")
        self.confirm_row = widgets.HBox([]).add_class("keyvault-panel-confirm-row")
        self.status = widgets.HTML(value="").add_class("keyvault-panel-status")
        self.connect_row = widgets.HBox([]).add_class("keyvault-panel-oauth")
        self.oauth_link = widgets.HTML(value="").add_class("keyvault-panel-oauth-link")
        self._oauth_providers: tuple[tuple[str, str], ...] = ()
        self._server: dict = {}

        self.provider.observe(self._on_provider, names="value")
        self.save.on_click(self._guard(self._on_save))
        self.test.on_click(self._guard(self._on_test))
        self.delete.on_click(self._guard(self._on_delete))
        self.confirm.on_click(self._guard(self._on_confirm))
        self.cancel.on_click(self._guard(self._on_cancel))
        self.refresh.on_click(self._guard(self._on_refresh))

        title = widgets.HTML("<b>Key Vault</b> — values are encrypted on the server and never shown again")
        self.widget = widgets.VBox([
            title,
            self.list,
            self.name,
            self.provider,
            self.hint,
            self.value,
            self.session,
            widgets.HBox([self.save, self.test, self.delete, self.refresh]),
            self.confirm_row,
            self.connect_row,
            self.oauth_link,
            self.status,
        ]).add_class("keyvault-panel")
        self._guard(self._on_refresh)(None)

    # -- helpers
    def _backend(self):
        return self._backend_factory()

    def _say(self, text: str, kind: str, *, secret: str = "") -> None:
        secret = secret.strip()
        if len(secret) >= 4:  # shorter would mangle ordinary words; the server rejects such values anyway
            text = text.replace(secret, "[REDACTED]")
        text = default_scrubber.scrub(text)
        for cls in ("keyvault-status-ok", "keyvault-status-error", "keyvault-status-busy"):
            self.status.remove_class(cls)
        self.status.add_class(f"keyvault-status-{kind}")
        self.status.value = html.escape(text)

    def _guard(self, action: Callable[[Any], None]) -> Callable[[Any], None]:
        """No exception leaves a click handler: ipywidgets would print a traceback as output."""

        def run(_button: Any) -> None:
            try:
                action(_button)
            except KeyVaultError as exc:
                self._say(f"Error: {exc}", "error")
            except Exception as exc:  # noqa: BLE001 - shown (scrubbed) instead of a traceback
                self._say(f"Error: {type(exc).__name__}: {exc}", "error")

        return run

    def _name(self) -> str:
        raw = (self.name.value or "").strip()
        if not raw:
            raise InvalidRequest("enter a name first (e.g. OPENAI_API_KEY); nothing was changed")
        return valid_name(raw)

    def _set_confirming(self, name: str | None) -> None:
        self._pending_delete = name
        self.confirm_row.children = (self.confirm, self.cancel) if name else ()

    def _reload(self) -> None:
        backend = self._backend()
        self.list.value = render_list(backend.list())
        self._server = backend.status() if hasattr(backend, "status") else {}
        found = tuple((str(p.get("id")), str(p.get("display_name") or p.get("id")))
                      for p in self._server.get("oauth_providers") or () if isinstance(p, dict))
        if found != self._oauth_providers:
            self._oauth_providers = found
            buttons = []
            for pid, label in found:
                b = widgets.Button(description=f"Connect {label}", icon="link",
                                   tooltip=f"Sign in to {label}; the token is stored in the vault, never shown"
                                   ).add_class("keyvault-panel-connect")
                b.on_click(self._guard(functools.partial(self._on_connect_clicked, pid, label)))
                buttons.append(b)
            self.connect_row.children = tuple(buttons)

    def connect_url(self, provider_id: str, name: str) -> str:
        """Relative to the server root, so the browser stays on the origin the user is on."""
        base = str(self._server.get("base_url") or "/")
        base = base if base.endswith("/") else base + "/"
        notebook = self._server.get("notebook_path")
        next_path = base + ("lab/tree/" + quote(str(notebook)) if notebook else "lab")
        return (f"{base}keyvault/oauth/{quote(provider_id, safe='')}/start?"
                + urlencode({"name": name, "next": next_path}))

    def _on_connect_clicked(self, provider_id: str, label: str, _button: Any) -> None:
        self._on_connect(provider_id, label)

    def _on_connect(self, provider_id: str, label: str) -> None:
        raw = (self.name.value or "").strip()
        name = valid_name(raw) if raw else f"{provider_id.upper()}_TOKEN"
        url = self.connect_url(provider_id, name)
        self.oauth_link.value = (f'<a class="keyvault-panel-oauth-go" target="_blank" rel="noopener" '
                                 f'href="{html.escape(url)}">Sign in to {html.escape(label)} as {html.escape(name)}</a>'
                                 " — opens a new tab; click Refresh here when it is done.")
        self._say(f"Open the link to connect {name}.", "ok")

    # -- actions
    def _on_provider(self, change: dict) -> None:
        self.hint.value = html.escape(_hint(change["new"]))
        old = providers.PROVIDERS.get(change["old"] or "")
        new = providers.PROVIDERS.get(change["new"] or "")
        current = (self.name.value or "").strip()
        if new is not None and new.env_var and (not current or (old is not None and current == old.env_var)):
            self.name.value = new.env_var

    def _invalid_provider(self, message: str) -> None:
        self._say(f"Error: {message}; nothing was changed", "error")

    def _on_save(self, _button: Any) -> None:
        value = self.value.take()  # cleared in the browser before anything else can fail
        self._set_confirming(None)
        try:
            name = self._name()
            provider = self.provider.value or None
            if provider is not None and provider not in providers.PROVIDERS:
                raise InvalidRequest(f"unknown provider {provider!r}; known: {', '.join(providers.PROVIDERS)}")
            if not value.strip():
                raise InvalidRequest("enter the value in the password field; nothing was stored")
            self._say(f"Saving {name}…", "busy", secret=value)
            result = self._backend().put(name, value.strip(), provider, session=bool(self.session.value)) or {}
        except KeyVaultError as exc:
            self._say(f"Error: {exc}", "error", secret=value)
            return
        except Exception as exc:  # noqa: BLE001
            self._say(f"Error: {type(exc).__name__}: {exc}", "error", secret=value)
            return
        stored_provider = result.get("provider") or provider
        text = f"Saved {name}" + (f" ({stored_provider})" if stored_provider else "")
        text += " for this session only." if self.session.value else "."
        for warning in result.get("warnings") or ():
            text += f" Warning: {warning}."
        self._say(text, "ok", secret=value)
        self._refresh_quietly()

    def _on_test(self, _button: Any) -> None:
        name = self._name()
        self._say(f"Testing {name}…", "busy")
        result = self._backend().test(name)
        if result.get("ok"):
            self._say(f"{name} works: {result.get('detail') or 'the provider accepted the key'}", "ok")
        else:
            self._say(f"{name} failed: {result.get('error') or 'the provider rejected the key'}", "error")
        self._refresh_quietly()

    def _on_delete(self, _button: Any) -> None:
        name = self._name()
        self._set_confirming(name)
        self._say(f"Delete {name}? This cannot be undone.", "busy")

    def _on_confirm(self, _button: Any) -> None:
        name = self._pending_delete
        self._set_confirming(None)
        if not name:
            self._say("Error: nothing to delete; click Delete first", "error")
            return
        self._backend().delete(name)
        self._say(f"Deleted {name}.", "ok")
        self._refresh_quietly()

    def _on_cancel(self, _button: Any) -> None:
        name = self._pending_delete
        self._set_confirming(None)
        self._say(f"Kept {name}." if name else "Nothing to cancel.", "ok")

    def _on_refresh(self, _button: Any) -> None:
        self._reload()

    def _refresh_quietly(self) -> None:
        try:
            self._reload()
        except KeyVaultError as exc:
            self.list.value = f'<div class="keyvault-panel-empty">{html.escape(default_scrubber.scrub(str(exc)))}</div>'


def panel():
    """The Key Vault panel (an ipywidgets `VBox` with CSS class `keyvault-panel`); see this module's docstring."""
    built = KeyVaultPanel()
    built.widget.keyvault_panel = built  # reachable for code and tests; holds no secret
    return built.widget


__all__ = ["KeyVaultPanel", "MISSING_IPYWIDGETS", "SecretInput", "panel", "provider_options", "render_list"]
