"""Models: strict causality, cached generation == full forward, configs that refuse mistakes."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from aunet.config import EOS_ID, ModelConfig
from aunet.generate import generate
from aunet.ladder import list_presets, load_preset
from aunet.models import build_model
from aunet.models.aunet import hierarchy_indices
from aunet.models.mamba import SSD_CHUNK, ssd_scan
from aunet.optim import OptimConfig
from tests.helpers.toy_models import assert_causal

TEXT = (b"The cat sat on the mat. Then it slept soundly! A dog came by, 1234 times,\n"
        b"and barked at the   moon\xe2\x80\x94twice. caf\xc3\xa9 \xff\xfe end.")


def tiny(arch="aunet", stages=2, **overrides):
    if arch != "aunet":
        stages = 1
    dims = [32, 48, 64, 80][:stages]
    base = dict(arch=arch, dims=dims, layers=[1] * stages, head_dims=[16] * stages,
                ffn_dims=[2 * d for d in dims], seq_len=256, window=16)
    base.update(overrides)
    return ModelConfig(**base)


VARIANTS = {
    "aunet2": tiny(),
    "aunet3": tiny(stages=3),
    "aunet4": tiny(stages=4),
    "aunet3_average_repeat": tiny(stages=3, pooling="average", upsampling="repeat"),
    "aunet2_simple": tiny(upsampling="simple"),
    "aunet3_truncated": tiny(stages=3, max_pooled=[12, 4]),
    "aunet2_no_window": tiny(window=None),
    "transformer": tiny("transformer"),
    "mamba2": tiny("mamba"),
    "mamba1": tiny("mamba", mamba_version=1, d_state=16),
}


@pytest.fixture(params=sorted(VARIANTS))
def model(request):
    torch.manual_seed(0)
    return build_model(VARIANTS[request.param]).eval()


def ids_of(data: bytes) -> torch.Tensor:
    return torch.tensor([list(data)])


def test_logits_at_t_depend_only_on_bytes_up_to_t(model):
    assert_causal(model, TEXT)


def test_rows_of_a_batch_do_not_interact(model):
    rows = torch.tensor([list(TEXT[:80]), list(TEXT[40:120])])
    together = model(rows)
    for r in range(2):
        torch.testing.assert_close(together[r], model(rows[r : r + 1])[0], atol=1e-5, rtol=1e-5)


def test_cached_steps_match_the_full_forward(model):
    full = model(ids_of(TEXT))[0]
    state = model.init_state()
    stepped = torch.stack([model.step(t, state) for t in TEXT])
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)


def test_greedy_generation_is_the_argmax_of_the_full_forward():
    torch.manual_seed(0)
    model = build_model(VARIANTS["aunet3"]).eval()
    prompt = b"The cat sat"
    out = generate(model, prompt, 24, stop_at_eos=False)
    assert len(out) == 24
    sequence = [EOS_ID, *prompt, *out]
    logits = model(torch.tensor([sequence]))[0]
    expected = logits[len(prompt) : -1, :256].argmax(-1).tolist()
    assert expected == list(out)


def test_sampling_is_reproducible_with_a_seed():
    torch.manual_seed(0)
    model = build_model(VARIANTS["aunet2"]).eval()
    a = generate(model, b"Hello", 30, temperature=1.0, top_k=20, seed=3, stop_at_eos=False)
    b = generate(model, b"Hello", 30, temperature=1.0, top_k=20, seed=3, stop_at_eos=False)
    c = generate(model, b"Hello", 30, temperature=1.0, top_k=20, seed=4, stop_at_eos=False)
    assert a == b and a != c


def test_static_lengths_that_fit_change_nothing():
    torch.manual_seed(0)
    dynamic = build_model(tiny(stages=3)).eval()
    static = build_model(tiny(stages=3, max_pooled=[200, 100])).eval()
    static.load_state_dict(dynamic.state_dict())
    ids = ids_of(TEXT)
    torch.testing.assert_close(static(ids), dynamic(ids), atol=1e-5, rtol=1e-5)


def test_hierarchy_indices_truncate_and_pad_without_leaking():
    levels = torch.tensor([[0, 0, 1, 0, 2, 0, 1, 1, 0, 2]])
    first, second = hierarchy_indices(levels, [4, 3])
    assert first.pool_idx.tolist() == [[0, 2, 4, 6]]  # truncated to 4: positions 7 and 9 dropped
    assert first.segment.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 3, 3]]  # later bytes use the last kept vector
    assert first.offset.tolist() == [[0, 1, 0, 1, 0, 1, 0, 1, 2, 3]]
    assert second.pool_idx.tolist() == [[0, 2, 0]] and second.valid.tolist() == [[True, True, False]]


def test_paper_presets_have_table_2_parameter_counts():
    table2 = {  # Table 9 rows, Table 2 counts
        2: (dict(dims=[512, 2048], layers=[3, 25], head_dims=[64, 128], ffn_dims=[1536, 5632]), 1.3e9),
        3: (dict(dims=[512, 2048, 3072], layers=[3, 3, 18], head_dims=[64, 128, 128],
                 ffn_dims=[1536, 5632, 8192]), 2.5e9),
        4: (dict(dims=[512, 2048, 3072, 4608], layers=[3, 3, 4, 10], head_dims=[64, 128, 128, 128],
                 ffn_dims=[1536, 5632, 8192, 12288]), 4.2e9),
    }
    for fields, expected in table2.values():
        with torch.device("meta"):
            model = build_model(ModelConfig(arch="aunet", **fields))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(dims=[30, 64]), "head_dims.*not divisible"),
        (dict(layers=[1]), "'layers' has 1 entries"),
        (dict(upsampling="bilinear"), "'upsampling'"),
        (dict(pooling="max"), "'pooling'"),
        (dict(splits=["word", "words2"]), "'splits' has 2 rules"),
        (dict(splits=["bogus"]), "unknown splitting rule"),
        (dict(arch="rnn"), "'arch'"),
        (dict(max_pooled=[999]), "'max_pooled'"),
        (dict(window=0), "'window'"),
        (dict(arch="mamba", dims=[48], head_dims=[32], layers=[1], ffn_dims=[1]), "not divisible by head dim 32 .Mamba-2"),
        (dict(arch="mamba", dims=[48], head_dims=[16], layers=[1], ffn_dims=[1], mamba_version=3), "'mamba_version'"),
        (dict(init_std=0.0), "'init_std'"),
    ],
)
def test_malformed_configs_name_the_field(fields, message):
    base = dict(arch="aunet", dims=[32, 64], layers=[1, 1], head_dims=[16, 16], ffn_dims=[64, 128], seq_len=64)
    base.update(fields)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**base)


def test_empty_input_is_refused_clearly():
    model = build_model(VARIANTS["aunet2"])
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))


@pytest.mark.parametrize("stages", [2, 3])
def test_tiny_aunet_overfits_a_few_kilobytes(stages):
    torch.manual_seed(0)
    text = (b"It was the best of times, it was the worst of times, it was the age of wisdom, "
            b"it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity. ")
    data = (text * 20)[:2048]
    cfg = ModelConfig(arch="aunet", dims=[64, 128, 128][:stages], layers=[1, 2, 2][:stages],
                      head_dims=[32] * stages, ffn_dims=[128, 256, 256][:stages], seq_len=256, window=64)
    model = build_model(cfg)
    seqs = torch.tensor([list(data[i : i + 257]) for i in range(0, len(data) - 257, 128)])
    levels = model.levels(seqs)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):  # below 1 bit from about step 62; 0.04-0.06 bits at 100
        logits = model(seqs[:, :-1], levels[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), seqs[:, 1:].flatten())
        optim.zero_grad()
        loss.backward()
        optim.step()
    bits_per_byte = loss.item() / torch.log(torch.tensor(2.0)).item()
    assert bits_per_byte < 1.0


# ---- Mamba-2 ---------------------------------------------------------------------------


def test_ssd_scan_is_the_recurrence_for_any_chunking():
    torch.manual_seed(0)
    b, T, H, P, N = 2, 70, 3, 4, 5
    x, dt = torch.randn(b, T, H, P), torch.rand(b, T, H)
    A, B, C = -2 * torch.rand(H), torch.randn(b, T, N), torch.randn(b, T, N)
    h, expected = torch.zeros(b, H, P, N), []
    for t in range(T):
        h = torch.exp(dt[:, t] * A)[..., None, None] * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None]
        expected.append((h @ C[:, t, None, :, None]).squeeze(-1))
    expected = torch.stack(expected, 1)
    for chunk in (1, 8, 16, 64, 70, 256):  # one position, exact multiples, a ragged last chunk, one chunk
        torch.testing.assert_close(ssd_scan(x, dt, A, B, C, chunk), expected, atol=1e-4, rtol=1e-4)


def test_mamba2_over_several_chunks_is_causal_and_matches_its_cached_steps():
    torch.manual_seed(0)
    model = build_model(tiny("mamba", d_state=16)).eval()
    data = (TEXT * 8)[: 2 * SSD_CHUNK + 90]  # three chunks, the last one partial
    ids = ids_of(data)
    full = model(ids)[0]
    perturbed = ids.clone()
    perturbed[0, SSD_CHUNK + 5:] = 32
    torch.testing.assert_close(model(perturbed)[0, : SSD_CHUNK + 5], full[: SSD_CHUNK + 5], atol=1e-5, rtol=1e-5)
    state = model.init_state()
    stepped = torch.stack([model.step(t, state) for t in data])
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)


def test_mamba2_heads_follow_table9_and_the_reference_code():
    cfg = load_preset("mamba_bytes_1b")
    assert (cfg.mamba_version, cfg.d_state, cfg.dims, cfg.head_dims) == (2, 128, [2048], [64])
    with torch.device("meta"):
        mixer = build_model(cfg).layers[0].mixer
    assert (mixer.n_heads, mixer.head_channels, mixer.inner) == (32, 128, 4096)  # lingua: n_heads 32, hidden 4096


# ---- the paper presets as the reference code runs them ---------------------------------


def test_paper_presets_have_the_reference_rope_theta_and_init():
    for name in list_presets():
        cfg = load_preset(name)
        if name.endswith("_tiny"):
            assert cfg.init_std == 0.02 and cfg.rope_theta == 10000.0, name
            continue
        assert cfg.init_std is None, name
        if cfg.arch == "aunet":
            assert cfg.rope_theta == 500000.0, name
        elif cfg.arch == "transformer":
            assert cfg.rope_theta == (100000.0 if name.endswith("7b") else 10000.0), name


@pytest.mark.parametrize("arch", ["aunet", "transformer", "mamba"])
def test_reference_init_is_fan_in_truncated_normal(arch):
    torch.manual_seed(0)
    cfg = tiny(arch, init_std=None, dims=[256, 384][: 1 if arch != "aunet" else 2])
    model = build_model(cfg)
    checked = 0
    for name, param in model.named_parameters():
        if param.dim() < 2 or param.numel() < 4096:
            continue
        sigma = param.shape[1] ** -0.5
        assert param.abs().max() <= 3 * sigma + 1e-6, name
        assert param.std().item() == pytest.approx(sigma * 0.986, rel=0.1), name  # truncation at 3 sigma
        checked += 1
    assert checked >= 3


def test_table11_optim_preset_is_the_papers_baseline_setting():
    path = Path(__file__).resolve().parent.parent / "conf" / "optim" / "table11_baseline_1b.yaml"
    cfg = OptimConfig(**yaml.safe_load(path.read_text()))
    assert (cfg.lr, cfg.weight_decay, cfg.beta1, cfg.beta2) == (0.003, 0.033, 0.9, 0.95)
    assert math.isclose(cfg.warmup_fraction * 60000, 5000)  # Table 10: 60,000 steps


# ---- the CUDA path's sliding window, checked on the CPU -------------------------------


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(("length", "window"), [(300, 64), (256, 128), (130, 16)])
def test_flex_block_mask_computes_the_blocked_sliding_window(length, window):
    """The CUDA path (flex_attention + our block mask) is the CPU path's function (forward:
    flex_attention has no backward on the CPU; its compiled CUDA backward is the kernel's)."""
    from torch.nn.attention.flex_attention import flex_attention

    from aunet.models.layers import sliding_window_attention, sliding_window_block_mask

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 16) for _ in range(3))
    mask = sliding_window_block_mask(length, window, "cpu")
    torch.testing.assert_close(flex_attention(q, k, v, block_mask=mask), sliding_window_attention(q, k, v, window),
                               atol=1e-5, rtol=1e-5)
