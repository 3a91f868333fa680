"""A small but real OpenID Provider for the sign-in tests, built on authlib's server side (Flask):
discovery document, JWKS, an authorization endpoint with a sign-in page, a token endpoint
(authorization code with PKCE required, nonce required, client_secret_basic), userinfo and
RP-initiated logout (end_session). Runs in its own thread on a free port of 127.0.0.1.

A person signs in on its page by typing their user name; what the provider knows of them
(email, groups) is what the test gave it."""

import html
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Flask, jsonify, request
from joserfc.jwk import KeySet, RSAKey
from werkzeug.serving import make_server

from ensemble.embedded import free_port

# authlib refuses plain http outside tests; this provider answers on loopback only.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")


@dataclass
class Person:
    username: str
    email: str
    name: str
    groups: list[str] = field(default_factory=list)

    @property
    def sub(self) -> str:
        return f"op-{self.username}"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    client_metadata: dict[str, Any] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "email", "profile",
                                                           "groups"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic" if endpoint == "token" else True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    person: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


@dataclass
class Token:
    access_token: str
    client: Client
    person: Person
    scope: str
    expires_at: float

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() > self.expires_at

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> Person:
        return self.person

    def get_client(self) -> Client:
        return self.client


def _user_info(person: Person, scope: str) -> UserInfo:
    """The standard claims of the scopes granted, and with the "groups" scope the groups (as
    Entra ID and most district providers give them)."""
    info = UserInfo(sub=person.sub, email=person.email, name=person.name).filter(scope)
    if "groups" in scope.split():
        info["groups"] = list(person.groups)
    return info


class OpenIdProvider:
    """The provider: ``issuer`` is its URL once started; ``people`` who may sign in;
    ``ended`` the subjects whose session the end_session endpoint ended."""

    def __init__(self, client_id: str, client_secret: str, redirect_uri: str,
                 post_logout_redirect_uri: str, people: list[Person]) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client = Client(client_id, client_secret, [redirect_uri],
                             [post_logout_redirect_uri],
                             {"post_logout_redirect_uris": [post_logout_redirect_uri]})
        self.people = {p.username: p for p in people}
        self.key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"},
                                       private=True)
        self.key.ensure_kid()
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.ended: list[str] = []
        self.token_requests = 0
        self.app = self._app()
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "OpenIdProvider":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._thread.join(10)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    # --- authlib's server, wired to this provider's memory ----------------------------------

    def _server_parts(self, app: Flask) -> AuthorizationServer:
        provider = self

        def save_token(token: dict[str, Any], req: Any) -> None:
            provider.tokens[token["access_token"]] = Token(
                token["access_token"], req.client, req.user, token.get("scope", ""),
                time.time() + token.get("expires_in", 3600))

        server = AuthorizationServer(
            app, query_client=lambda cid: provider.client if cid == provider.client.client_id
            else None, save_token=save_token)

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic"]

            def save_authorization_code(self, code: str, req: Any) -> None:
                data = req.payload.data
                provider.codes[code] = Code(code, req.client.client_id,
                                            req.payload.redirect_uri, req.scope, req.user,
                                            data.get("nonce"), data.get("code_challenge"),
                                            data.get("code_challenge_method"))

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = provider.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> Person:
                return authorization_code.person

        class IdTokens(OpenIDCode):
            def exists_nonce(self, nonce: str, req: Any) -> bool:
                return any(c.nonce == nonce for c in provider.codes.values())

            def resolve_client_private_key(self, client: Client) -> Any:
                return provider.key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_encode_header(self, client: Client) -> dict[str, Any]:
                return {"alg": "RS256", "kid": provider.key.kid}

            def get_client_claims(self, client: Client) -> dict[str, Any]:
                return {"iss": provider.issuer, "aud": [client.client_id]}

            def generate_user_info(self, user: Person, scope: str) -> UserInfo:
                return _user_info(user, scope)

        server.register_grant(CodeGrant, [IdTokens(require_nonce=True),
                                          CodeChallenge(required=True)])

        class Bearer(BearerTokenValidator):
            def authenticate_token(self, token_string: str) -> Token | None:
                return provider.tokens.get(token_string)

        protector = ResourceProtector()
        protector.register_token_validator(Bearer())

        class Info(UserInfoEndpoint):
            def get_issuer(self) -> str:
                return provider.issuer

            def generate_user_info(self, user: Person, scope: str) -> UserInfo:
                return _user_info(user, scope)

            def resolve_private_key(self) -> Any:
                return provider.key

        class EndSession(EndSessionEndpoint):
            def get_server_jwks(self) -> KeySet:
                return KeySet([provider.key])

            def is_post_logout_redirect_uri_legitimate(self, *args: Any, **kw: Any) -> bool:
                return False  # the registered ones only

            def end_session(self, end_session_request: Any) -> None:
                claims = end_session_request.id_token_claims or {}
                provider.ended.append(str(claims.get("sub")))

        server.register_endpoint(Info(resource_protector=protector))
        server.register_endpoint(EndSession)
        return server

    def _app(self) -> Flask:
        app = Flask("test-openid-provider")
        server = self._server_parts(app)
        routes = _Routes(self, server)
        app.add_url_rule("/.well-known/openid-configuration", view_func=routes.discovery)
        app.add_url_rule("/jwks", view_func=routes.jwks)
        app.add_url_rule("/authorize", view_func=routes.authorize, methods=["GET", "POST"])
        app.add_url_rule("/token", view_func=routes.token, methods=["POST"])
        app.add_url_rule("/userinfo", view_func=routes.userinfo, methods=["GET", "POST"])
        app.add_url_rule("/logout", view_func=routes.logout, methods=["GET", "POST"])
        return app


@dataclass
class _Routes:
    provider: OpenIdProvider
    server: AuthorizationServer

    def discovery(self) -> Any:
        issuer = self.provider.issuer
        return jsonify({
            "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token", "userinfo_endpoint": f"{issuer}/userinfo",
            "jwks_uri": f"{issuer}/jwks", "end_session_endpoint": f"{issuer}/logout",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "groups"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "email", "name", "groups"]})

    def jwks(self) -> Any:
        return jsonify(self.provider.public_jwks())

    def authorize(self) -> Any:
        if request.method == "GET":
            try:
                self.server.get_consent_grant(end_user=None)
            except OAuth2Error as error:
                return self.server.handle_error_response(None, error)
            return _sign_in_page(request.full_path)
        person = self.provider.people.get(request.form.get("username", ""))
        if person is None:
            return _sign_in_page(request.full_path, "No such account."), 401
        try:
            grant = self.server.get_consent_grant(end_user=person)
        except OAuth2Error as error:
            return self.server.handle_error_response(None, error)
        return self.server.create_authorization_response(grant_user=person, grant=grant)

    def token(self) -> Any:
        self.provider.token_requests += 1
        return self.server.create_token_response()

    def userinfo(self) -> Any:
        return self.server.create_endpoint_response("userinfo")

    def logout(self) -> Any:
        answer = self.server.create_endpoint_response("end_session")
        return answer or "<!doctype html><title>Signed out</title><h1>Signed out</h1>"


def _sign_in_page(action: str, problem: str = "") -> str:
    return (f"<!doctype html><html lang=en><title>Test provider</title><main>"
            f"<h1>Test provider: sign in</h1>{html.escape(problem)}"
            f'<form method=post action="{html.escape(action)}">'
            f'<label for=u>User name</label><input id=u name=username autocomplete=username>'
            f"<button type=submit>Continue</button></form></main></html>")
