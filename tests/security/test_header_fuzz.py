"""Header and timestamp parsing that cannot be made to throw: hypothesis over X-Handoff-Signature,
the HubSpot v3 pair, Mautic's Webhook-Signature and Authorization, through the real app. Whatever the
headers say, the answer is a 4xx with the contract's error body (or a 2xx for a valid one), never a 5xx.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.support import error_code, whole_app
from tests.support.pipeline import API_TOKEN

BODY = b'{"event_id": "fuzz-1", "type": "page_view", "email": "fuzz@example.com"}'
# Header values as a client can put them on the wire: any byte but CR, LF and NUL, any length.
raw_values = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "-", "+1", "1e309", "0x10", "١٢٣", "9" * 400, " 1", "1 ", "NaN", "-0"]),
)
hexish = st.text(alphabet="0123456789abcdefABCDEF=,tv1 ", max_size=80)
generic_signatures = st.one_of(
    raw_values.map(lambda b: b.decode("latin-1")),
    st.builds(lambda t, v: f"t={t},v1={v}", numbers, hexish),
    st.builds(lambda t, v, w: f"v1={v},t={t},t={w},v1=", numbers, hexish, numbers),
    st.lists(st.sampled_from(["t=", "v1=", ",", "=", "t", "v0=ab", "  "]), max_size=12).map("".join),
)
authorizations = st.one_of(
    raw_values.map(lambda b: b.decode("latin-1")),
    st.builds(lambda scheme, rest: f"{scheme} {rest}", st.sampled_from(["Bearer", "Basic", "bearer", "BASIC", "",
                                                                         "Digest"]),
              st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.hex()),
                        st.sampled_from(["Og==", "=", "====", "!!!", "dXNlcg", "Zm9vOmJhcg=="]))),
)


def _encode(headers: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode("latin-1", "replace") for k, v in headers.items()}


async def _check(client: httpx.AsyncClient, path: str, headers: dict[str, str], problems: list[str]) -> None:
    r = await client.post(path, content=BODY, headers={b"Content-Type": b"application/json", **_encode(headers)})
    if r.status_code >= 500 or (r.status_code >= 400 and error_code(r) is None):
        problems.append(f"{path} {headers!r}: {r.status_code} {r.text[:120]}")


FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))


async def test_signature_and_auth_headers_never_5xx(tmp_path: Path) -> None:
    problems: list[str] = []
    async with whole_app(tmp_path) as (client, _app):
        calls: list[tuple[str, dict[str, str]]] = []

        @FUZZ
        @given(signature=generic_signatures)
        def generic(signature: str) -> None:
            calls.extend([("/webhooks/website", {"X-Handoff-Signature": signature}),
                          ("/v1/touchpoints", {"X-Handoff-Signature": signature}),
                          ("/webhooks/crm/webhook", {"X-Handoff-Signature": signature})])

        @FUZZ
        @given(signature=raw_values.map(lambda b: b.decode("latin-1")), timestamp=numbers)
        def hubspot(signature: str, timestamp: str) -> None:
            calls.append(("/webhooks/hubspot", {"X-HubSpot-Signature-v3": signature,
                                                "X-HubSpot-Request-Timestamp": timestamp}))

        @FUZZ
        @given(signature=raw_values.map(lambda b: b.decode("latin-1")))
        def mautic(signature: str) -> None:
            calls.append(("/webhooks/mautic", {"Webhook-Signature": signature}))

        @FUZZ
        @given(authorization=authorizations)
        def auth(authorization: str) -> None:
            calls.extend([("/v1/touchpoints", {"Authorization": authorization}),
                          ("/v1/track", {"Authorization": authorization}),
                          ("/webhooks/segment", {"Authorization": authorization})])

        # Hypothesis drives synchronous functions: draw the cases first, then send them all.
        for draw in (generic, hubspot, mautic, auth):
            draw()
        for path, headers in calls:
            await _check(client, path, headers, problems)
        for _path, headers in calls[:100]:  # the lead API's bearer check, with the same garbage
            if "Authorization" in headers:
                r = await client.get("/v1/leads", headers=_encode(headers))
                if r.status_code != 401:
                    problems.append(f"/v1/leads {headers!r}: {r.status_code}")
        assert len(calls) >= 300
        r = await client.get("/v1/leads", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert r.status_code == 200
    assert not problems, "\n".join(problems[:20])
