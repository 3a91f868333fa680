"""Asymmetric keys for the bearer tokens: the console signs with a private key of its own and
publishes the public halves as a JWKS; services verify against that JWKS (fetched from a URL or
read from a file, cached, fetched again when a token names a key they have not seen). No secret
is shared between services. HS256 with ENSEMBLE_JWT_SECRET is left for development only.

The keys file is a private JWKS (``{"keys": [...]}``): the first key signs, every key in it is
published. Rotation: add a key (published, not yet signing), make it the first (it signs), and
once the longest token signed with the old one has expired, remove the old one. The file is read
again whenever it changes, so none of these steps needs a restart. JOSE through joserfc (the
library authlib's own JOSE module now defers to)."""

import asyncio
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

ASYMMETRIC = ("ES256", "RS256")


class KeysError(ValueError):
    """A keys file or JWKS that cannot be used (the message says which and why)."""


def new_key(alg: str = "ES256") -> dict[str, Any]:
    """A new private signing key as a JWK, its ``kid`` made from the key's thumbprint (RFC
    7638), never starting with '-' (it is typed on command lines)."""
    params = {"alg": alg, "use": "sig"}
    if alg == "ES256":
        key: ECKey | RSAKey = ECKey.generate_key("P-256", parameters=params, private=True)
    elif alg == "RS256":
        key = RSAKey.generate_key(2048, parameters=params, private=True)
    else:
        raise KeysError(f"unsupported algorithm {alg!r} (ES256 or RS256)")
    return key.as_dict(private=True, kid=f"k{key.thumbprint()[:24]}")


def read_jwks(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise KeysError(f"keys file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KeysError(f"keys file {path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeysError(f"keys file {path}: not a JWKS (an object with a list 'keys')")
    return data


def write_jwks(path: Path, data: Mapping[str, Any]) -> None:
    """Written whole to a new file then renamed over the old: a reader never sees half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def _import(data: Mapping[str, Any], where: str, *, private: bool) -> KeySet:
    try:
        keys = KeySet.import_key_set(dict(data))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise KeysError(f"{where}: {exc}") from None
    for key in keys.keys:
        if key.kid is None:
            raise KeysError(f"{where}: every key needs a 'kid'")
        if key.alg not in ASYMMETRIC:
            raise KeysError(f"{where}: key {key.kid}: 'alg' must be one of {ASYMMETRIC}")
        if private and not key.is_private:
            raise KeysError(f"{where}: key {key.kid} is public; signing needs the private key")
    return keys


class SigningKeys:
    """The console's keys, from a private JWKS file, read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: KeySet | None = None
        self._load()

    def _load(self) -> KeySet:
        stat = self.path.stat() if self.path.exists() else None
        stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
        if self._keys is None or stamp != self._stamp:
            keys = _import(read_jwks(self.path), f"keys file {self.path}", private=True)
            if not keys.keys:
                raise KeysError(f"keys file {self.path}: no key in it")
            self._keys, self._stamp = keys, stamp
        return self._keys

    @property
    def active_kid(self) -> str:
        return str(self._load().keys[0].kid)

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self._load().keys]}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self._load().keys[0]
        header = {"alg": key.alg, "kid": key.kid}
        return jose_jwt.encode(header, claims, key, algorithms=list(ASYMMETRIC))


class PublicKeys:
    """A JWKS to verify tokens with: from ``url`` (http or https) or a file, cached for
    ``max_age`` seconds, fetched again for a ``kid`` not in it (at most once every
    ``min_refresh`` seconds, so tokens naming made-up keys cannot make it hammer the source)."""

    def __init__(self, source: str, *, max_age: float = 300, min_refresh: float = 1,
                 timeout: float = 5) -> None:
        self.source = source
        self.max_age = max_age
        self.min_refresh = min_refresh
        self.timeout = timeout
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> KeySet:
        if self.source.startswith(("http://", "https://")):
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                answer = await http.get(self.source)
                answer.raise_for_status()
                data = answer.json()
            return _import(data, f"JWKS {self.source}", private=False)
        return _import(read_jwks(Path(self.source)), f"JWKS {self.source}", private=False)

    async def refresh(self, *, forced: bool) -> None:
        """Fetch the JWKS when it is older than ``max_age`` or, ``forced`` (a token named a key
        not in it), now, but no sooner than ``min_refresh`` after the last fetch and only once
        for all the requests that were waiting for it."""
        asked = time.monotonic()
        async with self._lock:
            if self._keys is not None and (self._fetched >= asked or
                                           (not forced and asked - self._fetched < self.max_age)):
                return
            if self._keys is not None:
                await asyncio.sleep(max(0.0, self._fetched + self.min_refresh - time.monotonic()))
            try:
                self._keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                if self._keys is None:
                    raise KeysError(f"JWKS {self.source}: {exc}") from None
                # A source that does not answer now keeps the keys known before.
            self._fetched = time.monotonic()

    async def key_set(self, kid: str | None) -> KeySet:
        await self.refresh(forced=False)
        assert self._keys is not None
        if kid is not None and not any(k.kid == kid for k in self._keys.keys):
            await self.refresh(forced=True)
        return self._keys

    async def decode(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature checks out (claims themselves unchecked)."""
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError) as exc:
            raise KeysError(f"not a JWS: {type(exc).__name__}") from None
        if header.get("alg") not in ASYMMETRIC:
            raise KeysError(f"algorithm {header.get('alg')!r} is not accepted")
        kid = header.get("kid")
        keys = await self.key_set(kid if isinstance(kid, str) else None)
        if not any(k.kid == kid for k in keys.keys):
            raise KeysError(f"no published key {kid!r}")
        try:
            return jose_jwt.decode(token, keys, algorithms=list(ASYMMETRIC)).claims
        except (JoseError, ValueError) as exc:
            raise KeysError(f"bad signature: {type(exc).__name__}") from None
