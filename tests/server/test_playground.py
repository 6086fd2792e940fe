"""The playground page in headless Chromium (Debian's ``chromium``, driven by Playwright): type a
prompt, generate, watch the text stream in, coloured by token probability, with alternatives on hover;
then open the Inspect panel on that text: attention shading on hover, probabilities, next tokens."""

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


def chip_colours(page, selector: str) -> list[str]:
    """The chips' background colours once their 80 ms colour transitions have run."""
    page.wait_for_function("document.getAnimations().length === 0")
    return page.eval_on_selector_all(selector, "els => els.map(el => getComputedStyle(el).backgroundColor)")


def test_inspect_panel_attention_and_probabilities(page, server, tmp_path):
    page.fill("#prompt", "def wrap(text):\n")
    set_range(page, "#max-tokens", 24)
    page.fill("#seed", "4")
    page.click("#generate")
    wait_until_done(page)
    text = page.evaluate("window.playground.prefix + window.playground.text")

    page.click("#inspect-button")
    page.wait_for_function("window.playground.inspect.tokens.length > 0", timeout=30_000)
    assert page.is_visible("#inspect-panel") and page.is_visible("#attention-view")
    assert not page.is_visible("#probability-view")
    tokens = page.evaluate("window.playground.inspect.tokens")
    assert page.evaluate("window.playground.inspect.text") == text
    assert "".join(tokens) == text  # a char tokenizer: the chips spell the text
    chips = page.locator("#attention-tokens .chip")
    assert chips.count() == len(tokens)
    assert page.locator("#attention-layer option").count() == 2
    assert page.locator("#attention-head option").all_inner_texts() == ["mean over heads", "0", "1"]
    assert page.eval_on_selector("#attention-map", "c => c.width") >= len(tokens)
    assert set(chip_colours(page, "#attention-tokens .chip")) == {"rgb(255, 255, 255)"}  # no query yet

    # hovering a token shades the tokens before it by its attention; the weights are the API's
    api = httpx.post(server.url + "/v1/inspect", headers={"Authorization": f"Bearer {server.api_key}"},
                     json={"text": text, "views": ["attention"], "layer": 0, "head": "mean"}, timeout=30).json()
    row = api["attention"]["weights"][0][0]
    chips.nth(12).hover()
    page.wait_for_selector("#attention-tokens .chip.query")
    shown = page.eval_on_selector_all("#attention-tokens .chip", "els => els.map(el => el.dataset.weight)")
    assert [float(w) for w in shown[:13]] == row[12][:13]
    assert page.locator("#attention-tokens .chip.future").count() == len(tokens) - 13
    assert page.is_visible("#attention-row")  # the heat map's row for the query is outlined
    at_12 = chip_colours(page, "#attention-tokens .chip")
    assert len(set(at_12[:13])) > 1
    chips.nth(20).hover()
    page.wait_for_selector("#attention-tokens .chip.query[data-index='20']")
    at_20 = chip_colours(page, "#attention-tokens .chip")
    assert at_20 != at_12  # the shading follows the hovered token

    # another head: one more call, and another shading of the same query
    requests = page.evaluate("window.playground.inspect.requests")
    page.select_option("#attention-head", "1")
    page.wait_for_function(f"window.playground.inspect.requests > {requests} && "
                           "Object.keys(window.playground.inspect.maps).length === 2")
    chips.nth(20).click()  # pinned: leaving the chips keeps the query
    page.mouse.move(5, 5)
    assert page.locator("#attention-tokens .chip.pinned").count() == 1
    head_1 = chip_colours(page, "#attention-tokens .chip")
    assert head_1 != at_20
    page.screenshot(path=str(tmp_path / "playground-attention.png"), full_page=True)
    assert (tmp_path / "playground-attention.png").stat().st_size > 10_000

    # the probability view: coloured tokens, alternatives on hover, the next-token bars
    page.click("#tab-probabilities")
    assert page.is_visible("#probability-view") and not page.is_visible("#attention-view")
    colours = chip_colours(page, "#probability-tokens .chip")
    assert len(colours) == len(tokens)
    assert colours[0] == "rgb(255, 255, 255)" and len(set(colours[1:])) > 1
    assert "perplexity" in page.inner_text("#probability-summary")
    assert page.locator("#next-token li").count() == 5
    page.locator("#probability-tokens .chip").nth(6).hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible")
    assert "bits" in tooltip.inner_text() and "p = " in tooltip.inner_text()
    assert tooltip.locator("tr").count() == 5
    page.screenshot(path=str(tmp_path / "playground-probabilities.png"), full_page=True)
    assert (tmp_path / "playground-probabilities.png").stat().st_size > 10_000


