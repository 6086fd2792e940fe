"""The chat route formats a conversation with the model's own chat template, when the model was
imported with one, and ends the turn at that template's stop tokens."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from gptlab.cli.main import main
from gptlab.finetune.loader import ChatTemplate, load_run
from gptlab.server.prompts import chat_ids
from gptlab.server.protocol import ChatMessageIn
from tests.interop.test_hf_chat import LLAMA3_TEMPLATE, own_template_dir

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]
# a template that refuses a system message, as some models' do
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
             "{% endif %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")


def serve(loader, port: int):
    import uvicorn

    from gptlab.server.app import create_app
    from gptlab.server.state import ServerSettings

    server = uvicorn.Server(uvicorn.Config(create_app(ServerSettings(model_name="own"), loader),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return server, thread, url


@pytest.mark.slow
def test_the_chat_route_uses_the_models_own_template(corpus_text: str, tmp_path: Path, free_port: int) -> None:
    assert main(["import-hf", str(own_template_dir(tmp_path, corpus_text)), "--out", str(tmp_path / "run")]) == 0
    loaded = load_run(tmp_path / "run")
    assert loaded.chat_template is not None and loaded.chat_template.template == LLAMA3_TEMPLATE
    refusing = ChatTemplate(NO_SYSTEM)
    templates = iter([loaded.chat_template, refusing])
    current = {}

    def loader():
        current["template"] = next(templates)
        return loaded.model, loaded.tokenizer, current["template"]

    own_ids = chat_ids([ChatMessageIn(**m) for m in MESSAGES], loaded.tokenizer, loaded.chat_template)
    chatml_ids = chat_ids([ChatMessageIn(**m) for m in MESSAGES], loaded.tokenizer)
    assert own_ids != chatml_ids
    server, thread, url = serve(loader, free_port)
    try:
        body = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2}).json()
        assert body["usage"]["prompt_tokens"] == len(own_ids)
    finally:
        server.should_exit = True
        thread.join(30)
    server, thread, url = serve(loader, free_port)
    try:
        response = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2})
        assert response.status_code == 400
        assert "System role not supported" in response.json()["error"]["message"]
        ok = httpx.post(url + "/v1/chat/completions", json={"messages": MESSAGES[1:], "max_tokens": 2})
        assert ok.status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
