from service.artifact import META_FILE, Meta


def test_model_repo_has_five_verified_models(model_repo):
    metas = {p.parent.parent.name: Meta.load(p) for p in model_repo.glob(f"*/1/{META_FILE}")}
    assert set(metas) == {"tiny-lstm", "tiny-gru", "tiny-sentiment", "tiny-translator", "tiny-captioner"}
    assert metas["tiny-sentiment"].labels == ["negative", "positive"]
    assert [s.input for s in metas["tiny-lstm"].state] == ["h0", "c0"]
    assert metas["tiny-translator"].translator["special_ids"]["eos"] >= 0
    assert metas["tiny-captioner"].captioner["grid"]["rows"] >= 1
