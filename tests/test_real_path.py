"""The path a lab takes, end to end at a tiny size, with the real component kinds.

Published checkpoints are stood in for by tiny random ones made here: a diffusers ``WanTransformer3DModel``
(the base DiT, no VACE), an ``AutoencoderKLWan`` with its own latent statistics, a transformers
``UMT5EncoderModel`` and a word-level ``tokenizer.json``. Then, through the command line as the README shows
it: ``convert`` (dit, vae, umt5) → ``data build`` → ``train`` (``configs/tiny_wan.py``: stage ``vace`` then
``lora``, from the converted DiT) → ``generate`` (from the run, from the converted folder, from the export)
→ ``eval`` → ``export`` → ``convert dit`` of the export; and ``data encode`` (the converted VAE and umT5) →
``train`` from the latents with both encoders unused, resumed exactly. Every step's outputs are checked for
content.
"""

from __future__ import annotations

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirage_jax.checkpoints import load_model, open_source, resolve_config
from mirage_jax.cli import main
from mirage_jax.data.synthetic import TRAJECTORIES, camera_path, make_world
from mirage_jax.models import build_model
from tests.conftest import require_torch_stack

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real_path")]

H, W = 64, 96  # configs/tiny_wan.py: 4x6 latents, 2x3 tokens per frame


def _tokenizer(path):
    """A word-level tokenizer.json over the procedural captions' words (and numbers); returns its size."""
    import tokenizers
    from tokenizers import models, normalizers, pre_tokenizers

    pre = pre_tokenizers.Whitespace()
    texts = [make_world(s).description for s in range(50)] + [camera_path(make_world(0), 9, t)[3] for t in
                                                                TRAJECTORIES] + ["inside the camera"]
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t.lower())} | {str(i) for i in range(361)})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), pre
    tok.save(str(path))
    return len(vocab)


@pytest.fixture(scope="module")
def published(tmp_path_factory, compile_cache):
    """Tiny random 'published' checkpoints: diffusers DiT and VAE folders, transformers umT5, tokenizer."""
    torch, diffusers, transformers = require_torch_stack("diffusers", "transformers")
    root = tmp_path_factory.mktemp("real_path")
    torch.manual_seed(0)
    dit = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=48, out_channels=48,
        text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True, eps=1e-6)
    rng = np.random.default_rng(0)
    vae = diffusers.AutoencoderKLWan(
        base_dim=16, decoder_base_dim=32, z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=rng.normal(0, 0.3, 48).tolist(),
        latents_std=rng.uniform(0.5, 1.5, 48).tolist())
    vocab = _tokenizer(root / "tokenizer.json")
    umt5 = transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, feed_forward_proj="gated-gelu", dropout_rate=0.0))
    with torch.no_grad():
        for model in (dit, vae, umt5):
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    dit.save_pretrained(root / "Wan2.2-TI2V-5B")
    vae.save_pretrained(root / "vae")
    umt5.save_pretrained(root / "umt5")
    return root, vocab


def _ckpt_overrides(root, vocab):
    return [f"--config.latent.vae.checkpoint={root / 'ckpt' / 'vae'}",
            f"--config.text.checkpoint={root / 'ckpt' / 'umt5'}",
            f"--config.text.tokenizer_path={root / 'tokenizer.json'}", f"--config.text.umt5.vocab_size={vocab}"]


@pytest.fixture(scope="module")
def converted(published):
    root, vocab = published
    assert main(["convert", "dit", "--config", "configs/tiny_wan.py", "--input", str(root / "Wan2.2-TI2V-5B"),
                 "--out", str(root / "ckpt" / "dit"), f"--config.text.umt5.vocab_size={vocab}"]) == 0
    assert main(["convert", "vae", "--source", str(root / "vae"), "--out", str(root / "ckpt" / "vae")]) == 0
    assert main(["convert", "umt5", "--source", str(root / "umt5" / "model.safetensors"), "--out",
                 str(root / "ckpt" / "umt5")]) == 0
    return root, vocab


