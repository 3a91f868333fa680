"""The SMS request's form, encoded by hand once per shared part, is the urlencoded form aiohttp
sent for the same fields in the same order."""

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from services.notifications.twilio import TwilioSmsClient


@given(to=st.text(max_size=20), body=st.text(max_size=300), callback=st.booleans())
def test_the_form_is_the_urlencoded_fields(to: str, body: str, callback: bool) -> None:
    url = "https://ensemble.example.org/api/v1/sms/status?x=1&y=é" if callback else None
    client = TwilioSmsClient("https://api.twilio.example", "AC1", "token", "+1 500 555&0006",
                             status_callback_url=url)
    fields = {"To": to, "From": "+1 500 555&0006", "Body": body} | (
        {"StatusCallback": url} if url else {})
    try:
        expected = urlencode(fields).encode()
    except UnicodeEncodeError:  # a lone surrogate: neither can send it
        return
    assert client.form(to, body) == expected
