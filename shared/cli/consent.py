"""``consent``: the secure app model's one-time sign-in (with MFA) that mints the App+User refresh token.

An authorization-code sign-in through msal with PKCE: the browser goes to Entra ID, the user signs in as a
partner admin agent, Entra sends the browser back to ``http://localhost:PORT`` with a code, and msal redeems
it with the app's secret for tokens. The refresh token goes straight into Key Vault (or, in environment mode,
``local.settings.json``) and is never printed or logged. It replaces the PartnerCenter PowerShell module's
``New-PartnerAccessToken -UseAuthorizationCode``.
"""

from __future__ import annotations

import argparse
import hmac
import html
import os
import threading
import unicodedata
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msal

from shared.errors import MissingSettingError, TokenError
from shared.logs import register_secret
from shared.partner_center.secrets import KeyVaultSecretStore, SecretStore
from shared.partner_center.tokens import RetryingHttpClient, carries_mfa
from shared.settings import APP_ID_SETTING, APP_SECRET_SETTING, REFRESH_TOKEN_SETTING

from .context import EXIT_OK, ConfigurationError, Context
from .environment import read_local_settings, write_local_setting

#: Delegated scope of the Partner Center API that App+User calls need.
USER_IMPERSONATION_SCOPE = "https://api.partnercenter.microsoft.com/user_impersonation"

#: How long the sign-in may take in the browser.
SIGN_IN_TIMEOUT_SECONDS = 600.0

_DONE_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Partner Center consent</title></head>"
    "<body><h1>{title}</h1><p>{text}</p></body></html>"
)


def run_consent(context: Context, args: argparse.Namespace) -> int:
    settings = context.settings
    runtime = context.runtime
    app_id, app_secret = _app_credentials(runtime.secrets)
    app = msal.ConfidentialClientApplication(
        app_id,
        client_credential=app_secret,
        authority=f"{settings.authority_host.rstrip('/')}/{settings.tenant_id}",
        instance_discovery=False,
        http_client=RetryingHttpClient(runtime.session, runtime.policy),
        token_cache=msal.TokenCache(),
    )
    with _RedirectReceiver(args.port) as receiver:
        flow = app.initiate_auth_code_flow(
            [USER_IMPERSONATION_SCOPE], redirect_uri=receiver.redirect_uri, prompt="select_account"
        )
        receiver.state = flow["state"]
        context.output.warn(f"sign in as a partner admin agent (MFA) at:\n{flow['auth_uri']}")
        if not args.no_browser:
            webbrowser.open(flow["auth_uri"])
        response = receiver.wait(SIGN_IN_TIMEOUT_SECONDS)
    if response is None:
        raise TokenError("the sign-in did not come back within 10 minutes; run consent again", error="timeout")
    if "error" in response:
        error, description = printable(response["error"])[:100], printable(response.get("error_description", ""))
        raise TokenError(f"the sign-in was refused: {error} ({description[:200]})", error=error)
    try:
        result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, response)
    except ValueError as exc:  # msal: state mismatch, a response that does not belong to this flow
        raise TokenError(f"the sign-in answer was not accepted: {exc}", error="invalid_response") from None
    refresh_token = result.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        error = str(result.get("error") or "no_refresh_token")
        raise TokenError(f"Entra ID issued no refresh token ({error}); check the app's consent", error=error)
    register_secret(refresh_token)
    access_token = str(result.get("access_token") or "")
    register_secret(access_token)
    where = _store(context, refresh_token)
    user = (result.get("id_token_claims") or {}).get("preferred_username") or "the signed-in user"
    context.output.say(f"Consent recorded for {user}; the refresh token is stored in {where}.")
    mfa = carries_mfa(access_token) if access_token else None
    _say_mfa(context, mfa)
    context.output.document({"status": "stored", "storedIn": where, "user": user, "mfa": mfa})
    return EXIT_OK


def _say_mfa(context: Context, mfa: bool | None) -> None:
    """Partner Center enforces MFA on App+User calls: say whether the sign-in behind this token used it (its
    access token's ``amr`` claim)."""
    if mfa:
        context.output.say("The sign-in used multi-factor authentication (the token's amr claim holds mfa).")
    elif mfa is False:
        context.output.warn(
            "the token carries no MFA claim: Partner Center refuses App+User calls without MFA; "
            "run consent again and sign in with multi-factor authentication"
        )
    else:
        context.output.warn("could not tell whether the sign-in used MFA (the access token is not a JWT)")


def _app_credentials(secrets: SecretStore) -> tuple[str, str]:
    """The app id and secret alone: the refresh token may not exist yet (this command makes it)."""
    if isinstance(secrets, KeyVaultSecretStore):
        return secrets.load_app()
    values = []
    for name in (APP_ID_SETTING, APP_SECRET_SETTING):
        value = (os.environ.get(name) or "").strip()
        if not value:
            raise MissingSettingError(name)
        register_secret(value)
        values.append(value)
    return values[0], values[1]


def _store(context: Context, refresh_token: str) -> str:
    """Into the vault the functions read, else into local.settings.json; where it went (no value)."""
    secrets = context.runtime.secrets
    if isinstance(secrets, KeyVaultSecretStore):
        secrets.save_refresh_token(refresh_token)
        return f"Key Vault secret {context.settings.refresh_token_secret_name}"
    # The file the settings came from (the project's own, or --settings), never one in the working folder.
    target = context.sources.looked_for
    if target is None:
        raise ConfigurationError(
            "no local.settings.json to store the refresh token in (no project checkout holds this package): "
            "name one with --settings PATH, or set KEY_VAULT_URL"
        )
    before = read_local_settings(target).get(REFRESH_TOKEN_SETTING)
    path = write_local_setting(target, REFRESH_TOKEN_SETTING, refresh_token)
    current = os.environ.get(REFRESH_TOKEN_SETTING)
    if current and current != before:
        context.output.warn(f"{REFRESH_TOKEN_SETTING} is also set in the environment and wins over the file: unset it")
    return f"{path} ({REFRESH_TOKEN_SETTING})"


def printable(text: str) -> str:
    """``text`` without control characters (escape sequences, line breaks): what Entra, or whoever reached the
    redirect port, sends back is shown as text, never acted on by the terminal."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")


class _RedirectReceiver:
    """A one-shot HTTP server on the loopback interface that takes Entra's redirect back.

    Only a redirect carrying this sign-in's ``state`` counts: any other request to the port (another local
    process, a web page) is answered 400 and the receiver goes on waiting.
    """

    def __init__(self, port: int) -> None:
        self.response: dict[str, str] | None = None
        #: The sign-in's ``state`` (msal's flow); until it is set, no request counts.
        self.state: str | None = None
        self._arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the base class's name
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if "code" not in query and "error" not in query:
                    self.send_response(404)
                    self.end_headers()
                    return
                state = query.get("state")
                if receiver.state is None or state is None or not hmac.compare_digest(state, receiver.state):
                    self.send_response(400)
                    self.end_headers()
                    return
                if "error" in query:
                    title, text = "Consent not given", html.escape(query.get("error_description") or query["error"])
                else:
                    title, text = "Signed in", "You can close this window and return to the command line."
                page = _DONE_PAGE.format(title=title, text=text).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                if receiver.response is None:
                    receiver.response = query
                    receiver._arrived.set()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the code is in the URL
                pass

        self._server = HTTPServer(("127.0.0.1", port), Handler)
        self.redirect_uri = f"http://localhost:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> _RedirectReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, timeout: float) -> dict[str, str] | None:
        self._arrived.wait(timeout)
        return self.response
