"""Hostile artifacts: every kind is refused in one line, through the loader and the CLI, and
its payload never runs.

Each case starts from a genuine artifact that wattwise (or torch.export.save) wrote, tampers
with it the way an attacker would, and carries a payload that creates a marker file. Where the
payload is one torch itself would run, the test also runs torch's own loader on the same file
at the end and sees the marker appear: the refusal is what stood between the file and the code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import wattwise.deploy as wd
from wattwise.cli import EXIT_ERROR, app
from wattwise.deploy._safe_load import ArtifactRefused, load_program
from wattwise.errors import InputError
from wattwise.tasks import DigitsCNN

runner = CliRunner()
X = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class _Touch:
    """Unpickling this creates ``path``: the stand-in for any code an attacker would run."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(_Touch(marker), buf)  # the torch.save zip format, as torch expects
    return buf.getvalue()


def _touch_code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch() is None"


# --- genuine artifacts --------------------------------------------------------------------


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("genuine")
    model = DigitsCNN(width=0.25).eval()
    pt2_dir = wd.export_deployment(wd.deploy(model, "eager", "fp32", example_input=X), root / "pt2")
    onnx_dir = wd.export_deployment(
        wd.deploy(model, "onnxruntime", "fp32", example_input=X), root / "onnx"
    )
    ov_dir = wd.export_deployment(
        wd.deploy(model, "openvino", "fp32", example_input=X), root / "openvino"
    )
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    program = torch.export.export(
        seq, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)
    )
    bare = root / "seq.pt2"
    torch.export.save(program, str(bare))
    return {"pt2_dir": pt2_dir, "onnx_dir": onnx_dir, "ov_dir": ov_dir, "bare": bare}


def test_genuine_artifacts_still_load_and_run(genuine) -> None:
    seq_program = load_program(genuine["bare"])
    x = torch.randn(5, 4)
    torch.testing.assert_close(
        seq_program.module()(x), torch.export.load(str(genuine["bare"])).module()(x)
    )
    for kind in ("pt2_dir", "onnx_dir", "ov_dir"):
        art = wd.load_artifact(genuine[kind])  # checks the stored outputs itself
        assert art.verify().passed
        assert art(X).shape == (1, 10)


# --- tampering helpers --------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes]) -> None:
    """Copy a zip member by member, passing each (name, bytes) through ``change``."""
    with zipfile.ZipFile(src) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    tmp = dst.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zout:
        for info, data in items:
            zout.writestr(info, change(info.filename, data))
    tmp.replace(dst)


