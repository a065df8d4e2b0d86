"""The trunk, the Lookahead routers (CLM and MLM) with their ablations, and the response-aware
ceilings, on tiny models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lookahead_router.routers.backbones import load_backbone
from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.registry import ROUTERS, make_router
from lookahead_router.routers.lookahead import LookaheadRouter
from lookahead_router.routers.lookahead_clm import clm_layout
from lookahead_router.routers.lookahead_mlm import MASKINGS, curriculum_mask, mask_ratio, mlm_layout
from lookahead_router.routers.trunk import Trunk, lower_states, n_layers, padded_mask
from test_training import CANDS, topic_dataset

TINY = dict(epochs=2, batch_size=8, eval_every=4, lr=3e-3, max_length=32, hidden=16, progress=False)
PROMPTS = ["solve the equation 3 x + 1 = 7", "write a python function that sorts", "hi"]


def tiny_router(name: str, finetune: bool = False, **options):
    backbone = "tiny-llama" if "clm" in name else "tiny-bert"
    length = dict(response_length=8) if "clm" in name else dict(m=8)
    return make_router(name, backbone=backbone, finetune=finetune, **{**TINY, **length, **options})


@pytest.mark.parametrize("spec, kind", [("tiny-bert", "encoder"), ("tiny-llama", "causal")])
def test_trunk_over_cached_states_is_the_backbone(spec, kind):
    """Frozen lower layers + the trunk's copy of the top layer = the backbone's own forward pass;
    asking for a few slots gives exactly those slots' states."""
    bb = load_backbone(spec, kind)
    enc = bb.tokenizer(["hello there, how are you today?", "short"], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = bb.model.base_model(**enc).last_hidden_state
        low = lower_states(bb, enc["input_ids"], enc["attention_mask"], n_layers(bb) - 1)
        trunk = Trunk(bb, layers=1, n_extra=2).eval()
        positions = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
        allowed = padded_mask(enc["attention_mask"], kind == "causal")
        full = trunk(low, allowed, positions)
        slots = torch.tensor([[0, 2], [1, 0]])
        part = trunk(low, allowed, positions, slots)
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(full[real], reference[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part, full.gather(1, slots.unsqueeze(-1).expand(-1, -1, full.shape[-1])),
                               atol=1e-5, rtol=1e-5)
    trainable = {n for n, p in trunk.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("top.", "norm.", "extra")) for n in trainable)
    assert not any(p.requires_grad for p in bb.model.parameters())


@pytest.mark.parametrize("finetune", [False, True])
def test_clm_single_pass_equals_separate_passes(finetune):
    """query ‖ MID_1 … MID_T in one pass (MIDs masked from each other, prompts left-padded in a
    batch) gives the same scores as T plain causal passes over query ‖ MID_t, one prompt at a time."""
    router = tiny_router("lookahead-clm", finetune=finetune).fit(topic_dataset())
    model = router.model
    packed = router.score(PROMPTS)
    trunk = model.trunk
    for i, prompt in enumerate(PROMPTS):
        batch = router._collate([{"query": router._queries([prompt])[0]}])
        q = batch["query"]
        P = q.shape[1]
        for t in range(len(CANDS)):
            positions = torch.arange(P + 1).unsqueeze(0)
            with torch.no_grad():
                inputs = torch.cat([trunk.prompt_states(q, positions[:, :P]),
                                    trunk.embed(model.mid_ids[t].view(1, 1), positions[:, P:])], 1)
                causal = torch.ones(P + 1, P + 1, dtype=torch.bool).tril().unsqueeze(0)
                h = trunk(inputs, causal, positions)[0, -1]
                separate = torch.sigmoid(model.head(h)).item()
            assert abs(separate - packed[i, t]) < 1e-5


def test_clm_layout_masks_and_positions():
    pos, allowed = clm_layout(torch.tensor([2, 3]), q_width=3, n_blocks=2, block_len=2)
    # row 0 has one pad slot: nothing attends to it but itself
    assert not allowed[0, 1:, 0].any()
    assert pos[0].tolist() == [0, 0, 1, 2, 3, 2, 3] and pos[1].tolist() == [0, 1, 2, 3, 4, 3, 4]
    # block 2 (slots 5, 6) sees the prompt and itself, never block 1 (slots 3, 4)
    assert allowed[1, 5, :3].all() and not allowed[1, 5, 3:5].any() and not allowed[1, 5, 6]
    assert allowed[1, 6, 5] and not allowed[1, 2, 3]                    # prompts never see the blocks


def test_mlm_block_layout_and_positions_follow_the_authors(monkeypatch):
    """[CLS] x [SEP] b_1 [SEP] ... b_T [SEP], every block at the positions P .. P + m
    (P = len([CLS] x [SEP])), as the authors' MaskConcatCollator builds them."""
    pos, real = mlm_layout(torch.tensor([4, 2]), q_width=4, n_blocks=3, m=2)
    assert pos[0].tolist() == [0, 1, 2, 3] + [4, 5, 6] * 3
    assert pos[1].tolist() == [0, 0, 0, 1] + [2, 3, 4] * 3
    assert real[1].tolist() == [False, False] + [True] * 11
    router = tiny_router("lookahead-mlm", epochs=1).fit(topic_dataset())
    model = router.model.eval()
    seen = {}
    real_embed = model.trunk.embed
    monkeypatch.setattr(model.trunk, "embed", lambda ids, p: seen.update(ids=ids, pos=p) or real_embed(ids, p))
    query = router._queries(["hi"])[0]
    tok = router.tokenizer
    assert query.shape[0] == 3 and len(tok("hi")["input_ids"]) == 3              # [CLS] hi [SEP]
    model(router._collate([{"query": query}]))
    m, T = router.plan["m"], len(CANDS)
    blocks = seen["ids"].view(T, m + 1)
    assert (blocks[:, :m] == model.mid_ids.view(T, 1)).all()                    # MID_t at inference
    assert (blocks[:, m] == tok.sep_token_id).all()                             # [SEP] closes each block
    assert seen["pos"].view(T, m + 1).tolist() == [list(range(3, 3 + m + 1))] * T


def test_curriculum_follows_the_authors_end_masking():
    total, alpha = 100, 0.4
    assert mask_ratio(0, total, alpha, "end") == 0.0
    assert mask_ratio(20, total, alpha, "end") == 0.5
    assert mask_ratio(40, total, alpha, "end") == 1.0 and mask_ratio(99, total, alpha, "end") == 1.0
    assert mask_ratio(0, total, alpha, "none") == 1.0
    lengths = torch.tensor([8, 4, 3])
    hidden, target = curriculum_mask(lengths, 8, 0.5, "end")
    assert hidden[0].tolist() == [False] * 4 + [True] * 4               # the end is hidden first
    assert hidden[1].tolist() == [False, False, True, True] + [True] * 4  # past the response: MID
    assert target[1].tolist() == [False, False, True, True] + [False] * 4
    assert target[2].sum() == 1                                          # max(1, floor(0.5 x 3))
    hidden, _ = curriculum_mask(lengths, 8, 0.0, "end")
    assert (hidden & (torch.arange(8) < lengths.unsqueeze(1))).sum(1).tolist() == [1, 1, 1]  # never 0
    hidden, _ = curriculum_mask(lengths, 8, 0.5, "start")
    assert hidden[0].tolist() == [True] * 4 + [False] * 4
    hidden, target = curriculum_mask(lengths, 8, 0.5, "random", torch.Generator().manual_seed(0))
    assert target.sum(1).tolist() == [4, 2, 1]
    runs = [np.flatnonzero(np.diff(np.r_[0, row.int().numpy(), 0])) for row in target]
    assert all(len(r) == 2 for r in runs)                               # one contiguous span
    for masking in MASKINGS:
        assert curriculum_mask(lengths, 8, 1.0, masking)[0].all()      # the end, and inference: all MID


def test_mlm_blocks_follow_the_curriculum_during_training():
    router = tiny_router("lookahead-mlm", epochs=1).fit(topic_dataset())
    model = router.model.train()
    cols = router._columns(topic_dataset(8))
    batch = router._collate([{k: v[i] for k, v in cols.items()} for i in range(8)])
    model.total_steps = 100
    lengths = batch["response_len"].clamp(max=8)
    for step, share in [(0, 0.0), (20, 0.5), (40, 1.0), (90, 1.0)]:
        model.step.fill_(step)
        ids, targets = model.blocks(batch, show=True)
        hidden = (ids == model.mid_ids.view(1, -1, 1)) & (torch.arange(8) < lengths.unsqueeze(-1))
        expected = torch.maximum(torch.floor(share * lengths.float()), torch.ones_like(lengths.float()))
        assert (hidden.sum(-1).float() == expected).all(), step
        assert ((targets != -100) == hidden).all()


@pytest.mark.parametrize("name", sorted(n for n, e in ROUTERS.items() if e.cls.__base__ is LookaheadRouter))
def test_every_variant_fits_scores_and_round_trips(tmp_path, name):
    router = tiny_router(name).fit(topic_dataset())
    scores = router.score(PROMPTS)
    assert scores.shape == (3, 3) and ((scores >= 0) & (scores <= 1)).all()
    router.save(tmp_path / "r")
    loaded = Router.load(tmp_path / "r")
    assert loaded.name == name and loaded.candidates == CANDS and loaded.plan == router.plan
    np.testing.assert_array_equal(loaded.score(PROMPTS), scores)


@pytest.mark.parametrize("name", ["lookahead-clm", "lookahead-mlm"])
def test_fine_tuned_backbone_round_trips(tmp_path, name):
    router = tiny_router(name, finetune=True).fit(topic_dataset())
    scores = router.score(PROMPTS)
    router.save(tmp_path / "r")
    np.testing.assert_array_equal(Router.load(tmp_path / "r").score(PROMPTS), scores)


@pytest.mark.parametrize("name", ["lookahead-clm", "lookahead-mlm"])
def test_reconstruction_is_learnt_over_the_full_vocabulary_and_off_without_rm(name):
    """λ > 0 trains the reconstruction over the backbone's whole vocabulary with the decoder tied
    to the input embeddings; λ = 0 never computes it."""
    router = tiny_router(name, epochs=6, rec_tokens=0)
    router.fit(topic_dataset())
    model = router.model.train()
    trunk = model.trunk
    h = torch.randn(2, trunk.width)
    assert trunk.token_logits(h).shape[-1] == trunk.words.shape[0] == len(router.tokenizer)
    if trunk.causal:   # the decoder is the input embedding matrix itself
        torch.testing.assert_close(trunk.token_logits(h), h @ trunk.words.T)
    hist = router.train_result.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    batch = router._collate([{k: v[i] for k, v in router._columns(topic_dataset(4)).items()} for i in range(4)])
    assert "rec_loss" in model(batch)
    norm = tiny_router(f"{name}-norm").fit(topic_dataset())
    assert "rec_loss" not in norm.model.train()(batch)


def test_lookahead_mlm_learns_the_topic_rule():
    """On the packaged MiniLM (top layer trained) the MLM router sends maths to A and code to C."""
    train_ds, held = topic_dataset(60, seed=0), topic_dataset(10, seed=1)
    router = make_router("lookahead-mlm", backbone="minilm", m=8, epochs=20, batch_size=8, lr=1e-3,
                         max_length=64, eval_every=20, rec_tokens=8, progress=False)
    router.fit(train_ds)
    assert [d.model for d in router.route(held.queries["prompt"].tolist())] == \
        ["A" if i % 2 == 0 else "C" for i in range(10)]


def test_m_is_shortened_to_fit_the_backbone_and_said_so():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        router = tiny_router("lookahead-mlm", m=400, epochs=1).fit(topic_dataset())
    assert router.plan["m"] == (512 - 32) // 3 - 1
    assert any("m shortened from 400 to 159" in str(w.message) for w in caught)


def test_ceilings_read_responses_and_refuse_bare_prompts(tmp_path):
    ds = topic_dataset()
    for name in ("ceiling-first-m", "ceiling-full"):
        backbone = dict(m=8) if name == "ceiling-first-m" else dict(response_max_length=16)
        router = make_router(name, backbone="tiny-bert", **{**TINY, **backbone}).fit(ds)
        with pytest.raises(RouterError, match="scores dataset rows"):
            router.score(PROMPTS)
        scores = router.score_rows(ds)
        assert scores.shape == (len(ds), 3)
        router.save(tmp_path / name)
        np.testing.assert_array_equal(Router.load(tmp_path / name).score_rows(ds), scores)


def test_full_response_ceiling_model_learns_from_unit_norm_embeddings():
    """The ceiling reads unit-norm sentence embeddings (components ~ 1/sqrt(d)); its MLP must still
    fit a label that a direction of the response embedding decides (unscaled, it stayed near
    constant and the cpu-preset ceiling scored far below a ridge on the same features)."""
    from lookahead_router.routers.ceiling import EmbeddingCeilingModel
    g = torch.Generator().manual_seed(0)
    n, T, d = 512, 3, 384
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)
    prompts, responses = unit(torch.randn(n, d, generator=g)), unit(torch.randn(n, T, d, generator=g))
    labels = (responses[..., 0] > 0).float()          # the answer's quality lives in the response
    torch.manual_seed(0)
    model = EmbeddingCeilingModel(d, T, hidden=64, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(10):
        for i in range(0, n, 64):
            loss = model({"query": prompts[i:i + 64], "response_emb": responses[i:i + 64],
                          "labels": labels[i:i + 64]})["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = model({"query": prompts, "response_emb": responses})["logits"]
    assert ((logits > 0).float() == labels).float().mean() > 0.9


def test_bad_options_are_clear_errors():
    with pytest.raises(RouterError, match="unknown option"):
        make_router("lookahead-clm", m=4)          # m belongs to the MLM
    with pytest.raises(RouterError, match="masking must be one of"):
        make_router("lookahead-mlm", masking="middle")
    with pytest.raises(RouterError, match="labels must be one of"):
        make_router("lookahead-mlm", labels="soft")
    with pytest.raises(RouterError, match="epochs must be a number"):
        make_router("mlc-mlm", epochs="two")


def test_trunk_runs_modernbert_the_paper_encoder():
    """ModernBERT (the paper's MLM backbone; the gpu preset's where a hub is reachable): rotary
    positions and alternating global / sliding-window attention, split the same way."""
    from transformers import ModernBertConfig, ModernBertModel

    from lookahead_router.routers.backbones import Backbone, load_tokenizer
    tok = load_tokenizer("minilm", "encoder")
    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=64, local_attention=4, pad_token_id=tok.pad_token_id,
                              cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id)
    bb = Backbone("tiny-modernbert", "encoder", tok, ModernBertModel(config).eval(), 512)
    enc = tok(["one two three four five six seven eight nine ten", "short"], padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = bb.model(**enc).last_hidden_state
        low = lower_states(bb, enc["input_ids"], enc["attention_mask"], 2)
        trunk = Trunk(bb, layers=1, n_extra=2).eval()
        positions = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
        full = trunk(low, padded_mask(enc["attention_mask"], False), positions)
        whole = Trunk(bb, layers=3, finetune=True).eval()
        again = whole(whole.prompt_states(enc["input_ids"], positions), padded_mask(enc["attention_mask"], False),
                      positions)
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(full[real], reference[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again[real], reference[real], atol=1e-5, rtol=1e-5)
