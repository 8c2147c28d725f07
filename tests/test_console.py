"""The operator console (authsvc.console), served by a real `authsvc serve` on its own database: in a real browser
(headless chromium, tests/browser.py) end to end, and with a real HTTP client for what a browser would not send
(a form without its CSRF token, a request without a session). Saves screenshots of the main pages (SCREENSHOTS).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from authsvc import operators
from authsvc.console.protocol import REQUEST_SECONDS
from authsvc.console.sessions import LoginLink, Sessions
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc, auth_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as pb
from tests.browser import chromium
from tests.conftest import new_database
from tests.processes import Served, authsvc, clean_env, serve
from tests.test_tls import issue

if TYPE_CHECKING:
    from authsvc.v1.admin_service_pb2_grpc import AdminServiceAsyncStub
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(os.environ.get("AUTHSVC_SCREENSHOTS") or ROOT / "build" / "console-screenshots")
"""Where the run saves its screenshots of the main pages: build/ (git-ignored), or docs/console with
`make screenshots`, which refreshes the pictures of docs/console.md."""
OPERATOR = operators.new_token("alice")
TOKEN = OPERATOR.split(":", 1)[1]
CONSOLE_LINE = re.compile(r"console on \S+:(\d+)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
POST_FORM = re.compile(r'<form\b(?=[^>]*method="post")[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)


@dataclass
class Console:
    """A running `authsvc serve` with its console."""

    served: Served
    url: str

    def stubs(self, channel: grpc.aio.Channel) -> tuple[AuthServiceAsyncStub, AdminServiceAsyncStub]:
        return auth_service_pb2_grpc.AuthServiceStub(channel), admin_service_pb2_grpc.AdminServiceStub(channel)


def console_port(served: Served) -> int | None:
    ports = [int(m.group(1)) for r in served.records if (m := CONSOLE_LINE.search(str(r.get("message", ""))))]
    return ports[0] if ports else None


async def start(
    server_url: str, workdir: Path, env: dict[str, str] | None = None, workers: int = 1, args: tuple[str, ...] = ()
) -> AsyncIterator[Console]:
    async with new_database(server_url, "authsvc_console") as url:
        settings = {"AUTHSVC_DATABASE_URL": url, "AUTHSVC_OPERATOR_TOKENS": OPERATOR, "AUTHSVC_CONSOLE_PORT": "0"}
        env = env or {}
        async with serve(clean_env(**{**settings, **env}), workdir, *args, workers=workers) as served:
            await served.wait_for(lambda records: console_port(served) is not None)
            scheme = "https" if "AUTHSVC_CONSOLE_TLS_CERT_FILE" in env else "http"
            yield Console(served, f"{scheme}://127.0.0.1:{console_port(served)}")


@pytest.fixture(scope="module")
async def console(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    """A server with operator alice and its console, on a database of its own (the screenshots show only it)."""
    async for running in start(server_url, tmp_path_factory.mktemp("console")):
        yield running


@pytest.fixture(scope="module")
async def linked(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    """A server whose console prints a one-time login link, as `make run` starts it (and whose login limit the
    rate test may use up)."""
    async for running in start(server_url, tmp_path_factory.mktemp("linked"), {"AUTHSVC_CONSOLE_LOGIN_LINK": "true"}):
        yield running


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dev_token(user_id: str) -> str:
    """An unsigned developer token: valid only while the app's auth checks are disabled."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps({'user_id': user_id}).encode())}.devtoken"


def operator_metadata() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKEN}"),)


async def log_in(client: httpx.AsyncClient, token: str = TOKEN) -> httpx.Response:
    page = await client.get("/login")
    csrf = CSRF.search(page.text)
    assert csrf is not None, page.text
    return await client.post("/login", data={"csrf": csrf.group(1), "token": token})


