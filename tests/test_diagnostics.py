from gradmm.core.diagnostics import format_distances, target_distances


def test_target_distances_on_a_tiny_model(tiny, toy_task):
    model, tok = tiny
    synthetic = [{"text": ex.text, "label": ex.label} for ex in toy_task.pool]
    rows = target_distances(model, tok, toy_task, synthetic, set_size=3, n_sets=2, random_len=5)
    assert [r["class"] for r in rows] == ["negative", "positive"]
    for row in rows:
        for kind in ("synthetic", "real_same_class", "real_other_class", "random_tokens"):
            assert 0 <= row[kind]["mean"] <= 2 and row[kind]["n_sets"] == 2
        # the pool's own texts match the target built from them better than random token strings
        assert row["synthetic"]["mean"] < row["random_tokens"]["mean"]
    assert "| negative |" in format_distances(rows)
