"""``gptlab serve`` as a command: flags, fail-fast errors, a checkpoint that cannot load, CORS."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import pytest

from gptlab.cli.main import main
from gptlab.cli.serve import default_model_name


@pytest.fixture(autouse=True)
def _restore_wait_policy(monkeypatch):
    """``main(["serve", ...])`` sets $OMP_WAIT_POLICY in this process: undo it after each test."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--api-key", "--max-batch-size", "--max-queue", "--max-body-bytes",
                 "--device", "--cors-origin", "127.0.0.1", "GPTLAB_API_KEY", "--threads", "OMP_WAIT_POLICY"):
        assert flag in out


SPY = """
import os, sys

class Spy:  # reports the environment at the moment torch is first imported
    def find_spec(self, name, path, target=None):
        if name == "torch":
            print("OMP_WAIT_POLICY at torch import:", os.environ.get("OMP_WAIT_POLICY"), flush=True)
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, Spy())
from gptlab.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
import torch  # --help itself no longer loads torch: this is the first import then, after the CLI ran
"""


WAIT_POLICY_CASES = {  # id -> (command line, $OMP_WAIT_POLICY set beforehand, the value torch sees)
    "serve": (["serve", "--help"], None, "PASSIVE"),  # serve chooses, before torch loads libgomp
    "serve-preset": (["-v", "serve", "--help"], "ACTIVE", "ACTIVE"),  # the user's own setting wins
    "sample": (["sample", "--help"], None, "None"),  # other commands leave OpenMP alone
}


@pytest.fixture(scope="module")
def spied_processes():
    """The cases' processes, started together (each spends its seconds importing torch)."""
    import os

    processes = {}
    for case, (args, preset, _) in WAIT_POLICY_CASES.items():
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if preset is not None:
            env["OMP_WAIT_POLICY"] = preset
        processes[case] = subprocess.Popen([sys.executable, "-c", SPY, *args], env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True)
    yield processes
    for process in processes.values():
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("case", WAIT_POLICY_CASES)
def test_serve_sets_a_passive_openmp_wait_policy_before_torch_loads(spied_processes, case):
    seen = WAIT_POLICY_CASES[case][2]
    out, err = spied_processes[case].communicate(timeout=120)
    assert spied_processes[case].returncode == 0, err
    assert f"OMP_WAIT_POLICY at torch import: {seen}" in out


def test_the_server_logs_its_threads_and_wait_policy(server):
    assert "1 CPU thread(s), OpenMP wait policy PASSIVE" in server.log()


def test_missing_run_fails_before_serving(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 1
    assert "no such run or checkpoint" in capsys.readouterr().err


def test_default_model_name(tmp_path):
    assert default_model_name(tmp_path / "runs" / "shakespeare") == "shakespeare"
    assert default_model_name(tmp_path / "runs" / "shakespeare" / "ckpt-000500") == "shakespeare/ckpt-000500"


@pytest.mark.slow
def test_corrupted_checkpoint_exits_with_an_error(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    weights = next(broken.glob("ckpt-*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-10])
    result = subprocess.run([sys.executable, "-m", "gptlab", "serve", str(broken), "--port", "0"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr


@pytest.mark.slow
def test_api_key_flag_model_name_and_cors(tiny_run, serve, server):
    proc = serve(tiny_run, "--api-key", "flag-key", "--model-name", "my-gpt", "--cors-origin", "http://ui.example")
    assert httpx.get(proc.url + "/v1/models").status_code == 401
    models = httpx.get(proc.url + "/v1/models", headers={"Authorization": "Bearer flag-key"}).json()
    assert [m["id"] for m in models["data"]] == ["my-gpt"]
    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(proc.url + "/v1/completions", headers=preflight)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://ui.example"
    other = httpx.options(proc.url + "/v1/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    # a refused preflight is JSON in OpenAI's shape, and says what was refused
    assert other.status_code == 400 and other.headers["content-type"] == "application/json"
    assert other.json()["error"]["code"] == "cors_refused" and "http://evil.example" in other.json()["error"]["message"]
    odd = httpx.options(proc.url + "/v1/completions", headers={**preflight, "Access-Control-Request-Headers": "x-secret"})
    assert odd.status_code == 400 and "x-secret" in odd.json()["error"]["message"]
    # the official openai JS SDK (v4-v7, with dangerouslyAllowBrowser) asks for its x-stainless-* headers
    sdk = httpx.options(proc.url + "/v1/chat/completions", headers={**preflight, "Access-Control-Request-Headers": (
        "authorization,content-type,accept,x-stainless-arch,x-stainless-lang,x-stainless-os,"
        "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,"
        "x-stainless-timeout,openai-organization,openai-project")})
    assert sdk.status_code == 200, sdk.text
    assert sdk.headers["access-control-allow-origin"] == "http://ui.example"
    allowed_headers = {h.strip().lower() for h in sdk.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-stainless-retry-count", "x-stainless-timeout", "openai-project"} <= allowed_headers
    answer = httpx.post(proc.url + "/v1/chat/completions", headers={
        "Origin": "http://ui.example", "Authorization": "Bearer flag-key", "x-stainless-lang": "js"},
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "http://ui.example"
    # CORS is off by default: the shared server sends no CORS headers at all
    plain = httpx.get(server.url + "/health", headers={"Origin": "http://ui.example"})
    assert "access-control-allow-origin" not in plain.headers


@pytest.mark.slow
def test_serves_a_lora_adapter_folder_merged_into_its_base(tiny_run, serve, tmp_path):
    """An adapter folder names its base: serve applies it, merges it, and answers as the adapted model."""
    import torch

    from gptlab.train.checkpoint import load_checkpoint
    from gptlab.finetune.config import LoRAConfig
    from gptlab.finetune.lora import (
        inject_lora,
        lora_modules,
        merge_lora,
        model_fingerprint,
        save_adapter,
    )

    ckpt = load_checkpoint(tiny_run)
    model, tokenizer = ckpt.model, ckpt.tokenizer
    fingerprint = model_fingerprint(model)
    config = LoRAConfig(rank=4, alpha=8.0)
    inject_lora(model, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for module in lora_modules(model).values():
            module.lora_B.normal_(0.0, 0.5)  # a visible change to the base's outputs
    adapter = save_adapter(model, tmp_path / "adapter", config, base_fingerprint=fingerprint,
                           extra={"base_path": str(tiny_run)})
    prompt = torch.tensor([tokenizer.encode("def ")])
    with torch.no_grad():
        merged = torch.log_softmax(merge_lora(model).eval()(prompt)[0][0, -1], dim=-1)
        base = torch.log_softmax(load_checkpoint(tiny_run).model(prompt)[0][0, -1], dim=-1)
    token = int(merged.argmax())
    assert abs(float(merged[token] - base[token])) > 1e-3  # the adapter changes the answer's numbers
    proc = serve(adapter)
    body = {"prompt": "def ", "max_tokens": 1, "temperature": 0, "logprobs": 1}
    out = httpx.post(proc.url + "/v1/completions", json=body, timeout=60).json()
    assert out["choices"][0]["logprobs"]["token_logprobs"][0] == pytest.approx(float(merged[token]), abs=1e-4)
