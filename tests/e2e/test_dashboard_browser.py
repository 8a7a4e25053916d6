"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (never a
browser download). Sign in, create a key and read its secret once, chat with it in the
playground (streamed, with usage and cost), find the request in the log and open it, edit
the key, revoke it (the gateway then refuses it), on a laptop screen and on a phone.
Screenshots of every page are saved under tests/artifacts/ui/ (printed at the start)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ROOT, Server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"
LAPTOP = {"width": 1366, "height": 860}
PHONE = {"width": 390, "height": 844}
PAGES = ("overview", "keys", "models", "requests", "playground")


def _chromium() -> Path:
    """Debian's chromium; installed with apt-get when it is missing and we are root."""
    found = shutil.which("chromium")
    if found:
        return Path(found)
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no /usr/bin/chromium, and not root to `apt-get install -y chromium`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
    if done.returncode != 0:  # maybe a stale package list: refresh it once
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=900)
    if done.returncode != 0 or not CHROMIUM.exists():
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        pytest.skip(f"chromium could not be installed with apt-get: {' / '.join(tail)}")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    path = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {ARTIFACTS}")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(path), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("ui")).start()
    yield s
    s.stop()


class Watch:
    """Script errors and Content-Security-Policy refusals seen by a page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        text = msg.text
        if msg.type == "error" and "Failed to load resource" not in text:
            self.problems.append(f"console: {text}")  # CSP refusals land here


def _shot(page: Any, name: str, **kw: Any) -> None:
    page.wait_for_timeout(150)  # let the last paint settle
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, **kw)


def _sign_in(page: Any, srv: Server) -> None:
    page.goto(srv.url + "/ui/")
    page.fill("#admin-key", srv.master_key)
    page.click("form.signin-card button[type=submit]")
    page.wait_for_selector("#main h1")


def _go(page: Any, hash_route: str, heading: str) -> None:
    page.evaluate("r => { location.hash = r }", hash_route)
    page.wait_for_function(
        "h => { const e = document.querySelector('#main h1'); return e && e.textContent === h"
        " && !document.querySelector('#main').hasAttribute('aria-busy') }",
        arg=heading,
    )


def test_sign_in_key_playground_log_and_revoke_on_a_laptop(browser: Any, srv: Server) -> None:
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport=LAPTOP)
    page = ctx.new_page()
    watch = Watch(page)
    page.set_default_timeout(15_000)

    # sign-in: a wrong key is told apart from the right one
    page.goto(srv.url + "/ui/")
    _shot(page, "laptop-signin")
    page.fill("#admin-key", "mk-not-the-master-key")
    page.click("form.signin-card button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("not this gateway's admin key")
    page.fill("#admin-key", srv.master_key)
    page.click("form.signin-card button[type=submit]")
    expect(page.locator("#main h1")).to_have_text("Overview")

    # keys: create one with a policy; its secret is shown once
    _go(page, "#/keys", "Keys")
    page.click("#new-key")
    page.fill("#kf-name", "browser-key")
    page.fill("#kf-owner", "qa")
    page.click("form[data-form=create] .chips button:text-is('gpt-5.1')")
    page.fill("#kf-rpm", "60")
    page.fill("#kf-budget_usd", "25")
    page.select_option("#kf-budget_period", "monthly")
    page.click("form[data-form=create] button[type=submit]")
    secret_el = page.locator("#secret-panel code[data-secret]")
    expect(secret_el).to_be_visible()
    secret = secret_el.inner_text().strip()
    assert secret.startswith("sk-cg-") and len(secret) > 30
    _shot(page, "laptop-keys-secret-once", mask=[secret_el])
    card = page.locator("article.key-card", has_text="browser-key")
    key_id = card.get_attribute("data-key-id")
    assert key_id
    expect(card).to_contain_text("60 rpm")
    expect(card).to_contain_text("gpt-5.1")
    expect(card).to_contain_text("(monthly)")
    page.click("#secret-panel button:text-is('Done, hide it')")
    assert secret not in page.content()

    # edit its limits
    card.locator("button[data-action=edit]").click()
    page.fill("form[data-form=edit] #kf-tpm", "500000")
    page.click("form[data-form=edit] button[type=submit]")
    expect(card).to_contain_text("500,000 tpm")
    _shot(page, "laptop-keys")

    # playground: chat with the new key, streamed, then usage and cost
    _go(page, "#/playground", "Playground")
    page.select_option("#pg-key", key_id)
    expect(page.locator("#pg-model option")).to_have_count(1)  # the key may use one model
    page.fill("#pg-input", "Hello from the browser test")
    page.click("#pg-send")
    expect(page.locator(".msg.assistant").last).not_to_be_empty()
    cost = page.locator("[data-cost]").last
    expect(cost).to_contain_text("$", timeout=15_000)
    meta = page.locator(".msg-meta").last
    expect(meta).to_contain_text(" in · ")
    expect(meta).to_contain_text("out tokens")
    request_id = page.locator("[data-request-link]").last.get_attribute("data-request-link")
    assert request_id and request_id.startswith("chatcmpl-")
    _shot(page, "laptop-playground")

    # the request log (filtered to the key) shows it; its detail has every field
    _go(page, f"#/requests?since=24h&key={key_id}", "Request log")
    row = page.locator(f"tr[data-request-id='{request_id}']")
    expect(row).to_be_visible()
    expect(row).to_contain_text("gpt-5.1")
    _shot(page, "laptop-requests")
    row.click()
    page.wait_for_selector("#request-detail")
    detail = page.locator("#request-detail")
    expect(detail.locator("[data-field=request_id]")).to_have_text(request_id)
    expect(detail.locator("[data-field=key_name]")).to_have_text("browser-key")
    expect(detail.locator("[data-field=status]")).to_have_text("200")
    expect(detail.locator("[data-field=stream]")).to_have_text("yes")
    expect(detail.locator("[data-field=cost_usd]")).to_contain_text("$")
    _shot(page, "laptop-request-detail")

    # the overview and the models page draw their charts and tables (with a failure to show)
    failed = httpx.post(
        srv.url + "/v1/chat/completions",
        json={
            "model": "claude-sonnet-4-6",
            "messages": [{"role": "user", "content": "x [sandbox:error=503]"}],
        },
        headers={"Authorization": f"Bearer {srv.master_key}"},
        timeout=10,
    )
    assert failed.status_code == 503
    srv.wait_usage_ids({failed.headers["x-request-id"]})
    _go(page, "#/overview", "Overview")
    expect(page.locator("[data-stat=requests] .value")).not_to_have_text("0")
    assert page.locator(".chart svg").count() >= 5
    _shot(page, "laptop-overview")
    _go(page, "#/models", "Models & deployments")
    expect(page.locator("tr[data-deployment]").first).to_be_visible()
    recent = page.locator(f"tr[data-error-request='{failed.headers['x-request-id']}']")
    expect(recent).to_contain_text("503")
    _shot(page, "laptop-models")

    # revoke (two clicks); the gateway refuses the key at once, in the playground too
    _go(page, "#/keys", "Keys")
    revoke = page.locator(f"article[data-key-id='{key_id}'] button:text-is('Revoke')")
    revoke.click()
    page.locator(f"article[data-key-id='{key_id}'] button.armed").click()
    expect(page.locator(f"article[data-key-id='{key_id}']")).to_have_count(0)
    r = httpx.post(
        srv.url + "/v1/chat/completions",
        json={"model": "gpt-5.1", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_revoked"
    _go(page, "#/playground", "Playground")
    page.select_option("#pg-key", "paste")
    page.fill("#pg-paste", secret)
    page.locator("#pg-paste").dispatch_event("change")
    page.fill("#pg-input", "Am I still allowed?")
    page.click("#pg-send")
    expect(page.locator(".msg.error").last).to_contain_text("revoked")
    page.fill("#pg-paste", "")  # the pasted secret leaves the page
    for name in PAGES:
        _go(page, f"#/{name}", page_heading(name))
        assert secret not in page.content()
        assert secret[10:] not in page.content()
    assert not watch.problems, watch.problems
    ctx.close()


def page_heading(name: str) -> str:
    return {
        "overview": "Overview",
        "keys": "Keys",
        "models": "Models & deployments",
        "requests": "Request log",
        "playground": "Playground",
    }[name]


def test_every_page_on_a_phone(browser: Any, srv: Server) -> None:
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = ctx.new_page()
    watch = Watch(page)
    page.set_default_timeout(15_000)
    srv.admin("POST", "/admin/keys", json={"name": "phone-key", "rpm": 30, "budget_usd": 10})
    _sign_in(page, srv)
    # the nav is folded away, and the menu button unfolds it
    nav = page.locator("#nav")
    assert nav.bounding_box()["x"] < 0
    page.click(".nav-toggle")
    page.wait_for_timeout(300)
    assert nav.bounding_box()["x"] >= 0
    _shot(page, "phone-nav")
    page.click("#nav a[data-page=playground]")
    expect(page.locator("#main h1")).to_have_text("Playground")
    page.fill("#pg-input", "Hello from a phone")
    page.click("#pg-send")
    expect(page.locator("[data-cost]").last).to_contain_text("$", timeout=15_000)
    for name in PAGES:
        _go(page, f"#/{name}", page_heading(name))
        # nothing wider than the screen, except inside a table's own scroller
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"] + 1, f"{name} is {width}px wide on a phone"
        _shot(page, f"phone-{name}")
    _go(page, "#/keys", "Keys")
    expect(page.locator("article.key-card", has_text="phone-key")).to_contain_text("30 rpm")
    page.click("#new-key")
    page.fill("#kf-name", "typed on a phone")
    _shot(page, "phone-keys-new")
    first = page.locator("tr[data-request-id]")
    _go(page, "#/requests", "Request log")
    first.first.click()
    page.wait_for_selector("#request-detail")
    _shot(page, "phone-request-detail")
    assert not watch.problems, watch.problems
    ctx.close()