@pytest.fixture
async def client(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client logged in as alice."""
    async with httpx.AsyncClient(base_url=console.url) as client:
        assert (await log_in(client)).status_code == 303
        yield client


def shot(browser: webdriver.Chrome, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(700, min(int(height) + 200, 2400)))
    assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    browser.set_window_size(1280, 900)


def submit(browser: webdriver.Chrome, selector: str) -> None:
    """Clicks a button that submits a form (or a link), and waits until the next page has replaced this one."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, selector).click()
    WebDriverWait(browser, 30).until(lambda _: _gone(page))
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _gone(element: WebElement) -> bool:
    """True once `element` no longer belongs to the page shown. Chromium answers a query of an element of a page
    it has left with a stale-element error, or (some builds) an inspector error ("Node with given id does not
    belong to the document"), which expected_conditions.staleness_of does not take for staleness."""
    try:
        element.is_enabled()
    except WebDriverException:  # StaleElementReferenceException among them
        return True
    return False


def text(browser: webdriver.Chrome, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def flashes(browser: webdriver.Chrome) -> list[str]:
    return [str(e.text) for e in browser.find_elements(By.CSS_SELECTOR, ".flash")]


async def outcome(auth: AuthServiceAsyncStub, api_key: str, token: str) -> str:
    answer = await auth.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=(("x-api-key", api_key),))
    return pb.VerifyOutcome.Name(answer.outcome)


async def test_an_operator_runs_an_app_from_the_browser(console: Console) -> None:
    async with grpc.aio.insecure_channel(console.served.target) as channel:
        auth, admin = console.stubs(channel)
        with chromium() as browser:
            browser.get(f"{console.url}/apps")
            assert browser.current_url == f"{console.url}/login", "a page without a session sends to the login"
            shot(browser, "login")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            submit(browser, "#login")
            assert browser.current_url == f"{console.url}/apps"
            assert text(browser, "operator") == "alice"

            # Create an app: the secret is shown once.
            browser.find_element(By.ID, "name").send_keys("chat-dev")
            browser.find_element(By.ID, "token_ttl").send_keys("1h")
            submit(browser, "#create")
            api_key, secret = text(browser, "api-key"), text(browser, "api-secret")
            assert re.fullmatch(r"[a-z0-9]+", api_key) and len(secret) >= 32
            submit(browser, "#to-app")
            assert secret not in browser.page_source, "the secret is shown once, on the page after creating"

            # Auth checks on: the unsigned developer token is refused, over gRPC.
            dev = dev_token("dev-user")
            assert await outcome(auth, api_key, dev) == "VERIFY_OUTCOME_INVALID_SIGNATURE"
            browser.find_element(By.ID, "auth_checks_disabled").click()
            submit(browser, "#save")
            assert any("Auth checks are DISABLED" in f for f in flashes(browser))
            assert "Development only" in text(browser, "dev-warning")
            shot(browser, "app-settings")
            assert await outcome(auth, api_key, dev) == "VERIFY_OUTCOME_VALID"

            # Guests and anonymous users, switched on from the same form, seen over gRPC.
            assert await outcome(auth, api_key, "") == "VERIFY_OUTCOME_ANONYMOUS_DISABLED"
            browser.find_element(By.ID, "guest_access").click()
            browser.find_element(By.ID, "anonymous_access").click()
            ttl = browser.find_element(By.ID, "guest_token_ttl")
            ttl.clear()
            ttl.send_keys("2h")
            submit(browser, "#save")
            assert await outcome(auth, api_key, "") == "VERIFY_OUTCOME_VALID"
            guest = await auth.IssueGuestToken(
                pb.IssueGuestTokenRequest(user_id="visitor"), metadata=(("x-api-key", api_key),)
            )
            assert guest.user_id == "guest-visitor"
            assert guest.expires_at.seconds - guest.issued_at.seconds == 7200

            # A user's token, revoked from the revocations page.
            issued = await auth.IssueToken(
                pb.IssueTokenRequest(user_id="bob"),
                metadata=(("x-api-key", api_key), ("authorization", f"Bearer {secret}")),
            )
            assert await outcome(auth, api_key, issued.token) == "VERIFY_OUTCOME_VALID"
            browser.get(f"{console.url}/apps/{api_key}/revocations")
            browser.find_element(By.ID, "revoke-user-ids").send_keys("bob")
            submit(browser, "#revoke-users-button")
            assert any("Revoked the tokens of bob" in f for f in flashes(browser))
            assert await outcome(auth, api_key, issued.token) == "VERIFY_OUTCOME_REVOKED"
            browser.find_element(By.ID, "lookup-user").send_keys("bob")
            submit(browser, "#lookup button")
            assert "are REVOKED" in text(browser, "effective")
            shot(browser, "revocations")

            browser.get(f"{console.url}/apps/{api_key}/keys")
            assert json.loads(text(browser, "jwks")) == {"keys": []}, "an HS256 app publishes no key"
            shot(browser, "keys")

            # The inspector says why, and never shows the token back.
            browser.get(f"{console.url}/inspect")
            Select(browser.find_element(By.ID, "inspect-app")).select_by_value(api_key)
            browser.find_element(By.ID, "inspect-token").send_keys(issued.token)
            submit(browser, "#inspect-button")
            assert text(browser, "outcome") == "REVOKED"
            assert "bob's tokens issued before" in text(browser, "why")
            assert issued.token not in browser.page_source and issued.token.split(".")[2] not in browser.page_source
            shot(browser, "inspector")

            # Both actions in the audit log, by alice through the console.
            browser.get(f"{console.url}/audit?app={api_key}")
            rows = [
                [str(cell.text) for cell in row.find_elements(By.TAG_NAME, "td")]
                for row in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
            ]
            actions = {(row[1], row[2]) for row in rows}
            assert {("operator:alice", "app.updated"), ("operator:alice", "users.revoked")} <= actions, rows
            assert all(row[4].startswith("console:127.0.0.1:") for row in rows), rows
            shot(browser, "audit")
            listed = await admin.ListAuditEvents(
                admin_pb.ListAuditEventsRequest(api_key=api_key, action_prefix="users."), metadata=operator_metadata()
            )
            assert [(e.actor, e.action) for e in listed.events] == [("operator:alice", "users.revoked")]

            browser.get(f"{console.url}/figures")
            cells = [str(c.text) for c in browser.find_elements(By.CSS_SELECTOR, "#figures tbody td")]
            assert cells[0] == "this process" and cells[1].isdigit(), cells
            shot(browser, "figures")
            browser.get(f"{console.url}/apps")
            assert "DISABLED" in text(browser, "apps")
            shot(browser, "apps")

            submit(browser, "#logout")
            assert browser.current_url == f"{console.url}/login"
            browser.get(f"{console.url}/apps")
            assert browser.current_url == f"{console.url}/login", "logged out: the session is gone"


async def test_every_form_is_refused_without_its_csrf_token(console: Console, client: httpx.AsyncClient) -> None:
    async with grpc.aio.insecure_channel(console.served.target) as channel:
        _, admin = console.stubs(channel)
        created = await admin.CreateApp(
            admin_pb.CreateAppRequest(name="csrf", algorithm=admin_pb.ALGORITHM_EDDSA), metadata=operator_metadata()
        )
        api_key = created.app.api_key
        pages = ["/apps", f"/apps/{api_key}", f"/apps/{api_key}/keys", f"/apps/{api_key}/revocations", "/inspect"]
        forms: dict[str, dict[str, str]] = {}
        for path in pages:
            page = await client.get(path)
            assert page.status_code == 200, path
            for action, body in POST_FORM.findall(page.text):
                fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))
                assert fields.get("csrf"), f"the form {action} on {path} carries no CSRF token"
                forms[action] = fields
        expected = {"/apps", "/logout", "/inspect", f"/apps/{api_key}/settings", f"/apps/{api_key}/keys/retire",
                    f"/apps/{api_key}/keys/rotate", f"/apps/{api_key}/secret/rotate"} | {
                    f"/apps/{api_key}/revocations/{name}"
                    for name in ("revoke-users", "revoke-app", "clear-users", "clear-app")}  # fmt: skip
        assert set(forms) == expected
        before = await admin.ListAuditEvents(admin_pb.ListAuditEventsRequest(limit=1000), metadata=operator_metadata())
        values = {
            "name": "renamed",
            "user_ids": "carol",
            "api_key": api_key,
            "token": dev_token("carol"),
            "delay": "0s",
        }
        for action, fields in forms.items():
            for csrf in (None, "", "not-the-token", fields["csrf"][:-1]):
                data = {**values, **fields}
                if csrf is None:
                    del data["csrf"]
                else:
                    data["csrf"] = csrf
                refused = await client.post(action, data=data)
                assert refused.status_code == 403, (action, csrf, refused.text)
                assert "CSRF token is missing or wrong" in refused.text
        after = await admin.ListAuditEvents(admin_pb.ListAuditEventsRequest(limit=1000), metadata=operator_metadata())
        assert list(after.events) == list(before.events), "a refused form changes nothing"
        assert (await client.get("/apps")).status_code == 200, "the session survived: logout was refused too"
        # And with its token, a form does what it says.
        done = await client.post(f"/apps/{api_key}/revocations/revoke-app", data={"csrf": forms["/logout"]["csrf"]})
        assert (done.status_code, done.headers["location"]) == (303, f"/apps/{api_key}/revocations")
        assert "Revoked every token of the app" in (await client.get(done.headers["location"])).text