@pytest.fixture(scope="module")
def dataset(converted):
    root, _ = converted
    argv = ["data", "build", "--source", "procedural", "--out", str(root / "data"), "--num-clips", "3",
            "--num-test-clips", "1", "--height", str(H), "--width", str(W), "--frames", "49"]
    assert main(argv) == 0
    (folder,) = (root / "data" / "pose_clips").glob("*/1.0.0")
    info = json.loads((folder / "dataset_info.json").read_text())
    assert {s["name"]: int(s["shardLengths"][0]) for s in info["splits"]} == {"train": 3, "test": 1}
    return str(folder)


def _train_argv(root, vocab, dataset, workdir, stage_steps):
    return ["train", "--config", "configs/tiny_wan.py", "--workdir", str(workdir),
            f"--config.model.init_checkpoint={root / 'ckpt' / 'dit'}", f"--config.data.source={dataset}",
            f"--config.train.stage_steps={stage_steps}", "--config.train.checkpoint_every=3",
            "--config.train.eval_every=3", "--config.train.warmup_steps=0", "--config.train.keep_checkpoints=4",
            *_ckpt_overrides(root, vocab)]


@pytest.fixture(scope="module")
def trained(converted, dataset):
    root, vocab = converted
    assert main(_train_argv(root, vocab, dataset, root / "run", "(3,3)")) == 0
    return root, vocab, dataset


def _flat(model) -> dict:
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}


def _groups(flat: dict, group: str) -> dict:
    pick = {"vace": lambda k: k.startswith("vace/"), "lora": lambda k: "/lora_" in k,
            "base": lambda k: not k.startswith("vace/") and "/lora_" not in k}[group]
    return {k: v for k, v in flat.items() if pick(k)}


def test_conversions_keep_what_the_files_say(converted):
    root, vocab = converted
    record = json.loads((root / "ckpt" / "dit" / "converted.json").read_text())
    assert record["loaded"] == ["base"] and record["initialised"] == ["lora", "vace"]
    stored = json.loads((root / "ckpt" / "vae" / "vae_config.json").read_text())
    folder = json.loads((root / "vae" / "config.json").read_text())
    np.testing.assert_allclose(stored["latents_mean"], folder["latents_mean"], rtol=1e-7)
    assert json.loads((root / "ckpt" / "umt5" / "umt5_config.json").read_text())["vocab_size"] == vocab
    source = open_source(root / "ckpt" / "dit")
    assert source.kind == "converted" and source.groups == ("base",) and source.config.name == "tiny_wan"


def test_training_stages_train_only_their_group(trained):
    """From the converted DiT: after stage vace (step 3) only VACE moved (base bitwise the converted one, LoRA
    bitwise its fresh init: B = 0); after stage lora (step 6) only LoRA moved (VACE bitwise step 3's)."""
    root, vocab, _ = trained
    run = root / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["stage_index"] for r in losses] == [0, 1] and all(np.isfinite(r["loss"]) for r in losses)
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 3, 6]
    record = json.loads((run / "init_checkpoint.json").read_text())
    assert record["loaded"] == ["base"] and record["fresh"] == ["vace", "lora"]
    config, notes = resolve_config(open_source(run))
    assert notes == [] and config.text.checkpoint == str(root / "ckpt" / "umt5")
    start = _flat(load_model(open_source(root / "ckpt" / "dit"), config))
    fresh = _flat(build_model(config, seed=int(config.seed)))
    step3, step6 = (_flat(load_model(open_source(run, s), config)) for s in (3, 6))
    for name, flat in (("step 3", step3), ("step 6", step6)):
        for key, value in _groups(start, "base").items():
            np.testing.assert_array_equal(flat[key], value, err_msg=f"{name}: {key}")
    for key, value in _groups(fresh, "lora").items():
        np.testing.assert_array_equal(step3[key], value, err_msg=key)
    for key, value in _groups(step3, "vace").items():
        np.testing.assert_array_equal(step6[key], value, err_msg=key)
    assert not np.array_equal(step3["vace/blocks/after_proj/kernel"], fresh["vace/blocks/after_proj/kernel"])
    assert np.abs(step6["blocks/ffn_in/lora_b"]).max() > 0


def test_resume_across_the_stage_switch_is_exact(trained):
    """3 VACE steps + 1 LoRA step, stop; resume to 3 LoRA steps: bitwise the straight run's model."""
    root, vocab, dataset = trained
    _assert_resume_is_exact(root, vocab, dataset, "run", "resumed")


