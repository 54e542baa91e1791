"""The install files do what the README says: CPU PyTorch on Linux, a learner install, a full environment."""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
FULL = ROOT / "requirements.txt"
LEARNER = ROOT / "requirements-learner.txt"
# sys_platform and platform_machine of the systems the README names.
SYSTEMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_machine": "aarch64"},
    "macos": {"sys_platform": "darwin", "platform_machine": "arm64"},
    "windows": {"sys_platform": "win32", "platform_machine": "AMD64"},
}


def read(path: Path) -> tuple[list[Requirement], list[str]]:
    """The requirements of a file (following -r includes) and its pip options."""
    requirements, options = [], []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):
            included, included_options = read(path.parent / line[3:].strip())
            requirements += included
            options += included_options
        elif line.startswith("-"):
            options.append(line)
        else:
            requirements.append(Requirement(line))
    return requirements, options


def for_system(requirements: list[Requirement], system: str) -> dict[str, Requirement]:
    chosen: dict[str, Requirement] = {}
    for requirement in requirements:
        if requirement.marker is None or requirement.marker.evaluate(SYSTEMS[system]):
            assert requirement.name not in chosen, f"{requirement.name} is required twice on {system}"
            chosen[requirement.name] = requirement
    return chosen


@pytest.mark.parametrize("path", [FULL, LEARNER], ids=lambda p: p.name)
def test_every_requirement_is_pinned(path):
    requirements, _ = read(path)
    loose = [str(r) for r in requirements if not str(r.specifier).startswith("==")]
    assert not loose, f"{path.name}: pin these with ==: {loose}"


@pytest.mark.parametrize("path", [FULL, LEARNER], ids=lambda p: p.name)
@pytest.mark.parametrize("system", list(SYSTEMS))
def test_torch_is_the_cpu_build_on_linux_and_the_standard_build_elsewhere(path, system):
    requirements, options = read(path)
    torch = for_system(requirements, system).get("torch")
    assert torch is not None, f"{path.name} installs no torch on {system}"
    (pin,) = list(torch.specifier)
    if system.startswith("linux"):
        # Only PyTorch's index (or a local wheel) has +cpu builds: pip cannot fall back to PyPI's CUDA wheel.
        assert pin.version.endswith("+cpu"), f"on Linux torch must be the +cpu build, got {pin}"
        assert "--extra-index-url https://download.pytorch.org/whl/cpu" in options
    else:
        assert "+" not in pin.version, f"on {system} PyPI's standard wheel is the CPU build, got {pin}"


def test_learner_install_is_small_and_inside_the_full_one():
    learner = {r.name: r for r in read(LEARNER)[0]}
    full = read(FULL)[0]
    for name in ("torch", "numpy", "matplotlib", "jupyterlab", "jupyterlab-myst", "ipykernel"):
        assert name in learner, f"the learner install lacks {name}"
    for name in ("jupyter-book", "pytest", "playwright", "ruff", "nbval", "transformers"):
        assert name not in learner, f"the learner install should not carry {name}"
    full_pins = {(r.name, str(r.specifier), str(r.marker)) for r in full}
    missing = [str(r) for r in learner.values() if (r.name, str(r.specifier), str(r.marker)) not in full_pins]
    assert not missing, f"requirements.txt must include the learner pins: {missing}"


def test_full_environment_is_complete():
    names = {r.name for r in read(FULL)[0]}
    needed = {"jupyter-book", "jupyterlab", "jupyterlab-myst", "torch", "matplotlib", "nbval", "numpy",
              "pytest", "playwright", "ruff", "sphinx-book-theme", "pydata-sphinx-theme"}
    assert needed <= names, f"requirements.txt lacks {sorted(needed - names)}"