def _json_member(suffix: str, edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name.endswith(suffix):
            doc = json.loads(data)
            edit(doc)
            return json.dumps(doc).encode()
        return data

    return change


def _reseal(art: Path) -> None:
    """Recompute the manifest's checksums: an attacker who writes the files writes those too."""
    manifest = json.loads((art / "deployment.json").read_text())
    for name, entry in manifest["files"].items():
        data = (art / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    (art / "deployment.json").write_text(json.dumps(manifest))


def _sym_sizes(doc: dict) -> list[dict]:
    values = doc["graph_module"]["graph"]["tensor_values"].values()
    return [s["as_expr"] for v in values for s in v["sizes"] if "as_expr" in s]


# --- the cases: each returns (path to give the loader, reason words, torch's own load) ------


def _guards_code(genuine, work: Path, marker: Path):
    path = work / "guards.pt2"
    _rewrite(
        genuine["bare"],
        path,
        _json_member("models/model.json", lambda d: d.update(guards_code=[_touch_code(marker)])),
    )
    return path, "guards_code", lambda: torch.export.load(str(path)).module()(torch.randn(3, 4))


def _sympy_expression(genuine, work: Path, marker: Path):
    def edit(doc: dict) -> None:
        for expr in _sym_sizes(doc):
            expr["expr_str"] = f"({_touch_code(marker)}, {expr['expr_str']})[1]"

    path = work / "expr.pt2"
    _rewrite(genuine["bare"], path, _json_member("models/model.json", edit))
    return path, "shape expression", lambda: torch.export.load(str(path))


def _pickled_sample_inputs(genuine, work: Path, marker: Path):
    path = work / "sample.pt2"
    evil = _evil_pickle(marker)
    _rewrite(
        genuine["bare"],
        path,
        lambda name, data: evil if name.endswith("sample_inputs/model.pt") else data,
    )
    return (
        path,
        "sample_inputs/model.pt is not a plain tensor pickle",
        lambda: torch.export.load(str(path)),
    )


def _pickled_weight(genuine, work: Path, marker: Path):
    path = work / "weight.pt2"
    evil = _evil_pickle(marker)

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("weights_config.json"):
            config = json.loads(data)
            for meta in config["config"].values():
                if meta["path_name"] == "weight_0":
                    meta["use_pickle"] = True
            return json.dumps(config).encode()
        return evil if name.endswith("data/weights/weight_0") else data

    _rewrite(genuine["bare"], path, change)
    return path, "stored as a pickled object", lambda: torch.export.load(str(path))


def _pickled_constant(genuine, work: Path, marker: Path):
    """An "opaque object" constant: torch.export.load calls pickle.loads on it."""
    path = work / "opaque.pt2"
    import pickle

    body = pickle.dumps(_Touch(marker))

    def change(name: str, data: bytes) -> bytes:
        if name.endswith("constants_config.json"):
            config = {
                "config": {
                    "obj": {
                        "path_name": "opaque_obj_0",
                        "is_param": False,
                        "use_pickle": True,
                        "tensor_meta": None,
                    }
                }
            }
            return json.dumps(config).encode()
        return data

    _rewrite(genuine["bare"], path, change)
    with zipfile.ZipFile(path, "a") as z:
        root = z.namelist()[0].split("/")[0]
        z.writestr(f"{root}/data/constants/opaque_obj_0", body)
    return (
        path,
        "unexpected member 'data/constants/opaque_obj_0'",
        lambda: torch.export.load(str(path)),
    )


def _duplicate_member(genuine, work: Path, marker: Path, *, hostile_first: bool = True):
    """Directory whose model.pt2 holds models/model.json twice, one copy hostile. Readers
    disagree on which copy counts (Python's zipfile reads the last; torch 2.13's reader reads
    the last too, other zip readers the first), so any duplicate is refused."""
    art = work / "dup"
    shutil.copytree(genuine["pt2_dir"], art)
    src = art / "model.pt2"
    with zipfile.ZipFile(src) as zin:
        members = {i.filename: zin.read(i.filename) for i in zin.infolist()}
    program = next(name for name in members if name.endswith("models/model.json"))
    hostile = json.loads(members[program])
    hostile["guards_code"] = [_touch_code(marker)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, as it should
        with zipfile.ZipFile(work / "dup.pt2", "w") as zout:
            if hostile_first:
                zout.writestr(program, json.dumps(hostile))
            for name, data in members.items():
                zout.writestr(name, data)
            if not hostile_first:
                zout.writestr(program, json.dumps(hostile))
    (work / "dup.pt2").replace(src)
    _reseal(art)
    # torch's loader is shown running the copy it reads (the last one).
    proof = None if hostile_first else (lambda: torch.export.load(str(src)).module()(X))
    return art, "appears more than once", proof


def _duplicate_member_hostile_last(genuine, work: Path, marker: Path):
    return _duplicate_member(genuine, work, marker, hostile_first=False)


def _torch_attribute_target(genuine, work: Path, marker: Path):
    """A node whose target is os.system reached through torch's namespace."""

    def edit(doc: dict) -> None:
        node = doc["graph_module"]["graph"]["nodes"][-1]
        node["target"] = "torch.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]

    path = work / "target.pt2"
    _rewrite(genuine["bare"], path, _json_member("models/model.json", edit))
    return path, "torch.os.system", None


def _quoted_parameter_name(genuine, work: Path, marker: Path):
    """FX writes non-identifier attribute names into generated Python as getattr(self, "NAME")."""

    def edit(doc: dict) -> None:
        spec = next(s for s in doc["graph_module"]["signature"]["input_specs"] if "parameter" in s)
        spec["parameter"]["parameter_name"] = f'x"), {_touch_code(marker)}, getattr(self, "y'

    path = work / "name.pt2"
    _rewrite(genuine["bare"], path, _json_member("models/model.json", edit))
    return path, "not a plain name", None


def _zip_bomb(genuine, work: Path, marker: Path):
    """models/model.json deflates 1000:1: valid JSON followed by 256 MiB of spaces."""
    path = work / "bomb.pt2"
    with zipfile.ZipFile(genuine["bare"]) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    # A member opened by name takes the archive's compression; writestr(info) keeps each
    # copied member's own.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info, data in items:
            if info.filename.endswith("models/model.json"):
                with zout.open(info.filename, "w", force_zip64=True) as fh:
                    fh.write(data)
                    chunk = b" " * (1 << 24)
                    for _ in range(16):
                        fh.write(chunk)
            else:
                zout.writestr(info, data)
    assert path.stat().st_size < 4 << 20  # small on disk, 256 MiB inflated
    return path, "would inflate to", None


def _crc_corrupt(genuine, work: Path, marker: Path):
    path = work / "crc.pt2"
    shutil.copy(genuine["bare"], path)
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("weight_0"))
    raw = bytearray(path.read_bytes())
    # Data starts after the local header, whose extra field (torch pads it to align tensors)
    # is not the central directory's.
    name_len, extra_len = struct.unpack(
        "<HH", raw[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    raw[start] ^= 0xFF  # one flipped bit pattern in a stored weight; its CRC no longer matches
    path.write_bytes(bytes(raw))
    return path, "is corrupt", None


def _escaping_member(genuine, work: Path, marker: Path):
    path = work / "escape.pt2"
    shutil.copy(genuine["bare"], path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("seq/../../evil.py", "print('hi')")
    return path, "unsafe path", None


def _aoti_library(genuine, work: Path, marker: Path):
    """A compiled AOTInductor library torch would dlopen."""
    path = work / "aoti.pt2"
    shutil.copy(genuine["bare"], path)
    with zipfile.ZipFile(path, "a") as z:
        root = z.namelist()[0].split("/")[0]
        z.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    return path, "unexpected member", None


def _manifest_depth_bomb(genuine, work: Path, marker: Path):
    art = work / "deep"
    shutil.copytree(genuine["onnx_dir"], art)
    (art / "deployment.json").write_text(
        '{"schema": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    return art, "nests deeper", None


def _manifest_number_bomb(genuine, work: Path, marker: Path):
    art = work / "number"
    shutil.copytree(genuine["onnx_dir"], art)
    text = (art / "deployment.json").read_text()
    (art / "deployment.json").write_text(text.replace('"schema": 1', '"schema": 1' + "0" * 4000, 1))
    return art, "character number", None


def _manifest_without_checksum(genuine, work: Path, marker: Path):
    art = work / "nosum"
    shutil.copytree(genuine["onnx_dir"], art)
    manifest = json.loads((art / "deployment.json").read_text())
    manifest["files"] = {}
    (art / "deployment.json").write_text(json.dumps(manifest))
    return art, "has no sha256", None


def _expected_outputs_differ(genuine, work: Path, marker: Path):
    """Genuine model, outputs swapped for others: what the artifact claims is not what it does."""
    art = work / "outputs"
    shutil.copytree(genuine["pt2_dir"], art)
    out = np.load(art / "expected_output_0.npy")
    np.save(art / "expected_output_0.npy", out + 1.0, allow_pickle=False)
    _reseal(art)
    return art, "differs from the exported one", None


def _onnx_external_data(genuine, work: Path, marker: Path):
    """An initializer that onnxruntime would read from a file outside the artifact."""
    import onnx

    art = work / "external"
    shutil.copytree(genuine["onnx_dir"], art)
    model = onnx.load(str(art / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../etc/hostname"
    (art / "model.onnx").write_bytes(model.SerializeToString())
    _reseal(art)
    return art, "external data", None


def _onnx_custom_domain(genuine, work: Path, marker: Path):
    import onnx

    art = work / "custom"
    shutil.copytree(genuine["onnx_dir"], art)
    model = onnx.load(str(art / "model.onnx"))
    model.graph.node[0].domain = "evil.ops"
    model.opset_import.add(domain="evil.ops", version=1)
    (art / "model.onnx").write_bytes(model.SerializeToString())
    _reseal(art)
    return art, "evil.ops", None


def _ir_copy(genuine, work: Path, name: str, edit: Callable[[str], str]) -> Path:
    art = work / name
    shutil.copytree(genuine["ov_dir"], art)
    xml = (art / "model.xml").read_text(encoding="utf-8")
    (art / "model.xml").write_text(edit(xml), encoding="utf-8")
    _reseal(art)
    return art


def _ir_entity_bomb(genuine, work: Path, marker: Path):
    """A billion-laughs DTD in the IR topology: an XML parser that expands entities runs out of
    memory."""
    lol = "".join(
        f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10 if i else "lol"}">' for i in range(10)
    )

    def edit(xml: str) -> str:
        head, body = xml.split("\n", 1)
        return f"{head}\n<!DOCTYPE net [{lol}]>\n" + body.replace(
            'name="main_graph"', 'name="&l9;"', 1
        )

    return _ir_copy(genuine, work, "ir_bomb", edit), "declares a DTD or entities", None


def _ir_custom_operation(genuine, work: Path, marker: Path):
    """An operation from an extension's operation set: running it needs a library loaded."""

    def edit(xml: str) -> str:
        return xml.replace('type="ReLU" version="opset1"', 'type="ReLU" version="evil_ext"', 1)

    return _ir_copy(genuine, work, "ir_custom", edit), "evil_ext", None


def _ir_constant_outside_weights(genuine, work: Path, marker: Path):
    """A constant that points past the end of model.bin: a read out of bounds."""
    import re

    def edit(xml: str) -> str:
        return re.sub(r'offset="\d+"', 'offset="1099511627776"', xml, count=1)

    return _ir_copy(genuine, work, "ir_oob", edit), "-byte weights file", None


CASES = {
    f.__name__.lstrip("_"): f
    for f in (
        _guards_code,
        _sympy_expression,
        _pickled_sample_inputs,
        _pickled_weight,
        _pickled_constant,
        _duplicate_member,
        _duplicate_member_hostile_last,
        _torch_attribute_target,
        _quoted_parameter_name,
        _zip_bomb,
        _crc_corrupt,
        _escaping_member,
        _aoti_library,
        _manifest_depth_bomb,
        _manifest_number_bomb,
        _manifest_without_checksum,
        _expected_outputs_differ,
        _onnx_external_data,
        _onnx_custom_domain,
        _ir_entity_bomb,
        _ir_custom_operation,
        _ir_constant_outside_weights,
    )
}


def _load(path: Path):
    return wd.load_artifact(path) if path.is_dir() else load_program(path)


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_artifact_is_refused_and_its_payload_never_runs(genuine, tmp_path, case) -> None:
    marker = tmp_path / "MARKER"
    work = tmp_path / "work"
    work.mkdir()
    path, reason, torch_loads_it = CASES[case](genuine, work, marker)

    with pytest.raises(InputError) as info:
        _load(path)
    message = str(info.value)
    assert "\n" not in message and reason in message, message
    assert str(path) in message or path.name in message
    assert not marker.exists()

    result = runner.invoke(app, ["measure", str(path), "--max-time-s", "1"])
    assert result.exit_code == EXIT_ERROR, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], lines
    assert not marker.exists()

    if torch_loads_it is not None:
        # The same file through torch's own loader: the payload is real, and runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The payload runs first; whatever breaks afterwards does not matter here.
            with contextlib.suppress(Exception):
                torch_loads_it()
        assert marker.exists(), f"{case}: the payload did not run under torch.export.load"


def test_refusals_are_artifact_refused(genuine, tmp_path) -> None:
    path, _, _ = _guards_code(genuine, tmp_path, tmp_path / "m")
    with pytest.raises(ArtifactRefused):
        load_program(path)


def test_guards_code_through_a_real_cli_process(genuine, tmp_path) -> None:
    marker = tmp_path / "MARKER"
    path, _, _ = _guards_code(genuine, tmp_path, marker)
    proc = subprocess.run(
        [sys.executable, "-m", "wattwise", "measure", str(path), "--max-time-s", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "WATTWISE_LOCK_DIR": str(tmp_path)},
    )
    assert proc.returncode == EXIT_ERROR, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "guards_code" in lines[0]
    assert proc.stdout == "" and not marker.exists()


def test_model_card_escapes_what_callers_wrote(tmp_path) -> None:
    torch.manual_seed(0)
    dep = wd.deploy(DigitsCNN(width=0.25).eval(), "eager", "fp32", example_input=X)
    out = wd.export_deployment(
        dep,
        tmp_path / "art",
        accuracy=0.5,
        task_name="<script>alert(1)</script>",
        how_made='<img src=x onerror="alert(1)"> see [here](javascript:alert(1)) | `x`',
    )
    card = (out / "MODEL_CARD.md").read_text()
    for active in ("<script", "<img", "](javascript", "| `x`"):
        assert active not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert json.loads((out / "deployment.json").read_text())["how_made"].startswith("<img")