async def test_the_audit_log_filters_and_pages(console: Console, client: httpx.AsyncClient) -> None:
    async with grpc.aio.insecure_channel(console.served.target) as channel:
        _, admin = console.stubs(channel)
        created = await admin.CreateApp(admin_pb.CreateAppRequest(name="paged"), metadata=operator_metadata())
        api_key = created.app.api_key
        for n in range(60):
            await admin.UpdateApp(
                admin_pb.UpdateAppRequest(api_key=api_key, name=f"paged-{n}"), metadata=operator_metadata()
            )
    row = re.compile(r"<tr>\s*<td>[^<]*</td>\s*<td>([^<]*)</td>\s*<td class=\"action\">([^<]*)</td>.*?</tr>", re.S)
    first = await client.get("/audit", params={"app": api_key, "action": "app.updated", "actor": "operator:alice"})
    older = re.search(r'href="/audit\?([^"]+)" id="older"', first.text)
    assert older is not None
    second = await client.get(f"/audit?{older.group(1).replace('&amp;', '&')}")
    pages = [row.findall(first.text), row.findall(second.text)]
    assert [len(page) for page in pages] == [50, 10]
    assert {entry for page in pages for entry in page} == {("operator:alice", "app.updated")}
    numbers = [int(n) for n in re.findall(r"paged-(\d+)", first.text + second.text)]
    assert numbers == sorted(numbers, reverse=True) and set(numbers) == set(range(60)), "newest first, none twice"
    assert 'id="older"' not in second.text
    assert "No recorded change matches" in (await client.get("/audit", params={"actor": "operator:nobody"})).text
    # A cursor that is not one of the console's own is a 400 with its reason, never a 500.
    for cursor in ("x.1", "1", "99999999999999999999999.1", "1.99999999999999999999", "\u00b2.1", "1.\u0663"):
        refused = await client.get("/audit", params={"before": cursor})
        assert refused.status_code == 400 and "INVALID_CURSOR" in refused.text, cursor


