"""The real upstream's chat smoke without a GPU (issue 20): the tiny model
the gate generates reads back with the safetensors and tokenizers
libraries and is the same bytes on every run; the smoke's HTTP exchange
passes against a stand-in server answering in OpenAI's documented shape
and fails, in its record, on a malformed answer."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest
import safetensors
import tokenizers

from buildlib.gate import smoke, tiny_model


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model.write_model(tmp_path_factory.mktemp("tiny") / "model")


def test_the_model_directory_has_what_mistralrs_reads(model):
    assert sorted(p.name for p in model.iterdir()) == sorted(tiny_model.FILES)
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 2
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # paged attention's smallest head size


def test_weights_read_back_with_safetensors_as_the_config_implies(model):
    cfg = json.loads((model / "config.json").read_text())
    hidden, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * hidden // cfg["num_attention_heads"]
    expected = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden],
                "lm_head.weight": [vocab, hidden]}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        expected |= {p + "self_attn.q_proj.weight": [hidden, hidden], p + "self_attn.k_proj.weight": [kv, hidden],
                     p + "self_attn.v_proj.weight": [kv, hidden], p + "self_attn.o_proj.weight": [hidden, hidden],
                     p + "mlp.gate_proj.weight": [inter, hidden], p + "mlp.up_proj.weight": [inter, hidden],
                     p + "mlp.down_proj.weight": [hidden, inter], p + "input_layernorm.weight": [hidden],
                     p + "post_attention_layernorm.weight": [hidden]}
    tensors = dict(safetensors.deserialize((model / "model.safetensors").read_bytes()))
    assert {name: t["shape"] for name, t in tensors.items()} == expected
    for name, t in tensors.items():
        count = 1
        for n in t["shape"]:
            count *= n
        assert t["dtype"] == "BF16" and len(t["data"]) == 2 * count, name
    assert len(set(tensors["lm_head.weight"]["data"])) > 100  # random, not a constant
    assert tensors["model.norm.weight"]["data"] == b"\x80\x3f" * hidden  # BF16 1.0


def test_the_tokenizer_encodes_and_decodes_a_chat_prompt(model):
    tok = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))
    cfg = json.loads((model / "config.json").read_text())
    tok_cfg = json.loads((model / "tokenizer_config.json").read_text())
    assert tok.get_vocab_size() == cfg["vocab_size"]
    assert tok.token_to_id(tok_cfg["bos_token"]) == cfg["bos_token_id"]
    assert tok.token_to_id(tok_cfg["eos_token"]) == cfg["eos_token_id"]
    prompt = jinja2.Environment().from_string(tok_cfg["chat_template"]).render(
        messages=[{"role": "user", "content": "Say hello. Grüße!"}], add_generation_prompt=True,
        bos_token=tok_cfg["bos_token"], eos_token=tok_cfg["eos_token"])
    assert prompt == "<s><|user|>\nSay hello. Grüße!</s>\n<|assistant|>\n"
    encoded = tok.encode(prompt)
    assert encoded.ids[:2] == [cfg["bos_token_id"], tok.token_to_id("<|user|>")]
    assert max(encoded.ids) < cfg["vocab_size"]
    assert tok.decode(encoded.ids, skip_special_tokens=False) == prompt


def test_the_model_is_the_same_bytes_on_every_run(model, tmp_path):
    again = tiny_model.write_model(tmp_path / "again")
    assert digests(again) == digests(model)
    # and in another process, where nothing of this one's state is shared
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from buildlib.gate.tiny_model"
                    " import write_model; write_model(Path(sys.argv[1]))", str(tmp_path / "third")],
                   check=True, cwd=Path(__file__).resolve().parent.parent)
    assert digests(tmp_path / "third") == digests(model)


# --- the chat smoke's HTTP exchange ----------------------------------------------

STAND_IN = textwrap.dedent('''\
    """Stands in for `mistralrs serve -m DIR -a llama --host H --port P`."""
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from pathlib import Path

    args = sys.argv[1:]
    assert args[0] == "serve"
    model = Path(args[args.index("-m") + 1])
    assert (model / "config.json").is_file() and args[args.index("-a") + 1] == "llama"
    mode = Path(sys.argv[0]).with_suffix(".mode").read_text().strip()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status, body):
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.answer(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self.answer(200, {"object": "list", "data": [{"id": str(model), "object": "model"}]})
            else:
                self.answer(404, {})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and request["model"] == str(model), request
            assert request["max_tokens"] <= 8 and request["messages"][0]["role"] == "user", request
            if mode == "ok":
                self.answer(200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": str(model),
                                  "choices": [{"index": 0, "finish_reason": "length",
                                               "message": {"role": "assistant", "content": "xq!z"}}],
                                  "usage": {"prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34}})
            elif mode == "no-choices":
                self.answer(200, {"object": "chat.completion", "choices": [], "usage": {"completion_tokens": 0}})
            else:
                self.answer(200, b"<html>not json</html>")

        def log_message(self, *a):
            pass

    HTTPServer((args[args.index("--host") + 1], int(args[args.index("--port") + 1])), Handler).serve_forever()
''')


def chat_with_stand_in(tmp: Path, model: Path, mode: str) -> smoke.Step:
    server = tmp / "stand-in.py"
    server.write_text(STAND_IN)
    server.with_suffix(".mode").write_text(mode)
    port = smoke.free_port()
    argv = smoke.chat_argv(Path(sys.executable), model, port)
    argv.insert(1, str(server))
    return smoke.serve_step("chat", argv, {"PATH": "/usr/bin:/bin"}, port, 30, smoke.ask_chat)


def test_chat_argv_serves_the_local_directory_as_a_llama(model):
    assert smoke.chat_argv(Path("/usr/bin/mistralrs"), model, 4321) == [
        "/usr/bin/mistralrs", "serve", "-m", str(model), "-a", "llama", "--host", "127.0.0.1", "--port", "4321"]


def test_chat_smoke_passes_on_an_openai_shaped_answer(model, tmp_path):
    step = chat_with_stand_in(tmp_path, model, "ok")
    assert step.passed, step.tail
    assert "POST /v1/chat/completions: 200" in step.tail and '"completion_tokens": 4' in step.tail


@pytest.mark.parametrize("mode, problem", [("no-choices", "no choices"), ("not-json", "the answer is not JSON")])
def test_chat_smoke_fails_on_a_malformed_answer(model, tmp_path, mode, problem):
    step = chat_with_stand_in(tmp_path, model, mode)
    assert not step.passed
    assert problem in step.tail


@pytest.mark.parametrize("answer, problem", [
    ([], "not a JSON object"),
    ({"object": "error"}, "not 'chat.completion'"),
    ({"object": "chat.completion", "choices": [{"message": {"role": "user", "content": "x"}}]}, "assistant message"),
    ({"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "x"}}]}, "completion_tokens"),
])
def test_chat_problem_names_what_is_missing(answer, problem):
    assert problem in smoke.chat_problem(answer)