def test_inspect_without_generating_uses_the_prompt(page):
    page.fill("#prompt", "import os")
    page.click("#inspect-button")
    page.wait_for_function("window.playground.inspect.tokens.length === 9", timeout=30_000)
    page.click("#tab-probabilities")
    assert page.locator("#probability-tokens .chip").count() == 9
    page.fill("#prompt", "x" * 200)  # longer than the context: the server's 400 is shown
    page.click("#inspect-button")
    page.locator("#error").wait_for(state="visible")
    assert "maximum context length" in page.inner_text("#error")


def last_request(page) -> dict:
    return page.evaluate("window.playground.lastRequest")


def test_max_tokens_is_capped_by_what_the_prompt_leaves(page, server):
    """The slider's 100 on a 128-token context: a 60-token prompt gets 68, not a 400; "auto"
    leaves max_tokens out and the server fills the rest of the context."""
    prompt = "x = 1\n" * 10  # 60 characters: 60 tokens of the char tokenizer
    page.fill("#prompt", prompt)
    page.fill("#seed", "1")
    assert page.input_value("#max-tokens") == "100"
    page.click("#generate")
    wait_until_done(page)
    assert not page.is_visible("#error")
    assert last_request(page)["max_tokens"] == 128 - 60
    assert "max tokens 68: what the prompt leaves of the context" in page.inner_text("#stats")
    set_range(page, "#max-tokens", 0)
    assert page.inner_text("#max-tokens-value") == "auto"
    page.click("#generate")
    wait_until_done(page)
    assert not page.is_visible("#error") and "max_tokens" not in last_request(page)
    set_range(page, "#max-tokens", 20)  # below what is left: sent as it is
    page.click("#generate")
    wait_until_done(page)
    assert last_request(page)["max_tokens"] == 20


def test_chat_turns_fit_and_a_failed_turn_comes_back_to_the_input_box(page):
    page.check("input[name=mode][value=chat]")
    page.fill("#seed", "2")
    page.fill("#prompt", "Write a loop")
    page.click("#generate")  # the slider says 100: more than the conversation leaves
    wait_until_done(page)
    assert not page.is_visible("#error")
    assert 0 < last_request(page)["max_tokens"] < 100
    assert page.locator("#transcript .turn").count() == 2
    too_long = "print(x) " * 16  # 144 tokens: longer than the whole context
    page.fill("#prompt", too_long)
    page.click("#generate")
    page.locator("#error").wait_for(state="visible")
    assert "context" in page.inner_text("#error")
    assert page.input_value("#prompt") == too_long  # the text is not lost
    assert page.evaluate("window.playground.conversation.length") == 2  # the failed turn is gone
    assert page.locator("#transcript .turn").count() == 2
    page.click("#clear")
    page.fill("#prompt", "Write a loop")
    page.click("#generate")
    wait_until_done(page)
    sent = last_request(page)["messages"]
    assert sent == [{"role": "user", "content": "Write a loop"}]  # nothing of the failed turn resent


def test_whitespace_tokens_are_visible_marks_in_the_chips(page):
    page.fill("#prompt", "if x:\n\t  y")
    page.click("#inspect-button")
    page.wait_for_function("window.playground.inspect.tokens.length === 10", timeout=30_000)
    chips = page.locator("#attention-tokens .chip")
    texts = chips.all_inner_texts()
    assert texts == ["i", "f", "\u00b7", "x", ":", "\u21b5", "\u2192", "\u00b7", "\u00b7", "y"]
    for i in (2, 5, 6, 7):  # a mark, not an empty box
        assert chips.nth(i).locator(".ws").count() == 1
        assert chips.nth(i).evaluate("el => el.querySelector('.ws').getBoundingClientRect().width") > 3
    page.click("#tab-probabilities")
    assert page.locator("#probability-tokens .chip").all_inner_texts() == texts


def test_the_page_has_a_favicon(page, server):
    href = page.get_attribute("link[rel=icon]", "href")
    assert href == "/static/favicon.svg"
    response = httpx.get(server.url + href, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")
    size = page.evaluate("""async (href) => {
        const img = new Image();
        img.src = href;
        await img.decode();
        return [img.naturalWidth, img.naturalHeight];
    }""", href)
    assert size[0] > 0 and size[1] > 0