async def test_no_link_puts_words_on_a_page(client: httpx.AsyncClient) -> None:
    page = await client.get("/apps", params={"flash": "Call 555-0100 now", "error": "<b>lost</b>"})
    assert page.status_code == 200 and "555-0100" not in page.text and "lost" not in page.text
    missing = await client.get("/apps/<script>x</script>")
    assert missing.status_code == 404 and "<script>" not in missing.text


async def test_pages_are_refused_without_a_session(console: Console) -> None:
    for cookie in (None, "forged-session-id"):
        cookies = {"authsvc_console": cookie} if cookie else {}
        async with httpx.AsyncClient(base_url=console.url, cookies=cookies) as anonymous:
            for path in ("/apps", "/apps/x", "/apps/x/keys", "/apps/x/revocations", "/inspect", "/audit", "/figures"):
                answer = await anonymous.get(path)
                assert (answer.status_code, answer.headers["location"]) == (303, "/login"), path
            for path in ("/apps", "/apps/x/settings", "/apps/x/revocations/revoke-app", "/inspect", "/logout"):
                answer = await anonymous.post(path, data={"csrf": "x", "name": "x"})
                assert answer.status_code == 403 and "not logged in" in answer.text, path


async def test_a_request_that_never_arrives_whole_is_cut_off_and_grpc_still_answers(console: Console) -> None:
    """A client trickling one header line a second (slowloris) loses its connection at the console's request
    deadline (authsvc.console.protocol: uvicorn alone would hold it for ever), and gRPC answers meanwhile."""
    host, port = console.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"GET /login HTTP/1.1\r\nHost: x\r\n")
    closed_after: float | None = None
    async with grpc.aio.insecure_channel(console.served.target) as channel:
        auth, _ = console.stubs(channel)
        try:
            for _ in range(int(REQUEST_SECONDS) + 5):
                try:
                    async with asyncio.timeout(1):
                        if not await reader.read(1024):
                            closed_after = loop.time() - started
                            break
                except TimeoutError:
                    writer.write(b"X-Slow: y\r\n")
                    await writer.drain()
                # The process's gRPC port answers meanwhile (an unknown app: NOT_FOUND, an answer all the same).
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await auth.VerifyToken(pb.VerifyTokenRequest(token="x"), metadata=(("x-api-key", "none"),))
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        except ConnectionError:
            closed_after = loop.time() - started
        finally:
            writer.close()
    assert closed_after is not None and closed_after <= REQUEST_SECONDS + 2


