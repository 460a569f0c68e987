"""The install-size measurement behind docs/install.md, and the README's install commands."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).parent.parent
install_size = load_script("install_size")


def test_the_closure_follows_extras_and_markers():
    base = install_size.closure("coyo-db", [])
    everything = install_size.closure("coyo-db", ["all"])
    assert {"duckdb", "pyarrow", "pylance", "typer"} <= set(base)
    assert "torch" not in base and "matplotlib" not in base
    assert set(base) < set(everything)
    assert "matplotlib" in everything


def test_cuda_bytes_are_the_nvidia_wheels_triton_and_torchs_cuda_libraries():
    everything = install_size.closure("coyo-db", ["all"])
    for name, dist in everything.items():
        total, cuda = install_size.sizes(dist)
        assert 0 <= cuda <= total
        if name.startswith("nvidia-") or name == "triton":
            assert cuda == total
        elif name in ("duckdb", "pyarrow", "polars"):
            assert cuda == 0
    if "torch" in everything and any(n.startswith("nvidia-") for n in everything):
        total, cuda = install_size.sizes(everything["torch"])
        assert 0 < cuda < total  # libtorch_cuda.so inside, libtorch_cpu.so too


def test_main_prints_the_three_figures(capsys):
    install_size.main(["plots"])
    out = capsys.readouterr().out
    figures = [float(x) for x in re.findall(r"(\d+\.\d+) GB", out)]
    assert len(figures) == 3
    total, cuda, cpu = figures
    assert cuda == 0 and cpu == total  # matplotlib and the core bring no CUDA


def test_readme_keeps_its_first_two_commands_and_documents_a_cpu_install():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).splitlines()
    assert first == [
        "pip install '.[all]' && coyo-db demo",
        "apt-get update -qq && apt-get install -y -qq chromium chromium-driver && "
        "pip install -e '.[dev]' && python -m pytest",
    ]
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in readme and cpu in (ROOT / "docs" / "install.md").read_text(encoding="utf-8")


def test_the_cpu_index_builds_satisfy_the_torch_requirements():
    from packaging.requirements import Requirement

    try:
        requires = metadata.distribution("coyo-db").requires or []
    except metadata.PackageNotFoundError:
        pytest.skip("coyo-db is not installed")
    wanted = [Requirement(r) for r in requires if re.match(r"(torch|torchvision)\b", r)]
    assert {r.name for r in wanted} == {"torch", "torchvision"}
    for requirement in wanted:  # a +cpu local version satisfies each specifier
        version = "2.14.1+cpu" if requirement.name == "torch" else "0.29.1+cpu"
        assert requirement.specifier.contains(version, prereleases=False), requirement
