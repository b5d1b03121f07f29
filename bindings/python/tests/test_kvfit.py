"""End-to-end tests of the ctypes bindings on the default model; tests that
need it skip, saying why, when it is absent."""
import ctypes
import gc
import math
import threading

import pytest

import kvfit
from kvfit import _ffi


def chat_prompt(model, question):
    return model.tokenize(model.apply_chat_template([("user", question)]), add_special=True, parse_special=True)


def reply(session, prompt, max_tokens):
    """Greedy reply: its tokens, its streamed text and the result."""
    tokens, pieces = [], []

    def on_token(token, text):
        if token >= 0:
            tokens.append(token)
        pieces.append(text)
        return True
    result = session.generate(prompt, max_tokens=max_tokens, on_token=on_token)
    return tokens, "".join(pieces), result


@pytest.mark.parametrize("init, struct", [
    (_ffi.kvfit_model_params_init, _ffi.ModelParams),
    (_ffi.kvfit_session_params_init, _ffi.SessionParams),
    (_ffi.kvfit_sampler_params_init, _ffi.SamplerParams),
    (_ffi.kvfit_generate_params_init, _ffi.GenerateParams),
])
def test_params_structs_match_the_c_header(init, struct):
    # init writes the C struct's size into struct_size: run it on a roomy buffer.
    buf = ctypes.create_string_buffer(1024)
    init(ctypes.cast(buf, ctypes.POINTER(struct)))
    assert ctypes.c_uint32.from_buffer(buf).value == ctypes.sizeof(struct)


def test_version_matches_its_number():
    major, minor, patch = (int(p) for p in kvfit.version().split("."))
    assert major * 10000 + minor * 100 + patch == kvfit.version_number()


def test_missing_file_is_an_io_error_with_kvfits_message(tmp_path):
    with pytest.raises(kvfit.ModelIOError) as info:
        kvfit.Model(tmp_path / "absent.gguf")
    assert info.value.status == kvfit.Status.IO
    assert info.value.name == "KVFIT_E_IO"
    assert "absent.gguf" in info.value.message
    assert str(info.value).endswith("(KVFIT_E_IO)")
    assert isinstance(info.value, OSError)


def test_not_a_model_is_a_format_error(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"this is not a GGUF file at all")
    with pytest.raises(kvfit.FormatError):
        kvfit.Model(path)


def test_devices_start_with_the_cpu():
    devices = kvfit.devices()
    assert devices and devices[0].backend == kvfit.Backend.CPU and devices[0].type == kvfit.DeviceType.CPU
    assert devices[0].memory_bytes > 0 and devices[0].name


def test_model_loads_on_a_chosen_device(model_path):
    with kvfit.Model(model_path, backend=kvfit.Backend.CPU, device=0) as m:
        assert m.info().arch == "llama"
    with pytest.raises(kvfit.KvfitError, match="999"):
        kvfit.Model(model_path, backend=kvfit.Backend.CPU, device=999)
    # A cancelling progress callback stops the load.
    calls = []
    with pytest.raises(kvfit.CancelledError):
        kvfit.Model(model_path, progress=lambda fraction: calls.append(fraction) and False)
    assert len(calls) == 1


def test_model_info_and_tokens(model):
    info = model.info()
    assert (info.arch, info.tokenizer, info.n_vocab) == ("llama", "gpt2", 49152)
    assert info.n_params > 100_000_000 and info.n_layer > 0
    assert model.meta("general.architecture") == "llama"
    with pytest.raises(kvfit.ArgumentError):
        model.meta("no.such.key")
    text = "Hello, world! Ünïcödé too."
    tokens = model.tokenize(text, add_special=False)
    assert 3 < len(tokens) < len(text)
    assert model.detokenize(tokens) == text
    assert b"".join(model.token_to_piece(t) for t in tokens) == text.encode()
    with pytest.raises(kvfit.TokenError):
        model.token_to_piece(1 << 30)
    with pytest.raises(kvfit.Utf8Error):
        model.tokenize("lone \udcff surrogate")


def test_chat_template_renders_chatml(model):
    assert model.chat_template == "chatml"
    text = model.apply_chat_template([{"role": "user", "content": "Hi"}], template="chatml")
    assert "<|im_start|>user\nHi<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    with pytest.raises(kvfit.ArgumentError):
        model.apply_chat_template([], add_assistant=False, template="no-such-template")


def test_greedy_chat_turn_streams_the_generated_text(model, session):
    prompt = chat_prompt(model, "What is the capital of France?")
    tokens, text, result = reply(session, prompt, 16)
    assert 0 < result.n_generated <= 16 and len(tokens) == result.n_generated
    assert text.strip()
    assert model.detokenize(tokens) == text
    assert session.n_past == len(prompt) + len(tokens)
    # Greedy decoding is deterministic: a fresh session says the same.
    with model.session(n_ctx=512, n_threads=2) as again:
        assert reply(again, prompt, 16)[1] == text


def test_callback_returning_false_stops_generation(model, session):
    seen = []
    result = session.generate(chat_prompt(model, "Count from one to twenty."),
                              on_token=lambda token, text: seen.append(token) or len(seen) < 3)
    assert result.stop_reason == kvfit.StopReason.CALLBACK
    assert result.n_generated == 3 and len(seen) == 3


def test_callback_cannot_reenter_its_session(model, session):
    errors = []

    def on_token(token, text):
        try:
            session.reset()
        except RuntimeError as e:
            errors.append(e)
        return False
    session.generate(chat_prompt(model, "Hi"), on_token=on_token)
    assert len(errors) == 1 and "own token callback" in str(errors[0])