async def test_login_sets_a_strict_session_cookie_and_pages_a_strict_policy(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.url) as client:
        page = await client.get("/login")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy and "frame-ancestors 'none'" in policy
        assert page.headers["cache-control"] == "no-store" and page.headers["x-frame-options"] == "DENY"
        no_csrf = await client.post("/login", data={"token": TOKEN})
        assert no_csrf.status_code == 403 and "authsvc_console=" not in no_csrf.headers.get("set-cookie", "")
        answer = await log_in(client)
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("authsvc_console="))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= flags and "secure" not in flags  # plain HTTP on loopback
        assert TOKEN not in cookie


async def test_the_inspector_never_writes_the_token_to_the_log(console: Console, client: httpx.AsyncClient) -> None:
    async with grpc.aio.insecure_channel(console.served.target) as channel:
        auth, admin = console.stubs(channel)
        created = await admin.CreateApp(admin_pb.CreateAppRequest(name="inspected"), metadata=operator_metadata())
        app = created.app
        issued = await auth.IssueToken(
            pb.IssueTokenRequest(user_id="dana"),
            metadata=(("x-api-key", app.api_key), ("authorization", f"Bearer {created.api_secret}")),
        )
        page = await client.get("/inspect")
        csrf = CSRF.search(page.text)
        assert csrf is not None
        for token in (issued.token, issued.token + "x", "not.a.token"):
            answer = await client.post("/inspect", data={"csrf": csrf.group(1), "api_key": app.api_key, "token": token})
            assert answer.status_code == 200
            assert token not in answer.text and issued.token.split(".")[2] not in answer.text
        assert (
            'id="outcome">VALID<'
            in (
                await client.post(
                    "/inspect", data={"csrf": csrf.group(1), "api_key": app.api_key, "token": issued.token}
                )
            ).text
        )
        # A failed call is always logged: once its line is read, every line before it is too.
        with pytest.raises(grpc.aio.AioRpcError):
            await auth.VerifyToken(pb.VerifyTokenRequest(token="x"), metadata=(("x-api-key", "nosuchapp"),))
        await console.served.wait_for(lambda records: any(r.get("code") == "NOT_FOUND" for r in records))
        assert issued.token.split(".")[2] not in console.served.output
        assert issued.token.split(".")[1] not in console.served.output


