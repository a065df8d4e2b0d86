"""The Lookahead routers (CLM and MLM) and their ablations, on tiny models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lookahead_router.routers.base import Router, RouterError, make_router
from lookahead_router.routers.lookahead import ABLATIONS
from lookahead_router.routers.lookahead_model import MASKINGS, curriculum_mask, mask_ratio, packed_layout
from test_training import CANDS, topic_dataset

TINY = dict(epochs=2, batch_size=8, eval_every=4, lr=3e-3, max_length=32, hidden=16, width=32, heads=2,
            vocab_size=64, progress=False)
PROMPTS = ["solve the equation 3 x + 1 = 7", "write a python function that sorts", "hi"]


def tiny_router(name: str, finetune: bool = False, **options):
    backbone = "tiny-llama" if "clm" in name else "tiny-bert"
    length = dict(m=8) if "mlm" in name else dict(response_length=8)
    return make_router(name, backbone=backbone, finetune=finetune, **{**TINY, **length, **options})


@pytest.mark.parametrize("finetune", [False, True])
def test_clm_single_pass_equals_separate_passes(finetune):
    """query ‖ MID_1 … MID_T in one pass (MIDs masked from each other, prompts left-padded in a
    batch) gives the same scores as T plain causal passes over query ‖ MID_t, one prompt at a time."""
    router = tiny_router("lookahead-clm", finetune=finetune).fit(topic_dataset())
    model = router.model
    packed = router.score(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        batch = router._collate([{"query": router._queries([prompt])[0]}])
        for t in range(len(CANDS)):
            mid = model.mid_ids[t].view(1, 1)
            with torch.no_grad():
                if finetune:  # the backbone with its own default causal mask
                    ids = torch.cat([batch["query"], mid], 1)
                    h = model.encoder.model.base_model(input_ids=ids).last_hidden_state[0, -1]
                else:
                    enc = model.encoder
                    embeds = torch.cat([enc.proj(batch["query"]), enc.model.get_input_embeddings()(enc.lookup[mid])], 1)
                    h = enc.model(inputs_embeds=embeds).last_hidden_state[0, -1]
                separate = torch.sigmoid(model.head(h)).item()
            assert abs(separate - packed[i, t]) < 1e-5


def test_packed_layout_masks():
    pos, mask = packed_layout(torch.tensor([2, 3]), q_width=3, block_len=2, n_blocks=2, causal=True,
                              dtype=torch.float32)
    allowed = mask[:, 0] == 0
    # row 0 has one pad slot: nothing attends to it (except itself)
    assert not allowed[0, 1:, 0].any()
    assert pos[0].tolist() == [0, 0, 1, 2, 3, 2, 3] and pos[1].tolist() == [0, 1, 2, 3, 4, 3, 4]
    # block 2 (slots 5, 6) sees the prompt and itself, never block 1 (slots 3, 4)
    assert allowed[1, 5, :3].all() and not allowed[1, 5, 3:5].any() and not allowed[1, 5, 6]
    assert allowed[1, 6, 5] and not allowed[1, 2, 3]                    # prompts never see the blocks
    _, joint = packed_layout(torch.tensor([3]), 3, 2, 2, causal=False, dtype=torch.float32)
    assert (joint == 0).all()                                            # MLM: everything sees everything


def test_curriculum_schedule_start_middle_end():
    total, alpha = 100, 0.4
    assert mask_ratio(0, total, alpha, "end") == 0.0
    assert mask_ratio(20, total, alpha, "end") == 0.5
    assert mask_ratio(40, total, alpha, "end") == 1.0 and mask_ratio(99, total, alpha, "end") == 1.0
    assert mask_ratio(0, total, alpha, "none") == 1.0
    lengths = torch.tensor([8, 4])
    hidden, target = curriculum_mask(lengths, 8, 0.5, "end")
    assert hidden[0].tolist() == [False] * 4 + [True] * 4               # the end is hidden first
    assert hidden[1].tolist() == [False, False, True, True] + [True] * 4  # past the response: MID
    assert target[1].tolist() == [False, False, True, True] + [False] * 4
    hidden, _ = curriculum_mask(lengths, 8, 0.5, "start")
    assert hidden[0].tolist() == [True] * 4 + [False] * 4
    hidden, target = curriculum_mask(lengths, 8, 0.5, "random", torch.Generator().manual_seed(0))
    assert target.sum(1).tolist() == [4, 2]
    runs = [np.flatnonzero(np.diff(np.r_[0, row.int().numpy(), 0])) for row in target]
    assert all(len(r) == 2 for r in runs)                               # one contiguous span
    for masking in ("end", "start", "random"):
        assert not curriculum_mask(lengths, 8, 0.0, masking)[1].any()   # start: the response shown
    for masking in MASKINGS:
        assert curriculum_mask(lengths, 8, 1.0, masking)[0].all()      # end, and inference: all MID


def test_mlm_blocks_follow_the_curriculum_during_training(monkeypatch):
    """The blocks the model actually feeds its encoder reveal y_t[:m] at the start of training,
    hide its second half in the middle of the curriculum and hide all of it at the end."""
    router = tiny_router("lookahead-mlm", epochs=1).fit(topic_dataset())
    model = router.model.train()
    seen = {}
    real_forward = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward",
                        lambda q, blocks, mask, pos: seen.update(blocks=blocks) or real_forward(q, blocks, mask, pos))
    ds = topic_dataset(8)
    cols = router._columns(ds)
    batch = router._collate([{k: v[i] for k, v in cols.items()} for i in range(8)])
    model.total_steps = 100
    mids = model.mid_ids
    for step, hidden_share in [(0, 0.0), (20, 0.5), (40, 1.0), (90, 1.0)]:
        model.step.fill_(step)
        model(batch)
        blocks = seen["blocks"].view(8, len(CANDS), 8)
        lengths = batch["response_len"]
        hidden = blocks == mids.view(1, -1, 1)
        inside = torch.arange(8) < lengths.clamp(max=8).unsqueeze(-1)
        expected = torch.ceil(hidden_share * lengths.clamp(max=8).float())
        assert ((hidden & inside).sum(-1).float() == expected).all(), step
        if 0 < hidden_share < 1:   # end-masking: the hidden tokens are the last ones
            first_hidden = hidden.int().argmax(-1)
            assert (first_hidden == lengths.clamp(max=8) - expected.long()).all()


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_variant_fits_scores_and_round_trips(tmp_path, name):
    router = tiny_router(name).fit(topic_dataset())
    scores = router.score(PROMPTS)
    assert scores.shape == (3, 3) and ((scores >= 0) & (scores <= 1)).all()
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    assert loaded.name == name and loaded.candidates == CANDS
    np.testing.assert_array_equal(loaded.score(PROMPTS), scores)


@pytest.mark.parametrize("name", ["lookahead-clm", "lookahead-mlm"])
def test_fine_tuned_backbone_round_trips(tmp_path, name):
    router = tiny_router(name, finetune=True).fit(topic_dataset())
    scores = router.score(PROMPTS)
    router.save(tmp_path / "r")
    np.testing.assert_array_equal(Router.load(tmp_path / "r").score(PROMPTS), scores)


def test_reconstruction_is_learnt_and_switched_off_without_rm():
    """λ > 0 trains the reconstruction (its loss falls); λ = 0 never computes it."""
    router = tiny_router("lookahead-clm", epochs=6)
    router.fit(topic_dataset())
    hist = router.train_result.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    norm = tiny_router("lookahead-clm-norm")
    norm.fit(topic_dataset())
    batch = norm._collate([{k: v[i] for k, v in norm._columns(topic_dataset(4)).items()} for i in range(4)])
    assert "rec_loss" not in norm.model.train()(batch)
    assert "rec_loss" in router.model.train()(batch)


def test_lookahead_mlm_learns_the_topic_rule():
    """On the packaged MiniLM (frozen) the MLM router sends maths to A and code to C."""
    train_ds, held = topic_dataset(60, seed=0), topic_dataset(10, seed=1)
    router = make_router("lookahead-mlm", backbone="minilm", m=8, epochs=20, batch_size=8, lr=3e-3,
                         max_length=64, width=64, heads=2, vocab_size=128, eval_every=20, progress=False)
    router.fit(train_ds)
    assert [d.model for d in router.route(held.queries["prompt"].tolist())] == ["A" if i % 2 == 0 else "C" for i in range(10)]


def test_m_is_shortened_to_fit_the_backbone_and_said_so():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        router = tiny_router("lookahead-mlm", m=400, epochs=1).fit(topic_dataset())
    assert router.meta["m"] == (512 - 32) // 3
    assert any("m shortened from 400 to 160" in str(w.message) for w in caught)


def test_bad_options_are_clear_errors():
    with pytest.raises(RouterError, match="unknown option"):
        make_router("lookahead-clm", m=4)          # m belongs to the MLM
    with pytest.raises(RouterError, match="masking must be one of"):
        make_router("lookahead-mlm", masking="middle")
