"""speechft: Speech-FT for s3prl users.

Besides the package and the `speechft` command, the install puts `speechft_upstream.pth` at the
root of site-packages. Python runs its one import line at start-up; that line only adds a finder
to sys.meta_path (see speechft_upstream/autoload.py), which applies s3prl compatibility fixes
and registers the `speechft_*` upstreams when s3prl, torchaudio or huggingface_hub is imported.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "speechft_upstream.pth"


class BuildWithStartupHook(build_py):
    """Place the .pth beside the package in the wheel (site-packages root once installed)."""

    def run(self):
        super().run()
        self.copy_file(PTH, str(Path(self.build_lib) / PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / PTH)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        mapping[str(Path(self.build_lib) / PTH)] = PTH
        return mapping


class _StrategyWithStartupHook:
    """Wraps setuptools' editable strategy so the editable wheel carries the .pth too."""

    def __init__(self, strategy):
        self._strategy = strategy

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        wheel.writestr(PTH, Path(PTH).read_bytes())

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)


cmdclass = {"build_py": BuildWithStartupHook}
try:  # setuptools >= 64 (PEP 660); _select_strategy is the one seam it offers.
    from setuptools.command.editable_wheel import editable_wheel

    class EditableWithStartupHook(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithStartupHook(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = EditableWithStartupHook
except ImportError:
    pass

version = {}
exec(Path("speechft_upstream/__init__.py").read_text(), version)

setup(
    name="speechft",
    version=version["__version__"],
    description="Speech-FT for s3prl: stable fine-tuning, weight-space merging, SUPERB evaluation",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["speechft_upstream", "speechft_upstream.*"]),
    package_data={"speechft_upstream": ["evaluate/*.yaml"]},
    cmdclass=cmdclass,
    # No torch pin: users keep the torch (and CUDA build) they have. s3prl 0.4.18 is the
    # version the compatibility layer and patches/ are written against.
    install_requires=[
        "s3prl>=0.4.18,<0.5",
        "torch>=1.13",
        "torchaudio",
        "soundfile>=0.12",
        "pyyaml",
        "tqdm",
        "numpy",
        # What s3prl's downstream runner imports but does not declare: a plugin for the runner
        # must leave a runner that starts. catalyst is left out on purpose: 21.5 does not import
        # on Python >= 3.10, and compat/catalyst_standin.py supplies the one class KS needs.
        "tensorboardX",
        "pandas",
        "librosa",
        "editdistance",
        # SD (diarization reads h5py; DER with pyannote.metrics) and QbE (quesst14_dtw: dtw-python, lxml)
        "h5py",
        "pyannote.metrics==4.2.0",
        "dtw-python",
        "lxml",
    ],
    extras_require={
        "runner": [],  # kept so that `pip install speechft[runner]` still works; now in install_requires
        "test": ["pytest"],
        # baselines (LoRA), HF export, the mini benchmark's corpus (eSpeak NG), plots and tests (scipy)
        "extras": ["peft", "transformers", "safetensors", "espeakng-loader==0.2.4", "matplotlib", "scipy"],
        # fairseq 0.12.2's runtime dependencies at versions that work on Python 3.11. fairseq
        # itself cannot be an extra: its pins (hydra-core<1.1, omegaconf<2.1) do not install
        # there, and no wheel for Python 3.11 exists. After this extra: unpack the 0.12.2 sdist,
        # patches/apply.sh <its root>, pip install --no-deps --no-build-isolation <its root>
        # (./run.sh setup --fairseq does all of it, in .venv-fairseq).
        "fairseq": ["hydra-core>=1.3,<1.4", "omegaconf>=2.3,<2.4", "bitarray", "sacrebleu>=1.4.12",
                    "regex", "cffi", "cython", "numpy", "tqdm", "torchaudio>=0.8.0"],
    },
    entry_points={"console_scripts": ["speechft = speechft_upstream.cli:main"]},
)