async def test_the_inspector_says_which_revocation_decided(console: Console, client: httpx.AsyncClient) -> None:
    """The inspector's verdict is VerifyToken's, per-token revocations included, and it names what revoked."""
    async with grpc.aio.insecure_channel(console.served.target) as channel:
        auth, admin = console.stubs(channel)
        created = await admin.CreateApp(
            admin_pb.CreateAppRequest(name="revocations told"), metadata=operator_metadata()
        )
        backend = (("x-api-key", created.app.api_key), ("authorization", f"Bearer {created.api_secret}"))
        phone = (await auth.IssueToken(pb.IssueTokenRequest(user_id="erin"), metadata=backend)).token
        laptop = (await auth.IssueToken(pb.IssueTokenRequest(user_id="frank"), metadata=backend)).token
        await auth.RevokeToken(pb.RevokeTokenRequest(token=phone), metadata=backend)
        await auth.RevokeUser(pb.RevokeUserRequest(user_ids=["frank"]), metadata=backend)
        csrf = CSRF.search((await client.get("/inspect")).text)
        assert csrf is not None

        async def inspected(token: str) -> str:
            form = {"csrf": csrf.group(1), "api_key": created.app.api_key, "token": token}
            answer = await client.post("/inspect", data=form)
            assert answer.status_code == 200
            return answer.text

        for token, told in ((phone, "This very token (its jti) was revoked"), (laptop, "frank&#39;s tokens issued")):
            assert (await auth.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=backend[:1])).outcome == (
                pb.VERIFY_OUTCOME_REVOKED
            )
            page = await inspected(token)
            assert 'id="outcome">REVOKED<' in page and told in page, page
        await auth.RevokeApp(pb.RevokeAppRequest(), metadata=backend)
        assert "the app&#39;s tokens issued before" in await inspected(phone)  # the app's revocation is judged first


async def test_the_one_time_login_link_works_once_and_is_never_logged(linked: Console) -> None:
    lines = [line for line in linked.served.log if "/login/link?code=" in line]
    assert len(lines) == 1 and lines[0].startswith("authsvc console: open http://127.0.0.1:")
    link = lines[0].split("open ", 1)[1].split()[0]
    code = link.split("code=", 1)[1]
    assert not any(code in json.dumps(record) for record in linked.served.records), "the code is not in the log"
    async with httpx.AsyncClient() as browser:
        first = await browser.get(link)
        assert (first.status_code, first.headers["location"]) == (303, "/apps")
        apps = await browser.get(f"{linked.url}/apps")
        assert apps.status_code == 200 and 'id="operator">local<' in apps.text
    async with httpx.AsyncClient() as other:
        again = await other.get(link)
        assert again.status_code == 403 and "used up or wrong" in again.text


async def test_failed_logins_are_rate_limited(linked: Console) -> None:
    async with httpx.AsyncClient(base_url=linked.url) as client:
        for _ in range(5):
            assert (await log_in(client, "a" * 43)).status_code == 401
        limited = await log_in(client, TOKEN)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "Too many failed logins" in limited.text and "authsvc_console=" not in limited.headers.get(
            "set-cookie", ""
        )


async def test_under_tls_the_cookie_is_secure_and_off_loopback_is_allowed(server_url: str, tmp_path: Path) -> None:
    ca = issue("console test CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    cert, key = issue("localhost", ca, usage="server").write(tmp_path, "console")
    tls = {"AUTHSVC_CONSOLE_TLS_CERT_FILE": str(cert), "AUTHSVC_CONSOLE_TLS_KEY_FILE": str(key)}
    async for running in start(server_url, tmp_path, {"AUTHSVC_CONSOLE_HOST": "0.0.0.0", **tls}):
        async with httpx.AsyncClient(base_url=running.url, verify=ssl.create_default_context(cafile=ca_file)) as client:
            answer = await log_in(client)
            assert answer.status_code == 303
            cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("authsvc_console="))
            assert "secure" in {part.strip().lower() for part in cookie.split(";")}
            assert answer.headers["strict-transport-security"].startswith("max-age=")
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(running.url.replace("https:", "http:") + "/login")