def _assert_resume_is_exact(root, vocab, dataset, straight_run: str, resumed_run: str) -> None:
    """3 + 1 steps, stopped, resumed to 3 + 3 in ``resumed_run``: bitwise the model of ``straight_run`` (3 + 3)."""
    argv = _train_argv(root, vocab, dataset, root / resumed_run, "(3,1)")
    assert main(argv) == 0
    assert main([a.replace("stage_steps=(3,1)", "stage_steps=(3,3)") for a in argv]) == 0
    config, _ = resolve_config(open_source(root / straight_run))
    straight, resumed = (_flat(load_model(open_source(root / w), config)) for w in (straight_run, resumed_run))
    for key, value in straight.items():
        np.testing.assert_array_equal(resumed[key], value, err_msg=key)


def test_generate_from_the_run_and_from_the_converted_folder(trained):
    from mirage_jax.world.video import read_mp4

    root, vocab, _ = trained
    common = ["--procedural", "7", "--trajectory", "revisit", "--quiet"]
    assert main(["generate", "--checkpoint", str(root / "run"), "--frames", "65", "--out", str(root / "gen_run"),
                 *common]) == 0
    meta = json.loads((root / "gen_run" / "metadata.json").read_text())
    assert len(meta["chunks"]) == 2 and meta["chunks"][1]["references"] and meta["chunks"][1]["cache_points"] > 0
    assert meta["config"]["text"]["checkpoint"] == str(root / "ckpt" / "umt5")
    video = read_mp4(root / "gen_run" / "generated.mp4")
    assert video.shape == (65, H, W, 3) and video.std() > 1
    # a converted DiT generates directly (its VACE is fresh: zero after_proj); converted VAE and umT5 on top
    argv = ["generate", "--checkpoint", str(root / "ckpt" / "dit"), "--frames", "33", "--out", str(root / "gen_dit"),
            *_ckpt_overrides(root, vocab), *common]
    assert main(argv) == 0
    assert read_mp4(root / "gen_dit" / "generated.mp4").shape == (33, H, W, 3)


def test_eval_of_the_run(trained):
    root, _, _ = trained
    argv = ["eval", "--checkpoint", str(root / "run"), "--out", str(root / "eval"), "--trajectories", "revisit",
            "--frames", "65", "--variants", "latent,none", "--quiet", "--no-videos"]
    assert main(argv) == 0
    metrics = json.loads((root / "eval" / "eval.json").read_text())
    assert set(metrics) == {"latent", "none"}
    for m in metrics.values():
        assert np.isfinite(m["revisit_psnr"]) and np.isfinite(m["follow_psnr"]) and len(m["cache_bytes"]) == 2
    assert metrics["latent"]["cache_bytes"][-1] > 0 == metrics["none"]["cache_bytes"][-1]


def test_export_and_convert_it_back(trained):
    """The export in official names; base + vace + lora converts to the run's parameters bit for bit, the
    merged DiT + vace to the same outputs (fp32 rounding); an export is itself a loadable model source."""
    root, vocab, _ = trained
    assert main(["export", "--checkpoint", str(root / "run"), "--out", str(root / "export")]) == 0
    info = json.loads((root / "export" / "export.json").read_text())
    assert info["official_lora_alpha"] == 2.0 and info["step"] == 6
    from mirage_jax.convert.safetensors_io import SafetensorsFile

    lora_keys = SafetensorsFile(root / "export" / "lora.safetensors").keys()
    assert lora_keys and all(re.match(r"pipe\.dit\.blocks\.\d+\.", k) for k in lora_keys)
    exported = {n: str(root / "export" / f"{n}.safetensors") for n in ("dit", "vace", "lora")}
    base = ["--config", "configs/tiny_wan.py", f"--config.text.umt5.vocab_size={vocab}"]
    assert main(["convert", "dit", *base, "--input", str(root / "Wan2.2-TI2V-5B"), "--input", exported["vace"],
                 "--input", exported["lora"], "--out", str(root / "roundtrip")]) == 0
    assert main(["convert", "dit", *base, "--input", exported["dit"], "--input", exported["vace"],
                 "--out", str(root / "merged")]) == 0
    config, _ = resolve_config(open_source(root / "run"))
    trained_model = load_model(open_source(root / "run"), config)
    roundtrip = _flat(load_model(open_source(root / "roundtrip"), config))
    for key, value in _flat(trained_model).items():
        np.testing.assert_array_equal(roundtrip[key], value, err_msg=key)
    merged = load_model(open_source(root / "merged"), config)
    rng = np.random.default_rng(1)
    args = (jnp.asarray(rng.normal(size=(1, 4, 4, 6, 48)), jnp.float32), jnp.asarray([[0, 0, 700, 0]], jnp.float32),
            jnp.asarray(rng.normal(size=(1, 5, 32)), jnp.float32))
    control = jnp.asarray(rng.normal(size=(1, 3, 4, 6, 96)), jnp.float32)
    want = np.asarray(trained_model(*args, num_references=1, control=control))
    got = np.asarray(merged(*args, num_references=1, control=control))
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    argv = ["generate", "--checkpoint", str(root / "export"), "--procedural", "7", "--frames", "5", "--quiet",
            "--out", str(root / "gen_export")]
    assert main(argv) == 0


