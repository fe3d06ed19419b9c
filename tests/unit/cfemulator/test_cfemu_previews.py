"""Temporary accounts: real proof of work, single-use challenges, a working apiToken, claim, expiry."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import httpx
import pytest

from cfemulator import Emulator, PreviewSettings, pow
from cfemulator.helpers import bearer, wait_until

TERMS = {
    "termsOfService": "https://www.cloudflare.com/terms/",
    "privacyPolicy": "https://www.cloudflare.com/privacypolicy/",
    "acceptTermsOfService": "yes",
}


def _challenge(api: httpx.Client) -> dict[str, Any]:
    response = api.post("/provisioning/previews/challenge", json={})
    assert response.status_code == 200
    return response.json()["result"]


def _provision(api: httpx.Client, checkpoints: str | None = None, **extra: Any) -> httpx.Response:
    chal = _challenge(api)
    solution = checkpoints if checkpoints is not None else pow.solve(chal["seed"], chal["k"], chal["g"])
    body = TERMS | {"challengeToken": chal["challengeToken"], "solution": {"checkpoints": solution}} | extra
    return api.post("/provisioning/previews", json=body)


def test_solver_matches_the_documented_construction() -> None:
    seed = pow.encode_seed(bytes(range(32)))
    h = hashlib.sha256(bytes(range(32))).digest()
    points = [h]
    for _ in range(3):
        for _ in range(7):
            h = hashlib.sha256(h).digest()
        points.append(h)
    assert pow.solve(seed, 3, 7) == base64.b64encode(b"".join(points)).decode()
    assert pow.verify(seed, 3, 7, pow.solve(seed, 3, 7))


def test_verifier_rejects_wrong_solutions() -> None:
    seed = pow.encode_seed(b"\x07" * 32)
    raw = bytearray(base64.b64decode(pow.solve(seed, 4, 50)))
    raw[2 * 32 + 5] ^= 1  # corrupt the end of segment 2
    assert not pow.verify(seed, 4, 50, base64.b64encode(bytes(raw)).decode())
    assert not pow.verify(seed, 4, 50, pow.solve(seed, 4, 49))  # segments one hash short
    assert not pow.verify(
        seed, 4, 50, base64.b64encode(base64.b64decode(pow.solve(seed, 4, 50))[32:]).decode()
    )
    assert not pow.verify(seed, 4, 50, pow.solve(seed, 4, 50).replace("+", "-").replace("/", "_") + "!")
    assert not pow.verify(seed, 4, 50, None)
    with pytest.raises(ValueError):
        pow.solve(seed, 1000, 64_001)


def test_challenge_uses_the_configured_sizes(api: httpx.Client) -> None:
    chal = _challenge(api)
    assert (chal["k"], chal["g"]) == (4, 500)
    assert len(pow.decode_seed(chal["seed"])) == 32 and "=" not in chal["seed"]


def test_provisioned_account_is_real(emu: Emulator, api: httpx.Client) -> None:
    response = _provision(api)
    assert response.status_code == 200
    result = response.json()["result"]
    account, claim = result["account"], result["claim"]
    assert result["eventCodeAccepted"] is False
    assert account["expiresAt"] == claim["expiresAt"] and account["type"] == "standard"
    token = bearer(account["apiToken"])
    verified = api.get(f"/accounts/{account['id']}/tokens/verify", headers=token).json()["result"]
    assert verified["id"] == account["tokenId"]
    assert api.get(f"/accounts/{account['id']}/workers/scripts", headers=token).status_code == 200
    assert (
        api.post(f"/accounts/{account['id']}/d1/database", json={"name": "db"}, headers=token).status_code
        == 200
    )
    assert (
        api.get(f"/accounts/{account['id']}/r2/buckets", headers=token).status_code == 403
    )  # no R2 on previews
    info = emu.account_info(account["id"])
    assert info is not None and info["preview"] and not info["claimed"]

    assert claim["url"] == f"{emu.origin}/claim/{claim['token']}"
    first = httpx.get(claim["url"])
    assert first.status_code == 200 and first.json() == {"claimed": True, "account_id": account["id"]}
    assert httpx.post(claim["url"]).status_code == 409
    assert emu.account_info(account["id"])["claimed"] is True  # type: ignore[index]


def test_wrong_solution_is_rejected_and_burns_the_challenge(api: httpx.Client) -> None:
    chal = _challenge(api)
    wrong = pow.solve(chal["seed"], chal["k"], chal["g"] + 1)
    body = TERMS | {"challengeToken": chal["challengeToken"], "solution": {"checkpoints": wrong}}
    refused = api.post("/provisioning/previews", json=body)
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == 1033
    body["solution"] = {"checkpoints": pow.solve(chal["seed"], chal["k"], chal["g"])}
    reused = api.post("/provisioning/previews", json=body)
    assert reused.status_code == 400 and reused.json()["errors"][0]["code"] == 1032


def test_terms_must_be_accepted(api: httpx.Client) -> None:
    chal = _challenge(api)
    body = TERMS | {
        "acceptTermsOfService": "no",
        "challengeToken": chal["challengeToken"],
        "solution": {"checkpoints": pow.solve(chal["seed"], chal["k"], chal["g"])},
    }
    response = api.post("/provisioning/previews", json=body)
    assert response.status_code == 400 and response.json()["errors"][0]["code"] == 1031


def test_challenges_expire() -> None:
    with (
        Emulator(previews=PreviewSettings(k=2, g=10, challenge_ttl=0.2)) as emu,
        httpx.Client(base_url=emu.base_url) as api,
    ):
        chal = _challenge(api)
        body = TERMS | {
            "challengeToken": chal["challengeToken"],
            "solution": {"checkpoints": pow.solve(chal["seed"], chal["k"], chal["g"])},
        }
        pending = emu.context.challenges[chal["challengeToken"]]
        wait_until(lambda: pending["expires"] <= time.monotonic(), timeout=5, what="the challenge to expire")
        response = api.post("/provisioning/previews", json=body)
        assert response.status_code == 400 and response.json()["errors"][0]["code"] == 1032


def test_unclaimed_accounts_are_deleted_claimed_ones_stay() -> None:
    with (
        Emulator(previews=PreviewSettings(k=2, g=10, account_ttl=1.0)) as emu,
        httpx.Client(base_url=emu.base_url) as api,
    ):
        doomed = _provision(api).json()["result"]["account"]
        kept = _provision(api).json()["result"]
        assert httpx.get(kept["claim"]["url"]).status_code == 200
        wait_until(
            lambda: emu.account_info(doomed["id"]) is None, timeout=10, what="the unclaimed account to go"
        )
        assert (
            api.get(f"/accounts/{doomed['id']}/tokens/verify", headers=bearer(doomed["apiToken"])).status_code
            == 401
        )
        assert emu.account_info(kept["account"]["id"]) is not None
        keeper = bearer(kept["account"]["apiToken"])
        assert api.get(f"/accounts/{kept['account']['id']}/tokens/verify", headers=keeper).status_code == 200


def test_event_codes() -> None:
    settings = PreviewSettings(k=2, g=10, event_codes={"HACKDAY": 1})
    with Emulator(previews=settings) as emu, httpx.Client(base_url=emu.base_url) as api:
        assert _provision(api, eventCode="HACKDAY").json()["result"]["eventCodeAccepted"] is True
        assert _provision(api, eventCode="HACKDAY").json()["errors"][0]["code"] == 1040
        assert _provision(api, eventCode="NOPE").json()["errors"][0]["code"] == 1035
        emu.previews.available = False
        unavailable = api.post("/provisioning/previews/challenge", json={})
        assert unavailable.status_code == 503 and unavailable.json()["errors"][0]["code"] == 1041
