"""mirage_jax: a JAX/Flax implementation of Mirage, a video world model with a latent spatial memory."""

from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.10",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "tensorflow-datasets>=4.9.10",
    "array-record>=0.8.6",
    "etils[epath]",  # paths that keep gs:// (tfds brings it; mirage_jax.data.tfds_io uses it directly)
    # tfds 4.9.10 imports it when *building* a dataset but only declares it for Python < 3.9.
    "importlib_resources",
    "ml-collections>=1.1.0",
    "numpy",
    "safetensors>=0.8.0",
    "ml_dtypes",
    "tqdm",
    "pillow",
    "imageio>=2.30",
    "imageio-ffmpeg",
    "matplotlib",
    "tensorboardX",
    "tokenizers",
]

# `mirage-jax explore`: the local web page (mirage_jax/world/explore).
EXPLORE = [
    "flask>=3",
]

# `mirage-jax data build --beam-runner ...`: the pose_clips builder on Apache Beam (Dataflow, Spark, Flink).
BEAM = [
    "apache-beam>=2.60",
]

TEST = [
    "pytest>=8",
    "pytest-xdist",
    "ruff",
    *EXPLORE,
    *BEAM,  # tests/test_data_beam.py: a DirectRunner build equals the plain one
    "selenium>=4.20",  # drives Debian's chromium + chromium-driver in tests/test_explore.py (.ci/run installs them)
    # The PyTorch parity stack: independent reference implementations for numerical tests.
    "torch==2.13.0",
    "diffusers>=0.42.1",
    "transformers>=5",
    "sentencepiece",
]

setup(
    name="mirage_jax",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mirage_jax", "mirage_jax.*"]),
    include_package_data=True,
    package_data={"mirage_jax.world.explore": ["page.html"]},
    install_requires=RUNTIME,
    extras_require={
        "test": TEST,
        "explore": EXPLORE,
        "beam": BEAM,
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
    entry_points={"console_scripts": ["mirage-jax=mirage_jax.cli:main"]},
)
