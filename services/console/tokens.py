"""The API tokens the console calls the services with: short-lived, signed with the console's own
key (published at /.well-known/jwks.json), made again from the signed-in session whenever the
one in hand nears its end or was signed with a key no longer the active one. The session cookie
holds who is signed in, never a token."""

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from runtime.auth import Principal, issue_token
from runtime.keys import SigningKeys

CACHED = 2000  # principals whose current token is kept in memory


@dataclass
class ApiTokens:
    keys: SigningKeys | None  # None: development, HS256 with the shared secret
    secret: str
    minutes: float
    _cache: "OrderedDict[Principal, tuple[str, float, str]]" = field(default_factory=OrderedDict)

    def jwks(self) -> dict[str, Any]:
        return self.keys.public_jwks() if self.keys else {"keys": []}

    def token_for(self, who: Principal) -> str:
        """The principal's current token; a new one once two thirds of its life are gone."""
        kid = self.keys.active_kid if self.keys else ""
        now = time.time()
        cached = self._cache.get(who)
        if cached and cached[2] == kid and cached[1] - now > self.minutes * 60 / 3:
            self._cache.move_to_end(who)
            return cached[0]
        token = issue_token(self.keys or self.secret, subject=who.subject, role=who.role,
                            district=who.district, schools=who.schools,
                            partner_id=who.partner_id, ttl=timedelta(minutes=self.minutes))
        self._cache[who] = (token, now + self.minutes * 60, kid)
        self._cache.move_to_end(who)
        while len(self._cache) > CACHED:
            self._cache.popitem(last=False)
        return token