async def test_the_figures_show_every_worker(server_url: str, tmp_path: Path) -> None:
    async for running in start(server_url, tmp_path, workers=2):
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await log_in(client)).status_code == 303
            async with asyncio.timeout(30):
                while True:  # the first readings come within a second or two of start
                    page = (await client.get("/figures")).text
                    rows = re.findall(r"<tr>\s*<td>([^<]+)</td>\s*<td>(\d*)</td>\s*<td>([^<]*)</td>", page)
                    if len(rows) == 2 and all(version for _, version, _ in rows):
                        break
                    await asyncio.sleep(0.5)
            assert [name for name, _, _ in rows] == ["worker 1 (with the console)", "worker 2"]
            assert all(staleness.endswith(" s") for _, _, staleness in rows), rows
            assert "cannot read" not in page
            # Verifications show as outcomes per second, on whichever worker took the connection.
            async with grpc.aio.insecure_channel(running.served.target) as channel:
                auth, admin = running.stubs(channel)
                created = await admin.CreateApp(admin_pb.CreateAppRequest(name="busy"), metadata=operator_metadata())
                async with asyncio.timeout(30):
                    while "INVALID_SIGNATURE" not in page:
                        for _ in range(20):
                            await outcome(auth, created.app.api_key, dev_token("someone"))
                        page = (await client.get("/figures")).text
            assert re.search(r"INVALID_SIGNATURE \d+\.\d/s", page), page


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AUTHSVC_CONSOLE_HOST": "0.0.0.0"}, "without TLS"),
        ({"AUTHSVC_CONSOLE_HOST": "0.0.0.0", "AUTHSVC_CONSOLE_LOGIN_LINK": "true"}, "loopback only"),
        ({"AUTHSVC_CONSOLE_PORT": "8080"}, "must differ from the gRPC and HTTP"),
        ({"AUTHSVC_CONSOLE_TLS_CERT_FILE": "c.pem"}, "set both"),
    ],
    ids=["plaintext-off-loopback", "link-off-loopback", "metrics-port", "half-tls"],
)
async def test_an_unsafe_console_refuses_to_start_in_one_line(env: dict[str, str], message: str) -> None:
    result = await asyncio.to_thread(
        authsvc, "serve", "--port", "0", env=clean_env(**{"AUTHSVC_CONSOLE_PORT": "0", **env})
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


async def test_a_console_port_in_use_is_one_line(database_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_CONSOLE_PORT=str(port))
        result = await asyncio.to_thread(
            authsvc, "serve", "--host", "127.0.0.1", "--port", "0", "--http-port", "0", "--workers", "1", env=env
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"authsvc: cannot listen for the console on 127.0.0.1:{port}: Address already in use\n"


def test_sessions_end_after_the_idle_timeout_and_at_logout() -> None:
    now = [0.0]
    sessions = Sessions(idle_timeout=60, clock=lambda: now[0])
    session_id, session = sessions.open("alice")
    now[0] = 59
    assert sessions.get(session_id) is session, "a request keeps it alive"
    now[0] = 59 + 60.5
    assert sessions.get(session_id) is None, "idle past the timeout: gone"
    other, _ = sessions.open("alice")
    sessions.close(other)
    assert sessions.get(other) is None


def test_a_login_link_opens_one_session() -> None:
    link = LoginLink()
    code = link.code
    assert code is not None
    assert not link.redeem("wrong") and not link.redeem(None)
    assert link.redeem(code) and link.code is None
    assert not link.redeem(code)