def test_exception_in_the_callback_reaches_the_caller_and_the_session_survives(model, session):
    prompt = chat_prompt(model, "Say something.")

    def boom(token, text):
        raise KeyError("from the callback")
    with pytest.raises(KeyError, match="from the callback"):
        session.generate(prompt, on_token=boom)
    session.reset()
    assert session.n_past == 0
    assert reply(session, prompt, 4)[1]


def test_budgeted_session_plans_inside_its_budget(model):
    budget = 8 << 20
    with model.session(kv_budget_bytes=budget, n_ctx=8192, n_threads=2) as s:
        plan = s.plan()
        assert len(plan.layers) == model.info().n_layer
        assert budget // 2 < plan.total_bytes <= budget
        assert sum(layer.bytes for layer in plan.layers) <= plan.total_bytes
        assert all(layer.kind == kvfit.LayerKind.STREAMING and layer.n_window > 0 for layer in plan.layers)
        assert all(layer.codec != kvfit.KvCodec.AUTO for layer in plan.layers)
        assert s.kv_bytes == plan.total_bytes
        before = s.kv_bytes
        reply(s, chat_prompt(model, "Tell me a story."), 8)
        assert s.kv_bytes == before
    # A pinned codec comes back in the plan.
    with model.session(kv_budget_bytes=budget, n_ctx=8192, kv_codec=kvfit.KvCodec.Q4_CHANNEL) as s:
        assert all(layer.codec == kvfit.KvCodec.Q4_CHANNEL and layer.n_window % 32 == 0 for layer in s.plan().layers)
    assert str(kvfit.KvCodec.Q4_CHANNEL) == "q4c"
    with pytest.raises(kvfit.BudgetError) as info:
        model.session(kv_budget_bytes=1024)
    assert any(c.isdigit() for c in info.value.message)


def test_logits_state_and_nll(model, session):
    with pytest.raises(kvfit.StateError):
        session.logits()
    tokens = model.tokenize("The quick brown fox jumps over the lazy dog.")
    nll = session.prefill_nll(tokens)
    assert len(nll) == len(tokens) and math.isnan(nll[0])
    assert all(math.isfinite(v) and v >= 0 for v in nll[1:])
    logits = session.logits()
    assert len(logits) == model.info().n_vocab
    state = session.save_state()
    session.decode(tokens[1])
    assert session.logits() != logits
    session.load_state(state)
    assert session.n_past == len(tokens)
    assert session.logits() == logits
    with pytest.raises(kvfit.FormatError):
        session.load_state(b"not a kvfit state")
    with pytest.raises(kvfit.TokenError):
        session.decode(-5)


def test_seeded_sampler_repeats_itself(model):
    prompt = chat_prompt(model, "Write a short poem about the sea.")

    def run():
        pieces = []
        with kvfit.Sampler(temperature=0.9, seed=42) as sampler, model.session(n_ctx=512, n_threads=2) as s:
            s.generate(prompt, sampler=sampler, max_tokens=12, on_token=lambda t, text: pieces.append(text) or True)
        return "".join(pieces)
    assert run() == run()

    with kvfit.Sampler(temperature=0) as greedy, model.session(n_ctx=512, n_threads=2) as s:
        s.prefill(prompt)
        logits = s.logits()
        assert greedy.sample(s) == max(range(len(logits)), key=logits.__getitem__)
        with pytest.raises(kvfit.ArgumentError):
            greedy.accept(-1)


def test_close_is_idempotent_and_closed_handles_fail_cleanly(model_path):
    m = kvfit.Model(model_path)
    s = m.session(n_ctx=64)
    # The model outlives close() while a session is open...
    m.close()
    assert m.closed
    with pytest.raises(kvfit.ClosedError):
        m.session(n_ctx=64)
    with pytest.raises(kvfit.ClosedError):
        m.tokenize("x")
    s.prefill([1, 2, 3])
    handle = m._handle
    assert handle.ptr
    # ...and is released with the last session.
    s.close()
    s.close()
    assert handle.ptr is None
    with pytest.raises(kvfit.ClosedError):
        s.decode(1)
    sampler = kvfit.Sampler()
    sampler.close()
    sampler.close()
    with pytest.raises(kvfit.ClosedError):
        sampler.accept(1)


def test_garbage_collection_releases_forgotten_handles(model_path):
    m = kvfit.Model(model_path)
    handle = m._handle
    sessions = [m.session(n_ctx=64) for _ in range(3)]
    assert handle.sessions == 3
    del sessions, m
    gc.collect()
    assert handle.sessions == 0 and handle.ptr is None


def test_one_model_serves_sessions_on_several_threads(model):
    prompt = chat_prompt(model, "Name a colour.")
    texts = [None, None]

    def work(i):
        with model.session(n_ctx=256, n_threads=1) as s:
            texts[i] = reply(s, prompt, 6)[1]
    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert texts[0] and texts[0] == texts[1]


def test_log_callback_receives_lines(model_path):
    lines = []
    kvfit.set_log_callback(lambda level, message: lines.append((level, message)), kvfit.LogLevel.DEBUG)
    try:
        kvfit.Model(model_path).close()
    finally:
        kvfit.set_log_callback(None)
    assert lines and all(isinstance(message, str) and message for _, message in lines)
    count = len(lines)
    kvfit.Model(model_path).close()
    assert len(lines) == count
