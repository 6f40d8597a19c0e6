"""Per-compilation XLA options: CPU convolutions routed to Eigen, the opt-out, the probe fallback."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirage_jax import xla_options


@pytest.fixture(autouse=True)
def fresh_options():
    xla_options.conv_options.cache_clear()
    yield
    xla_options.conv_options.cache_clear()


_conv = xla_options._probe_conv  # a plain NHWC 'same' conv


def _args():
    """A conv large enough that XLA:CPU's default hands it to YNNPACK."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 16, 64)).astype(np.float32)
    kernel = (rng.standard_normal((3, 3, 64, 64)) * 0.05).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(kernel)


def _compiled_text(fn, *args) -> str:
    return fn.lower(*args).compile().as_text()


def _ynn_fusions(text: str) -> list[str]:
    """The compiled program's YNNPACK fusions (custom fusions of kind ``__ynn_fusion``)."""
    return [line for line in text.splitlines() if '"kind":"__ynn_fusion"' in line]


def test_cpu_convolutions_run_outside_the_library_fusions_and_match_the_default(monkeypatch):
    monkeypatch.delenv(xla_options.CPU_CONV_ENV, raising=False)
    assert xla_options.conv_options("cpu") == xla_options.EIGEN_CONV_OPTIONS
    args = _args()
    ours = xla_options.ConvJit(_conv)
    text = _compiled_text(ours, *args)
    assert "convolution(" in text and not _ynn_fusions(text)  # a plain (Eigen) convolution
    assert _ynn_fusions(_compiled_text(jax.jit(_conv), *args))  # the default hands it to YNNPACK
    np.testing.assert_allclose(ours(*args), jax.jit(_conv)(*args), rtol=0, atol=1e-5)


def test_opt_out_and_other_backends_get_no_options(monkeypatch):
    monkeypatch.setenv(xla_options.CPU_CONV_ENV, "xla")
    assert xla_options.conv_options("cpu") == {}
    assert _ynn_fusions(_compiled_text(xla_options.ConvJit(_conv), *_args()))
    monkeypatch.delenv(xla_options.CPU_CONV_ENV)
    xla_options.conv_options.cache_clear()
    assert xla_options.conv_options("gpu") == {} and xla_options.conv_options("tpu") == {}


def test_bad_choice_names_the_variable(monkeypatch):
    monkeypatch.setenv(xla_options.CPU_CONV_ENV, "onednn")
    with pytest.raises(ValueError, match=r"MIRAGE_CPU_CONV='onednn'.*'eigen', 'xla'"):
        xla_options.conv_options("cpu")


def test_a_jaxlib_without_the_option_falls_back_with_a_warning(monkeypatch):
    monkeypatch.delenv(xla_options.CPU_CONV_ENV, raising=False)
    monkeypatch.setattr(xla_options, "EIGEN_CONV_OPTIONS", {"xla_cpu_no_such_option_in_any_jaxlib": "1"})
    with pytest.warns(RuntimeWarning, match="rejects"):
        assert xla_options.conv_options("cpu") == {}


def test_vae_decode_compiles_with_eigen_convolutions(monkeypatch):
    from flax import nnx

    from mirage_jax.models.vae import VAEConfig, WanVAE
    from mirage_jax.models.vae.model import _decode_jit

    monkeypatch.delenv(xla_options.CPU_CONV_ENV, raising=False)
    vae = WanVAE(VAEConfig(base_dim=8, decoder_base_dim=8, dim_mult=(1, 2), num_res_blocks=1))
    graphdef, state = nnx.split(vae)
    latents = jnp.zeros((1, 2, 2, 2, vae.z_dim), jnp.float32)
    text = _compiled_text(_decode_jit, graphdef, state, latents, None, None)
    assert "convolution(" in text
    assert not [line for line in _ynn_fusions(text) if "conv_general_dilated" in line]  # dots may stay in YNNPACK