def _encode_argv(root, vocab, dataset, out):
    return ["data", "encode", "--config", "configs/tiny_wan.py", "--source", dataset, "--out", str(out),
            "--clips-per-shard", "2", "--batch", "3", "--quiet", "--config.data.windows_per_clip=2",
            *_ckpt_overrides(root, vocab)]


@pytest.fixture(scope="module")
def encoded(converted, dataset):
    root, vocab = converted
    assert main(_encode_argv(root, vocab, dataset, root / "latents")) == 0
    return root, vocab, dataset


def test_encode_with_the_converted_encoders_matches_them(encoded):
    """A stored window's latents are the converted Wan2.2 VAE's encoding of its target frames (bf16 rounding),
    and its caption's row in the table is the converted umT5's embedding."""
    from mirage_jax.config import load_config
    from mirage_jax.data import latent_dataset, tfds_io
    from mirage_jax.data.examples import encode_frames
    from mirage_jax.models.latent_space import make_latent_space
    from mirage_jax.models.text import make_text_encoder

    root, vocab, dataset = encoded
    config = load_config("configs/tiny_wan.py", [a.removeprefix("--") for a in _ckpt_overrides(root, vocab)])
    windows = latent_dataset.LatentWindows(root / "latents", "train")
    assert len(windows) == 3 * 2
    clips = tfds_io.folder_source(dataset, "train")
    window, clip = windows[3], tfds_io.record_to_clip(clips[1])
    t0 = int(window["t0"])
    frames = clip["frames"][t0:t0 + int(config.data.target_frames)][None]
    want = encode_frames(make_latent_space(config), frames)[0]
    got = np.asarray(window["target_latents"], np.float32)
    np.testing.assert_allclose(got, want, atol=1e-2 * np.abs(want).max(), rtol=1e-2)
    table = latent_dataset.CaptionTable(root / "latents")
    embedding = make_text_encoder(config).encode([clip["caption"]])[0]
    np.testing.assert_allclose(table.context(window["caption_id"]), embedding, atol=1e-2 * np.abs(embedding).max())


def test_training_from_latents_runs_no_encoder_and_resumes_exactly(encoded, monkeypatch):
    """tiny_wan trained from the latent dataset: the VAE and umT5 are never built (building either fails the
    test); 3 VACE + 1 LoRA steps, stopped, resumed to 3 LoRA steps equals the straight 3 + 3 run bit for bit."""
    import mirage_jax.models.latent_space as latent_space_module
    import mirage_jax.models.text as text_module

    def refuse(config):
        raise AssertionError("an encoder was built while training from latents")

    monkeypatch.setattr(latent_space_module, "make_latent_space", refuse)
    monkeypatch.setattr(text_module, "make_text_encoder", refuse)
    root, vocab, _ = encoded
    latents = str(root / "latents")
    assert main(_train_argv(root, vocab, latents, root / "latent_run", "(3,3)")) == 0
    _assert_resume_is_exact(root, vocab, latents, "latent_run", "latent_resumed")
    metrics = [json.loads(line) for line in (root / "latent_run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
