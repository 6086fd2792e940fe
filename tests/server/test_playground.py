"""The playground page in headless Chromium (Debian's ``chromium``, driven by Playwright): type a
prompt, generate, watch the text stream in, coloured by token probability, with alternatives on hover."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str | None:
    """$GPTLAB_CHROMIUM, else the first Chromium-family browser on PATH."""
    explicit = os.environ.get("GPTLAB_CHROMIUM")
    if explicit:
        return explicit
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_binary()
    if executable is None:
        pytest.skip("no chromium binary found (apt-get install chromium, or set GPTLAB_CHROMIUM); "
                    "Playwright cannot download browsers here")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.fill("#api-key", server.api_key)
    page.dispatch_event("#api-key", "change")
    page.wait_for_function("window.playground.model === 'tiny-run'", timeout=15_000)
    yield page
    context.close()
    assert not errors, errors


def set_range(page, selector: str, value: float) -> None:
    page.eval_on_selector(selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", value)


def wait_until_done(page) -> None:
    page.wait_for_function("!document.querySelector('#generate').disabled && window.playground.chunks > 0",
                           timeout=30_000)


def test_completion_streams_with_coloured_tokens(page, server, tmp_path):
    page.fill("#prompt", "def ")
    set_range(page, "#max-tokens", 60)
    set_range(page, "#temperature", 1.0)
    page.fill("#seed", "3")
    page.evaluate("""() => {
        window.outputMutations = 0;
        new MutationObserver(() => { window.outputMutations += 1; })
            .observe(document.querySelector('#output'), {childList: true, subtree: true, characterData: true});
    }""")
    page.click("#generate")
    wait_until_done(page)

    assert page.evaluate("window.playground.chunks") > 10  # one SSE chunk per token, not one blob
    assert page.evaluate("window.outputMutations") > 2  # the page redrew as the text arrived
    text = page.inner_text("#output")
    api = httpx.post(server.url + "/v1/completions", headers={"Authorization": f"Bearer {server.api_key}"},
                     json={"prompt": "def ", "max_tokens": 60, "temperature": 1.0, "seed": 3, "top_p": 1.0},
                     timeout=30).json()
    assert text == "def " + api["choices"][0]["text"]  # the same API, the same seeded sample
    tokens = page.locator("#output .tok")
    assert tokens.count() >= 50
    colours = {tokens.nth(i).evaluate("el => getComputedStyle(el).backgroundColor") for i in range(20)}
    assert "rgba(0, 0, 0, 0)" not in colours and len(colours) > 1  # coloured, by probability

    tokens.nth(5).hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    assert "p = " in tooltip.inner_text()
    assert tooltip.locator("tr").count() >= 5  # the top alternatives (logprobs: 5)
    assert "tokens in" in page.inner_text("#stats")
    page.screenshot(path=str(tmp_path / "playground-completion.png"), full_page=True)
    assert (tmp_path / "playground-completion.png").stat().st_size > 10_000


def test_chat_mode(page, tmp_path):
    page.check("input[name=mode][value=chat]")
    assert page.inner_text("#generate") == "Send"
    set_range(page, "#max-tokens", 30)
    page.fill("#prompt", "Write a loop")
    page.click("#generate")
    wait_until_done(page)
    turns = page.locator("#transcript .turn")
    turns.nth(1).wait_for()
    assert turns.nth(0).inner_text() == "Write a loop"
    assert "assistant" in (turns.nth(1).get_attribute("class") or "")
    assert page.locator("#output .tok").count() >= 1
    page.screenshot(path=str(tmp_path / "playground-chat.png"), full_page=True)


def test_wrong_api_key_shows_the_error(page):
    page.fill("#api-key", "wrong")
    page.click("#generate")
    page.locator("#error").wait_for(state="visible")
    assert "401" in page.inner_text("#error")
