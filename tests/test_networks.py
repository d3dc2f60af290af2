"""Encoders, the annotation decoder, heads and the caption encoder."""

import pytest
import torch

from agents.method.networks import AnnotationDecoder, LogitScale, ProjectionHead, make_encoder
from agents.method.text import TextEncoder, WordTokenizer
from imgmdp_env.views import relative_box, sample_boxes


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_encoder_contract(kind):
    torch.manual_seed(0)
    enc = make_encoder(kind, view_size=32)
    views = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    tokens = enc(views)
    assert tokens.shape == (3, enc.num_tokens, enc.embed_dim)
    assert enc.pool(tokens).shape == (3, enc.embed_dim)
    assert torch.allclose(enc.pool(tokens), tokens.mean(1))
    # one input contract: uint8; a float batch (whose scale cannot be known) is refused
    with pytest.raises(TypeError, match="uint8"):
        enc(views.float() / 255)
    # each view's tokens depend on that view only (no batch statistics)
    assert torch.allclose(enc(views[:1]), tokens[:1], atol=1e-5)
    twin = make_encoder(**enc.config)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {
        k: v.shape for k, v in enc.state_dict().items()}
    with pytest.raises(ValueError, match="B, 3, H, W"):
        enc(views[0])


def test_named_configs():
    vits = make_encoder("vits16", view_size=224)
    assert (vits.embed_dim, vits.num_tokens, len(vits.blocks.layers)) == (384, 196, 12)
    assert make_encoder("cnn", 64, widths=(16, 32)).embed_dim == 32
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("resnet50")
    with pytest.raises(ValueError, match="multiple"):
        make_encoder("vit", view_size=30)


def _actions(b, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    boxes = sample_boxes(b * (k + 1), generator=g).view(b, k + 1, 4)
    return relative_box(boxes[:, :1], boxes[:, 1:])  # (b, k, 4)


def test_decoder_shapes_and_boxes_are_independent():
    torch.manual_seed(0)
    dec = AnnotationDecoder(embed_dim=24, num_tokens=9, width=32, depth=2, heads=4)
    tokens, actions = torch.randn(2, 9, 24), _actions(2, 5)
    out = dec(tokens, actions)
    assert out.shape == (2, 5, 32)
    # K boxes in one pass == each box on its own (the block mask keeps them apart)
    for k in range(5):
        alone = dec(tokens, actions[:, k:k + 1])[:, 0]
        assert torch.allclose(out[:, k], alone, atol=1e-5)
    # the box matters, and so do the source tokens
    assert not torch.allclose(out[:, 0], out[:, 1])
    assert not torch.allclose(dec(tokens + 1, actions), out)


def test_decoder_without_action_tokens_ignores_the_box():
    torch.manual_seed(0)
    dec = AnnotationDecoder(embed_dim=16, num_tokens=4, width=16, heads=2, action_tokens=False)
    tokens = torch.randn(2, 4, 16)
    out = dec(tokens, _actions(2, 3))
    assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


def test_logit_scale():
    s = LogitScale(0.07)
    assert s().item() == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        s.log_scale.fill_(10.0)
    assert s().item() == pytest.approx(100.0, rel=1e-5)
    with pytest.raises(ValueError):
        LogitScale(0.0)


def test_word_tokenizer_and_text_encoder():
    caps = ["a red circle and a blue square", "a green ring", "A red ring!"]
    tok = WordTokenizer.from_captions(caps)
    ids = tok(caps)
    assert ids.shape == (3, 8) and (ids[:, 0] == tok.BOS).all()
    assert tok.vocab[0] == "a"  # most frequent first
    assert tok(["a purple circle"])[0, 2].item() == tok.UNK
    assert WordTokenizer(**tok.state_dict())(caps).equal(ids)
    torch.manual_seed(0)
    enc = TextEncoder(len(tok), tok.max_len, width=16, depth=1, heads=2)
    out = enc(ids)
    assert out.shape == (3, 16)
    # padding does not change a caption's embedding
    short = enc(ids[1:2, :4])
    assert torch.allclose(short, out[1:2], atol=1e-5)


@pytest.mark.parametrize("kind,size", [("cnn", 32), ("vit", 32), ("vits16", 224)])
def test_one_batched_pass_equals_separate_passes(kind, size):
    """The agent encodes base crops and bootstrap views in one call (``ab._encode``): for every
    encoder kind this must give each part the tokens a separate pass gives it."""
    from agents.method.ab import _encode
    from agents.method.data import simclr_augment

    torch.manual_seed(0)
    enc = make_encoder(kind, view_size=size).eval()
    raw = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    augmented = simclr_augment(raw[:2], torch.Generator().manual_seed(0))  # base crops
    joint = _encode(enc, [augmented, raw[2:]])
    with torch.no_grad():
        for part, tokens in zip([augmented, raw[2:]], joint, strict=True):
            assert torch.allclose(tokens, enc(part), atol=1e-4), kind


def test_projection_head_batch_norm_centres_the_hidden_layer_over_every_position():
    torch.manual_seed(0)
    plain = ProjectionHead(8, 4, 16)
    normed = ProjectionHead(8, 4, 16, norm="batch")
    assert [type(m).__name__ for m in plain.net] == ["Linear", "GELU", "Linear"]
    x = torch.randn(6, 5, 8) + 3.0  # (B, K, D) inputs that share one large offset
    hidden = normed.net[1](normed.net[0](x))
    flat = hidden.reshape(-1, 16)
    assert torch.allclose(flat.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(flat.var(0, unbiased=False), torch.ones(16), atol=1e-3)
    out = normed(x)
    assert out.shape == (6, 5, 4)
    normed.eval()  # the running statistics: a 3D input is the same as its flattened rows
    assert torch.allclose(normed(x), normed(x.reshape(30, 8)).view(6, 5, 4), atol=1e-6)
    with pytest.raises(ValueError, match="norm='layer'.*'none', 'batch'"):
        ProjectionHead(8, 4, 16, norm="layer")
