"""Load model artifacts without running code from them: the one loader for every kind.

Three kinds: a bare ``.pt2`` (``torch.export.save``), an ``.onnx`` model, and a directory
written by :func:`wattwise.deploy.export_deployment` (which holds one of those, or an OpenVINO
IR: ``model.xml`` and ``model.bin``). ``wattwise measure`` and
:func:`load_artifact` both come here. ``torch.export.load`` runs code from the file it is given
(``guards_code`` on every call, sympy expressions through ``eval``, pickled weights and sample
inputs, any ``torch.*`` callable named as a graph node, attribute names pasted into generated
Python), so it never sees the file: we read the archive ourselves through bounded readers,
check every member against what a genuine program holds, and hand torch a new archive built
from the checked pieces only. What we checked is then exactly what torch reads. The rules are
listed in ``docs/artifacts.md``; every refusal is one :class:`ArtifactRefused` line naming the
file and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from wattwise._inputs import take_rows
from wattwise.deploy._base import ready_backend
from wattwise.deploy._check import DeploymentMismatch, compare_outputs
from wattwise.deploy._deployment import Deployment
from wattwise.deploy._inputs import as_batch, run_batches
from wattwise.deploy._program import quiet, register_quantized_ops
from wattwise.errors import InputError, UnavailableError

__all__ = [
    "ArtifactRefused",
    "LoadedArtifact",
    "check_ir",
    "load_artifact",
    "load_onnx",
    "load_program",
]

SCHEMA = 1
MANIFEST = "deployment.json"

# Limits, checked on the sizes a zip declares before anything is inflated, and again while
# reading (a member that inflates past its declared size is refused, not trusted).
MAX_FILE_BYTES = 4 << 30  # one model file on disk
MAX_ARCHIVE_BYTES = 4 << 30  # all members of one archive, decompressed
MAX_JSON_BYTES = 64 << 20  # a ResNet-50 program's model.json is about 1 MB
MAX_MANIFEST_BYTES = 1 << 20  # deployment.json is a few kB
MAX_NPY_BYTES = 1 << 30  # one stored example input or output
MAX_MEMBERS = 20_000
MAX_JSON_DEPTH = 200  # model.json nests ~10 levels per graph; subgraphs add more
MAX_MANIFEST_DEPTH = 16
MAX_NUMBER_CHARS = 40  # a JSON number longer than this is a parser bomb, not a shape
MAX_EXPR_CHARS = 2000
MAX_NAME_CHARS = 512

# Names of values, parameters, modules and nodes. FX pastes non-identifier attribute names into
# generated Python inside quotes (``getattr(self, "NAME")``), so a quote in a name is code.
_NAME = re.compile(rf"[A-Za-z0-9_.]{{0,{MAX_NAME_CHARS}}}")
# String arguments of aten ops (rounding_mode="floor", einsum equations): repr'd by FX, and
# kept free of quotes, backslashes and newlines all the same.
_STRING_ARG = re.compile(r"[\w ,.\-+*/=<>:;()\[\]|&^%@!?#~{}]{0,1024}")
_VERSION = re.compile(r"[0-9A-Za-z.+_\-]{1,64}")
_MEMBER_SEGMENT = re.compile(r"[A-Za-z0-9_.\-]{1,255}")

# Graph node targets: operators of these namespaces (C++ kernels and torch's own Python
# decompositions); torch.export.load resolves any other "torch.X.Y" string by getattr, so a
# node could otherwise call torch.os.system.
_OP_NAMESPACES = frozenset({"aten", "prims", "quantized_decomposed", "torchao"})
_OP_TARGET = re.compile(r"torch\.ops\.([a-z_][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_]\w*)")
_HIGHER_ORDER = frozenset(
    {"cond", "while_loop", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
)
# Python callables torch.export puts in graphs for symbolic-shape arithmetic.
_PY_TARGET_NAMES = (
    *(
        f"_operator.{n}"
        for n in [
            "getitem",
            "add",
            "sub",
            "mul",
            "truediv",
            "floordiv",
            "mod",
            "pow",
            "neg",
            "pos",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "and_",
            "or_",
            "lshift",
            "rshift",
        ]
    ),
    "math.trunc",
    *(
        f"torch.{n}"
        for n in ["sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_ite", "_sym_sqrt"]
    ),
)
_VERIFIERS = frozenset({"", "ATEN", "TRAINING"})
_DEVICES = frozenset({"cpu", "cuda"})

# Sympy expressions (symbolic shapes) are parsed by sympy.sympify, which calls eval: only this
# grammar gets there. No attribute access ('.' only inside numbers), no '**' or Pow-like
# functions (Integer(9)**Integer(10**18) hangs the parser), short literals.
_EXPR_TOKEN = re.compile(
    r"\s+|(?P<num>\d{1,20}(?:\.\d{0,20})?(?:e[+-]?\d{1,3})?)|(?P<str>'[A-Za-z0-9_.+\-]{0,64}')"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]{0,40})|(?P<op>//|<=|>=|==|!=|[-+*/%(),<>=~&|])"
)
_EXPR_FUNCTIONS = frozenset(
    [
        "Symbol",
        "Integer",
        "Float",
        "Rational",
        "Add",
        "Mul",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "StrictLessThan",
        "StrictGreaterThan",
        "LessThan",
        "GreaterThan",
        "Equality",
        "Unequality",
        "And",
        "Or",
        "Not",
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "IntTrueDiv",
        "FloatTrueDiv",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "IsNonOverlappingAndDenseIndicator",
    ]
)
_EXPR_KEYWORDS = frozenset(
    [
        "positive",
        "negative",
        "integer",
        "real",
        "finite",
        "nonnegative",
        "nonpositive",
        "nonzero",
        "zero",
        "commutative",
        "precision",
        "evaluate",
    ]
)
_EXPR_CONSTANTS = frozenset({"True", "False", "oo", "zoo", "nan", "int_oo"})
_EXPR_SYMBOL = re.compile(r"[a-z]{1,3}_?\d{1,9}")

# pytree node types a module signature may name; namedtuples and user-registered types are
# refused (their contexts rebuild classes).
_TREESPEC_TYPES = frozenset(
    {
        None,
        "builtins.tuple",
        "builtins.list",
        "builtins.dict",
        "collections.OrderedDict",
        "torch.fx.immutable_collections.immutable_list",
        "torch.fx.immutable_collections.immutable_dict",
    }
)


class ArtifactRefused(InputError):
    """A model file that wattwise will not load: hostile, corrupt, or beyond a size limit."""


def _refuse(where: object, why: str) -> ArtifactRefused:
    return ArtifactRefused(" ".join(f"{where}: {why}".split()))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# --------------------------------------------------------------------------- bounded reading


def read_file(path: Path, limit: int, where: object = None) -> bytes:
    """The bytes of a regular file (no symlink, FIFO or device), refused beyond ``limit``."""
    where = path if where is None else where
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise _refuse(where, "missing") from None
    except OSError as exc:
        raise _refuse(where, f"cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(where, "is a symbolic link; artifacts hold plain files only")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(where, "is not a regular file")
    if info.st_size > limit:
        raise _refuse(where, f"is {info.st_size} bytes, over the {limit}-byte limit")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise _refuse(where, f"cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew after the stat
        raise _refuse(where, f"is over the {limit}-byte limit")
    return data


def _check_member_name(name: str, where: object) -> None:
    parts = name.split("/")
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or re.match(r"[A-Za-z]:", name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise _refuse(where, f"archive member {name!r} has an unsafe path")
    if not all(_MEMBER_SEGMENT.fullmatch(p) for p in parts):
        raise _refuse(where, f"archive member {name!r} has an unexpected name")


def read_zip(
    data: bytes,
    where: object,
    *,
    limit_for: Callable[[str], int] = lambda _name: MAX_ARCHIVE_BYTES,
    total_limit: int = MAX_ARCHIVE_BYTES,
    what: str = "zip archive",
) -> dict[str, bytes]:
    """Every member of a zip archive, checked before and while it is inflated.

    Refused: not a zip, more than :data:`MAX_MEMBERS` members, a duplicate or unsafe name,
    encryption or an unusual compression, a declared size over ``limit_for(name)`` or a total
    over ``total_limit`` (checked before reading), a member that inflates past its declared
    size, and a CRC or deflate error.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise _refuse(where, f"not a {what} ({_short(exc)})") from None
    if len(infos) > MAX_MEMBERS:
        raise _refuse(where, f"holds {len(infos)} members, over the {MAX_MEMBERS} limit")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        _check_member_name(name, where)
        if name in seen or name.lower() in seen:
            # zipfile reads the last copy of a name, torch's reader the first: refuse both.
            raise _refuse(where, f"archive member {name!r} appears more than once")
        seen.update({name, name.lower()})
        if info.flag_bits & 0x1:
            raise _refuse(where, f"archive member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(where, f"archive member {name!r} uses compression {info.compress_type}")
        limit = limit_for(name)
        if info.file_size > limit:
            raise _refuse(
                where,
                f"archive member {name!r} would inflate to {info.file_size} bytes "
                f"(limit {limit}; a zip bomb?)",
            )
        total += info.file_size
        if total > total_limit:
            raise _refuse(where, f"archive members inflate to over {total_limit} bytes in all")
    out: dict[str, bytes] = {}
    for info in infos:
        out[info.filename] = _read_member(archive, info, where)
    return out


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: object) -> bytes:
    chunks, got = [], 0
    try:
        with archive.open(info) as fh:
            while chunk := fh.read(1 << 20):
                got += len(chunk)
                if got > info.file_size:
                    raise _refuse(where, f"archive member {info.filename!r} inflates past its size")
                chunks.append(chunk)
    except ArtifactRefused:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise _refuse(
            where, f"archive member {info.filename!r} is corrupt ({_short(exc)})"
        ) from None
    if got != info.file_size:
        raise _refuse(where, f"archive member {info.filename!r} is shorter than declared")
    return b"".join(chunks)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def parse_json(data: bytes, where: object, *, max_depth: int, limit: int) -> Any:
    """Parse JSON refusing oversize input, deep nesting, long numbers and duplicate keys."""
    if len(data) > limit:
        raise _refuse(where, f"JSON is {len(data)} bytes, over the {limit}-byte limit")
    depth = deepest = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        depth += 1 if bracket.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
        if deepest > max_depth:
            raise _refuse(where, f"JSON nests deeper than {max_depth} levels")

    def number(text: str) -> Any:
        if len(text) > MAX_NUMBER_CHARS:
            raise _refuse(where, f"JSON holds a {len(text)}-character number")
        return float(text) if any(c in text for c in ".eE") else int(text)

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:  # two parsers may keep different copies: refuse the ambiguity
                raise _refuse(where, f"JSON repeats the key {key[:60]!r}")
            out[key] = value
        return out

    try:
        text = data.decode("utf-8")
        return json.loads(
            text, parse_int=number, parse_float=number, object_pairs_hook=no_duplicates
        )
    except ArtifactRefused:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refuse(where, f"not valid JSON ({_short(exc)})") from None


# ------------------------------------------------------------------------------------ .pt2

_ROOT_FILES = {
    "archive_format": b"pt2",
    "archive_version": b"0",
    "byteorder": b"little",
}
_WEIGHTS = "data/weights/"
_CONSTANTS = "data/constants/"
_MEMBER_RULES = (
    (re.compile(r"data/weights/weight_\d{1,9}"), "payload"),
    (re.compile(r"data/constants/tensor_\d{1,9}"), "payload"),
    (re.compile(r"data/weights/model_weights_config\.json"), "config"),
    (re.compile(r"data/constants/model_constants_config\.json"), "config"),
    (re.compile(r"models/model\.json"), "program"),
    (re.compile(r"data/sample_inputs/model\.pt"), "sample_inputs"),
    (re.compile(r"archive_format|archive_version|byteorder"), "root"),
    (re.compile(r"\.data/version|\.data/serialization_id"), "data_version"),
)


@dataclasses.dataclass
class _Pt2:
    root: str
    program: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    payloads: dict[str, bytes]
    data_version: dict[str, bytes]
    namespaces: set[str]


def _member_kind(rel: str) -> str | None:
    for pattern, kind in _MEMBER_RULES:
        if pattern.fullmatch(rel):
            return kind
    return None


def _pt2_limit(name: str) -> int:
    return MAX_JSON_BYTES if name.endswith(".json") else MAX_ARCHIVE_BYTES


def _split_pt2(data: bytes, where: object) -> _Pt2:
    members = read_zip(data, where, limit_for=_pt2_limit, what="torch.export archive")
    roots = {name.split("/", 1)[0] for name in members}
    if len(roots) != 1 or any("/" not in name for name in members):
        raise _refuse(where, "not a torch.export archive (members outside one top folder)")
    root = roots.pop()
    found: dict[str, dict[str, bytes]] = {}
    for name, body in members.items():
        rel = name.split("/", 1)[1]
        kind = _member_kind(rel)
        if kind is None:
            # AOTInductor libraries, legacy pickled weights, extra files, other models...
            raise _refuse(
                where, f"not a torch.export archive wattwise loads: unexpected member {rel!r}"
            )
        found.setdefault(kind, {})[rel] = body
    for rel, want in _ROOT_FILES.items():
        if found.get("root", {}).get(rel) != want:
            raise _refuse(where, f"not a torch.export archive ({rel} is not {want.decode()!r})")
    for rel, body in found.get("data_version", {}).items():
        if not re.fullmatch(rb"\d{1,40}\n?", body):
            raise _refuse(where, f"{rel} is not a version number")
    if "program" not in found:
        raise _refuse(where, "not a torch.export archive (no models/model.json)")
    for config in (
        "data/weights/model_weights_config.json",
        "data/constants/model_constants_config.json",
    ):
        if config not in found.get("config", {}):
            raise _refuse(where, f"not a torch.export archive (no {config})")
    if "sample_inputs" in found:
        _check_sample_inputs(found["sample_inputs"]["data/sample_inputs/model.pt"], where)
    program = parse_json(
        found["program"]["models/model.json"],
        f"{where}: models/model.json",
        max_depth=MAX_JSON_DEPTH,
        limit=MAX_JSON_BYTES,
    )
    namespaces: set[str] = set()
    clean = _ProgramCheck(where, namespaces).check(program)
    payloads = found.get("payload", {})
    configs = {
        rel: _check_payload_config(body, rel, payloads, where)
        for rel, body in found["config"].items()
    }
    return _Pt2(root, clean, configs, payloads, found.get("data_version", {}), namespaces)


def _check_sample_inputs(body: bytes, where: object) -> None:
    """torch.export.load unpickles this member, with a full unpickler if weights-only fails;
    we read it weights-only (after bounding its own zip) and then do not pass it on at all."""
    import torch

    what = "data/sample_inputs/model.pt"
    if not body:
        return
    read_zip(body, f"{where}: {what}", total_limit=MAX_ARCHIVE_BYTES, what="torch.save file")
    try:
        torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _refuse(
            where, f"{what} is not a plain tensor pickle; refusing to unpickle it ({_short(exc)})"
        ) from None


def _as_int(value: Any, where: object, what: str) -> int:
    if (
        not isinstance(value, dict)
        or set(value) != {"as_int"}
        or not isinstance(value["as_int"], int)
        or isinstance(value["as_int"], bool)
        or not 0 <= value["as_int"] < 2**62
    ):
        raise _refuse(where, f"{what} must be a non-negative concrete integer")
    return int(value["as_int"])


def _check_payload_config(
    body: bytes, rel: str, payloads: dict[str, bytes], where: object
) -> dict[str, Any]:
    import torch
    from torch._export.serde.schema import ScalarType
    from torch._export.serde.serialize import deserialize_scalar_type

    here = f"{where}: {rel}"
    config = parse_json(body, here, max_depth=12, limit=MAX_JSON_BYTES)
    if (
        not isinstance(config, dict)
        or set(config) != {"config"}
        or not isinstance(config["config"], dict)
    ):
        raise _refuse(here, 'must be {"config": {...}}')
    folder = rel.rsplit("/", 1)[0] + "/"
    prefix = "weight_" if folder == _WEIGHTS else "tensor_"
    for fqn, meta in config["config"].items():
        if not _NAME.fullmatch(fqn):
            raise _refuse(here, f"bad tensor name {fqn[:60]!r}")
        if not isinstance(meta, dict):
            raise _refuse(here, f"{fqn}: entry must be an object")
        if meta.get("use_pickle") is not False:
            # torch.export.load would torch.load(weights_only=False) this payload.
            raise _refuse(where, f"{fqn} is stored as a pickled object; refusing to load it")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not re.fullmatch(rf"{prefix}\d{{1,9}}", path_name):
            # custom_obj_* / opaque_obj_* constants are pickles (TorchScript or plain).
            raise _refuse(where, f"{fqn} is stored as {str(path_name)[:40]!r}, not a plain tensor")
        if folder + path_name not in payloads:
            raise _refuse(where, f"{fqn}: its payload {folder + path_name} is missing")
        tm = meta.get("tensor_meta")
        if not isinstance(tm, dict) or not isinstance(meta.get("is_param"), bool):
            raise _refuse(where, f"{fqn}: missing tensor_meta or is_param")
        if not isinstance(tm.get("device"), dict) or tm["device"].get("type") not in _DEVICES:
            raise _refuse(where, f"{fqn}: device must be cpu or cuda")
        try:
            dtype = ScalarType(tm["dtype"])
        except (KeyError, ValueError):
            raise _refuse(where, f"{fqn}: unknown dtype {tm.get('dtype')!r}") from None
        sizes = [_as_int(s, where, f"{fqn} sizes") for s in tm.get("sizes") or []]
        strides = [_as_int(s, where, f"{fqn} strides") for s in tm.get("strides") or []]
        offset = _as_int(tm.get("storage_offset"), where, f"{fqn} storage_offset")
        if len(sizes) != len(strides) or len(sizes) > 16:
            raise _refuse(where, f"{fqn}: sizes and strides disagree")
        try:
            element = torch._utils._element_size(deserialize_scalar_type(dtype))
        except (KeyError, RuntimeError):
            raise _refuse(where, f"{fqn}: unsupported dtype {dtype.name}") from None
        extent = (
            0
            if 0 in sizes
            else offset + 1 + sum((n - 1) * s for n, s in zip(sizes, strides, strict=True))
        )
        # torch allocates a zero-filled tensor of `sizes` for an empty payload: bound it by
        # the bytes actually shipped.
        if extent * element > len(payloads[folder + path_name]):
            raise _refuse(where, f"{fqn}: its shape needs more bytes than its payload holds")
    return config


class _ProgramCheck:
    """Walk a parsed ``models/model.json`` and return the copy torch will be given.

    Every string must be a plain name unless its key has its own rule below; node metadata
    (stack traces, module paths, provenance) is debugging information torch re-parses, so it is
    dropped rather than checked.
    """

    def __init__(self, where: object, namespaces: set[str]) -> None:
        self.where = f"{where}: models/model.json"
        self.namespaces = namespaces

    def refuse(self, why: str) -> ArtifactRefused:
        return _refuse(self.where, why)

    def check(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or "graph_module" not in doc:
            raise self.refuse("not a torch.export program")
        if doc.get("guards_code"):
            raise self.refuse("carries guards_code (Python that torch would run on every call)")
        verifiers = doc.get("verifiers", [])
        if not isinstance(verifiers, list) or not set(verifiers) <= _VERIFIERS:
            raise self.refuse(f"unknown verifier in {str(verifiers)[:80]}")
        version = doc.get("torch_version", "")
        if not isinstance(version, str) or (version and not _VERSION.fullmatch(version)):
            raise self.refuse("torch_version is not a version string")
        clean = {
            k: self.value(v, k)
            for k, v in doc.items()
            if k not in ("guards_code", "verifiers", "torch_version")
        }
        clean.update(guards_code=[], verifiers=verifiers, torch_version=version)
        return clean

    def value(self, v: Any, key: str) -> Any:
        if isinstance(v, dict):
            return self.mapping(v, key)
        if isinstance(v, list):
            if key == "as_strings":
                return [self.string_arg(s) for s in v]
            return [self.value(x, key) for x in v]
        if isinstance(v, str):
            return self.string(v, key)
        if isinstance(v, bool) or v is None or isinstance(v, float):
            return v
        if isinstance(v, int):
            if not -(2**63) <= v < 2**64:
                raise self.refuse(f"integer {v} out of range")
            return v
        raise self.refuse(f"unexpected value under {key!r}")

    def mapping(self, v: dict[str, Any], key: str) -> dict[str, Any]:
        if key == "metadata":
            if not all(isinstance(x, str) for x in v.values()):
                raise self.refuse("node metadata must map names to strings")
            return {}
        if key in ("custom_obj_values", "treespec_namedtuple_fields") and v:
            raise self.refuse(f"uses {key} (custom classes), which wattwise does not load")
        if key == "device" and (
            v.get("type") not in _DEVICES or not isinstance(v.get("index"), int | None)
        ):
            raise self.refuse(f"device {str(v)[:60]} is not cpu or cuda")
        out: dict[str, Any] = {}
        for k, x in v.items():
            if not _NAME.fullmatch(k):
                raise self.refuse(f"bad name {k[:60]!r}")
            if k in ("as_custom_obj", "custom_obj", "class_fqn"):
                raise self.refuse("uses a TorchScript/torchbind custom object (a pickle)")
            out[k] = self.value(x, k)
        return out

    def string(self, s: str, key: str) -> str:
        if key == "expr_str":
            check_sym_expr(s, self.where)
        elif key in ("target", "as_operator"):
            self.target(s)
        elif key in ("in_spec", "out_spec"):
            _check_treespec(s, self.where)
        elif key == "as_string":
            return self.string_arg(s)
        elif not _NAME.fullmatch(s):
            raise self.refuse(f"{key} {s[:60]!r} is not a plain name")
        return s

    def string_arg(self, s: Any) -> str:
        if not isinstance(s, str) or not _STRING_ARG.fullmatch(s):
            raise self.refuse(f"string argument {str(s)[:60]!r} holds unexpected characters")
        return s

    def target(self, s: str) -> None:
        if s in _PY_TARGET_NAMES:
            return
        match = _OP_TARGET.fullmatch(s)
        if match and match.group(1) in _OP_NAMESPACES:
            self.namespaces.add(match.group(1))
            return
        if match and match.group(1) == "higher_order" and match.group(2) in _HIGHER_ORDER:
            return
        raise self.refuse(f"graph calls {s[:80]!r}, which is not an operator wattwise loads")


def check_sym_expr(expr: str, where: object) -> None:
    """Refuse a symbolic-shape expression outside the grammar sympy may safely ``eval``."""
    if len(expr) > MAX_EXPR_CHARS:
        raise _refuse(where, f"a shape expression is {len(expr)} characters long")
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise _refuse(where, f"shape expression {expr[:80]!r} is not plain arithmetic")
        pos = m.end()
        if m.lastgroup:
            tokens.append((m.lastgroup, m.group()))
    import sympy

    depth = 0
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op" and text in "()":
            depth += 1 if text == "(" else -1
            if depth > 40 or depth < 0:
                raise _refuse(where, f"shape expression {expr[:80]!r} nests too deep")
        if kind != "name":
            continue
        if text in _EXPR_FUNCTIONS and following == "(":
            continue
        if text in _EXPR_KEYWORDS and following == "=":
            continue
        if text in _EXPR_CONSTANTS or (_EXPR_SYMBOL.fullmatch(text) and text not in vars(sympy)):
            continue
        raise _refuse(where, f"shape expression {expr[:80]!r} uses {text!r}")


def _check_treespec(text: str, where: object) -> None:
    spec = parse_json(text.encode(), where, max_depth=64, limit=1 << 20)
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], int)):
        raise _refuse(where, "a module signature's tree spec is malformed")
    stack = [spec[1]]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
            raise _refuse(where, "a module signature's tree spec is malformed")
        if node["type"] not in _TREESPEC_TYPES:
            raise _refuse(where, f"a module signature names the type {str(node['type'])[:60]!r}")
        context = node["context"]
        if context is not None:
            if not isinstance(context, str):
                raise _refuse(where, "a tree spec context is not a string")
            keys = parse_json(context.encode(), where, max_depth=2, limit=1 << 16)
            if keys is not None and not (
                isinstance(keys, list) and all(isinstance(k, str | int) for k in keys)
            ):
                raise _refuse(where, "a tree spec context is not a list of keys")
        if not isinstance(node["children_spec"], list):
            raise _refuse(where, "a module signature's tree spec is malformed")
        stack.extend(node["children_spec"])


def _rebuild_pt2(pt2: _Pt2) -> bytes:
    """A fresh archive of only the checked pieces, with no sample inputs (torch would unpickle
    them, and a program does not need them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:

        def put(rel: str, body: bytes) -> None:
            out.writestr(f"{pt2.root}/{rel}", body)

        for rel, body in _ROOT_FILES.items():
            put(rel, body)
        for rel, body in pt2.data_version.items():
            put(rel, body)
        put("models/model.json", json.dumps(pt2.program).encode())
        for rel, config in pt2.configs.items():
            put(rel, json.dumps(config).encode())
        for rel, body in pt2.payloads.items():
            put(rel, body)
        put("data/sample_inputs/model.pt", b"")
    return buffer.getvalue()


def _allowed_callables() -> set[Any]:
    import math
    import operator

    import torch

    out: set[Any] = {math.trunc}
    for name in _PY_TARGET_NAMES:
        module, attr = name.split(".", 1)
        out.add(getattr({"_operator": operator, "math": math, "torch": torch}[module], attr))
    return out


def _check_loaded(program: Any, where: object) -> None:
    """The deserialised graphs call only the operators the JSON check let through."""
    import torch

    allowed = _allowed_callables()
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if graph is not None else ():
            if node.op != "call_function":
                continue
            target = node.target
            if isinstance(target, torch._ops.OpOverload) and target.namespace in _OP_NAMESPACES:
                continue
            if (
                isinstance(target, torch._ops.HigherOrderOperator)
                and target.name() in _HIGHER_ORDER
            ):
                continue
            if any(target is a for a in allowed):
                continue
            raise _refuse(where, f"graph calls {target!r}, which is not an operator wattwise loads")
    for name, value in program.constants.items():
        if not isinstance(value, torch.Tensor):
            raise _refuse(where, f"constant {name} is a {type(value).__name__}, not a tensor")
    if getattr(program, "_guards_code", None):
        raise _refuse(where, "carries guards_code")


def program_from_bytes(data: bytes, where: object) -> Any:
    """An ``ExportedProgram`` from the bytes of a ``.pt2`` archive, checked as described in
    the module docstring."""
    import torch

    pt2 = _split_pt2(data, where)
    register_quantized_ops("torchao" in pt2.namespaces)
    rebuilt = _rebuild_pt2(pt2)
    try:
        with quiet():
            program = torch.export.load(io.BytesIO(rebuilt))
    except Exception as exc:
        raise _refuse(where, f"cannot read it as a torch.export program: {_short(exc)}") from None
    _check_loaded(program, where)
    return program


def load_program(path: str | os.PathLike[str], *, where: object = None) -> Any:
    """Load a ``.pt2`` written by ``torch.export.save`` without running code from it.

    Args:
        path: the archive.
        where: how messages name the file (default: the path).

    Returns:
        The ``ExportedProgram``.

    Raises:
        ArtifactRefused: the archive breaks a rule (one line naming the file and the rule).
    """
    path = Path(path)
    where = path if where is None else where
    data = read_file(path, MAX_FILE_BYTES, where)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise _refuse(where, "not a torch.export archive (it is not a zip file)")
    return program_from_bytes(data, where)


# ------------------------------------------------------------------------------------ .onnx

# Operator domains built into onnxruntime; anything else needs a custom-op library loaded.
_ONNX_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "ai.onnx.preview"}
)


def _onnx_tensors(graph: Any) -> Iterator[tuple[Any, str]]:
    from onnx import AttributeProto

    yield from ((t, "initializer") for t in graph.initializer)
    yield from ((s.values, "sparse initializer") for s in graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t, f"attribute of {node.name or node.op_type}"
            yield from ((t, "attribute") for t in attr.tensors)
            if attr.type == AttributeProto.GRAPH:
                yield from _onnx_tensors(attr.g)
            for g in attr.graphs:
                yield from _onnx_tensors(g)


def _onnx_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _onnx_nodes(attr.g)
            for g in attr.graphs:
                yield from _onnx_nodes(g)


def check_onnx(data: bytes, where: object) -> None:
    """Refuse an ONNX model that is invalid, reads external files, or needs custom op domains
    (a custom domain means a shared library someone must load)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise _refuse(where, f"not a valid ONNX model ({type(exc).__name__}; truncated?)") from None
    # Before the checker: it resolves external data paths itself.
    for tensor, what in _onnx_tensors(model.graph):
        if uses_external_data(tensor):
            raise _refuse(where, f"{what} {tensor.name!r} reads an external data file; refusing")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise _refuse(where, f"not a valid ONNX model ({type(exc).__name__}; truncated?)") from None
    # Opset imports only declare versions (exporters list many); the nodes say what runs.
    local = {f.domain for f in model.functions}
    domains = {n.domain for n in _onnx_nodes(model.graph)}
    domains |= {n.domain for f in model.functions for n in f.node}
    unknown = domains - _ONNX_DOMAINS - local
    if unknown:
        raise _refuse(where, f"uses custom operator domain(s) {', '.join(sorted(unknown))}")


def load_onnx(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    device: str = "cpu",
    where: object = None,
) -> Any:
    """An :class:`OrtModule` for an ``.onnx`` file, after :func:`check_onnx`."""
    path = Path(path)
    where = path if where is None else where
    data = read_file(path, MAX_FILE_BYTES, where)
    return _onnx_module(data, where, threads=threads, device=device)


def _onnx_module(data: bytes, where: object, *, threads: int | None, device: str) -> Any:
    from wattwise.deploy._runners import OrtModule

    check_onnx(data, where)
    if device.startswith("cuda"):
        from wattwise.measure import check_device

        check_device(device)
    module = OrtModule(data, threads=threads, device=device)
    try:
        _ = module.session
    except InputError as exc:
        raise _refuse(where, str(exc)) from None
    return module


# ------------------------------------------------------------------------------- OpenVINO IR

MAX_IR_XML_BYTES = 256 << 20  # MiniLM's int8 IR topology is about 1 MB
# Operation sets built into OpenVINO; an operation from any other set is a custom operation,
# which needs an extension library someone must load.
_IR_OPSET = re.compile(r"opset[0-9]{1,3}")
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def check_ir(xml: bytes, weights_size: int, where: object) -> None:
    """Refuse an OpenVINO IR topology that declares a DTD or entities (entity expansion is a
    parser bomb), is not an IR, uses an operation outside OpenVINO's own operation sets, or
    points a constant outside the weights file."""
    import xml.etree.ElementTree as ET

    if len(xml) > MAX_IR_XML_BYTES:
        raise _refuse(where, f"is over {MAX_IR_XML_BYTES >> 20} MiB; refusing")
    if _DTD.search(xml):
        raise _refuse(where, "declares a DTD or entities; an OpenVINO IR has none")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise _refuse(where, f"not valid XML ({_short(exc)}; truncated?)") from None
    if root.tag != "net" or root.find("layers") is None:
        raise _refuse(where, "not an OpenVINO IR (no <net> with <layers>)")
    for layer in root.iter("layer"):
        name = layer.get("name", "?")[:80]
        version = layer.get("version", "")
        if not _IR_OPSET.fullmatch(version):
            raise _refuse(
                where,
                f"layer {name!r} ({layer.get('type', '?')[:40]}) is from {version[:40]!r}, not "
                "one of OpenVINO's own operation sets (a custom operation needs a library loaded)",
            )
        data = layer.find("data")
        if layer.get("type") == "Const" and data is not None and data.get("size") is not None:
            try:
                offset, size = int(data.get("offset", "0")), int(data.get("size", "0"))
            except ValueError:
                raise _refuse(
                    where, f"constant {name!r} has a non-integer offset or size"
                ) from None
            if offset < 0 or size < 0 or offset + size > weights_size:
                raise _refuse(
                    where,
                    f"constant {name!r} reads bytes {offset}..{offset + size} of a "
                    f"{weights_size}-byte weights file",
                )


def _ir_module(
    xml: bytes, weights: bytes, where: object, *, threads: int | None, precision: str
) -> Any:
    from wattwise.deploy._runners import OvModule

    check_ir(xml, len(weights), where)
    module = OvModule(xml, weights, threads=threads, precision=precision)
    try:
        _ = module.request
    except InputError as exc:
        raise _refuse(where, str(exc)) from None
    return module


# ---------------------------------------------------------------------- exported directories


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedArtifact:
    """A deployment read back from an exported directory.

    Attributes:
        callable: the model, prepared for :attr:`deployment` (call it like the model).
        deployment: the :class:`Deployment` it was exported with (device possibly overridden).
        example_input: the stored input batch (a tensor, a tuple for several inputs, or a
            dict for a model exported with named inputs, which ``callable`` takes by name).
        manifest: the parsed ``deployment.json``.
        path: the directory.
        expected_outputs: what the deployment answered to ``example_input`` when exported.
    """

    callable: Any
    deployment: Deployment
    example_input: Any
    manifest: dict[str, Any]
    path: Path
    expected_outputs: tuple[Any, ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.callable(*args, **kwargs)

    def verify(self) -> Any:
        """Run the example input and compare with the stored outputs (the precision's tolerance).

        Returns:
            The :class:`CheckResult`.

        Raises:
            DeploymentMismatch: the reloaded model answers differently.
        """
        example = self.example_input
        if isinstance(example, Mapping):  # by position, in the stored order (ByName takes it)
            example = tuple(example.values())
        return _compare_with_stored(
            self.callable, example, self.expected_outputs, self.deployment, self.path
        )


def first_rows(out: Any) -> tuple[Any, ...]:
    """The first row of every tensor in ``out``, on the CPU in fp32: what export stores."""
    import torch

    flat = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    return tuple(
        t[:1].detach().cpu().float() if t.dim() else t.detach().cpu().float() for t in flat
    )


def _compare_with_stored(
    fn: Any, example: Any, expected: tuple[Any, ...], deployment: Deployment, path: Path
) -> Any:
    batch = take_rows(as_batch(example, "example_input"), deployment.batch_size)
    try:
        got = first_rows(run_batches(fn, [batch])[0])
        result = compare_outputs([expected], [got], deployment.precision)
    except DeploymentMismatch as exc:
        raise DeploymentMismatch(
            f"{path}: reloaded model differs from the exported one: {exc}"
        ) from None
    except UnavailableError:
        raise
    except Exception as exc:  # the stored input does not fit the stored model
        raise _refuse(path, f"the model fails on its own example input ({_short(exc)})") from None
    if not result.passed:
        raise DeploymentMismatch(
            f"{path}: reloaded model differs from the exported one: {result.describe()}", result
        )
    return result


@dataclasses.dataclass(frozen=True)
class _Manifest:
    raw: dict[str, Any]
    deployment: Deployment
    model_file: str
    runtime: str
    inputs: list[Any]
    outputs: list[Any]
    files: dict[str, Any]


def _read_manifest(root: Path) -> _Manifest:
    where = root / MANIFEST
    data = read_file(
        where, MAX_MANIFEST_BYTES, f"{where} (this is not an exported wattwise artifact?)"
    )
    manifest = parse_json(data, where, max_depth=MAX_MANIFEST_DEPTH, limit=MAX_MANIFEST_BYTES)
    if not isinstance(manifest, dict):
        raise _refuse(where, "must hold a JSON object")
    if manifest.get("schema") != SCHEMA:
        raise _refuse(
            where,
            f"schema {manifest.get('schema')!r} is not supported (this wattwise reads {SCHEMA})",
        )
    try:
        parsed = _Manifest(
            raw=manifest,
            deployment=Deployment.from_dict(manifest["deployment"]),
            model_file=str(manifest["model_file"]),
            runtime=str(manifest["runtime"]),
            inputs=list(manifest["inputs"]),
            outputs=list(manifest.get("outputs") or []),
            files=dict(manifest.get("files") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(where, f"invalid or missing field: {_short(exc)}") from None
    if not parsed.inputs:
        raise _refuse(where, "lists no inputs")
    _input_names(parsed, where)  # refused here, before any file is read
    return parsed


def _input_names(manifest: _Manifest, where: Path) -> tuple[str, ...] | None:
    """The inputs' names for a dict-input model (every entry has one), else None.

    Raises:
        ArtifactRefused: some entries are named and some not, or a name is not a Python
            identifier (the reloaded model is called with them as keyword arguments).
    """
    from wattwise.deploy._named import check_names

    named = [isinstance(e, dict) and "name" in e for e in manifest.inputs]
    if not any(named):
        return None
    if not all(named):
        raise _refuse(where, "names some inputs and not others")
    try:
        return check_names([e["name"] for e in manifest.inputs], "inputs")
    except InputError as exc:
        raise _refuse(where, str(exc)) from None


def _checked_file(root: Path, manifest: _Manifest, name: Any, limit: int) -> bytes:
    """A file the manifest names: a plain name in the directory whose bytes match its sha256
    (hashed on the very bytes that are then parsed)."""
    where = root / MANIFEST
    if (
        not isinstance(name, str)
        or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", name)
        or name in (".", "..")
    ):
        raise _refuse(where, f"bad file name {str(name)[:60]!r}")
    entry = manifest.files.get(name)
    want = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(want, str) or not re.fullmatch(r"[0-9a-f]{64}", want):
        raise _refuse(root / name, "has no sha256 in deployment.json; refusing an unchecked file")
    data = read_file(root / name, limit)
    if hashlib.sha256(data).hexdigest() != want:
        raise _refuse(root / name, "checksum differs from deployment.json (truncated or modified)")
    size = entry.get("size_bytes") if isinstance(entry, dict) else None
    if size is not None and size != len(data):
        raise _refuse(root / name, "size differs from deployment.json")
    return data


def _array(root: Path, manifest: _Manifest, entry: Any) -> Any:
    import numpy as np
    import torch

    name = entry.get("file") if isinstance(entry, dict) else entry
    data = _checked_file(root, manifest, name, MAX_NPY_BYTES)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _refuse(root / str(name), f"not a readable .npy array ({_short(exc)})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise _refuse(root / str(name), "is not a numeric array")
    if isinstance(entry, dict) and "shape" in entry and list(array.shape) != entry["shape"]:
        raise _refuse(
            root / str(name),
            f"has shape {list(array.shape)}, deployment.json says {entry['shape']}",
        )
    return torch.from_numpy(array.copy())


def load_artifact(path: str | os.PathLike[str], *, device: str | None = None) -> LoadedArtifact:
    """Load a directory written by :func:`export_deployment`, running no code from it.

    Every file is checked against its sha256 in ``deployment.json``; the model is loaded with
    :func:`load_program`, :func:`check_onnx` or :func:`check_ir`; then the stored example input is run and the
    answer compared with the stored outputs at the deployment precision's tolerance.

    Args:
        path: the directory.
        device: run on this device instead of the exported one (e.g. ``"cpu"`` for a CUDA
            artifact on a machine without a GPU).

    Returns:
        A :class:`LoadedArtifact` whose ``callable`` is prepared for the deployment (a compiled
        one compiles on its first call).

    Raises:
        ArtifactRefused: a missing, modified, hostile or oversize file, in one line.
        DeploymentMismatch: the model does not answer what the artifact says it answered.
        UnavailableError: the deployment's device or backend can't run here.
    """
    root = Path(path)
    if not root.is_dir():
        raise _refuse(root, "not a directory (an exported wattwise artifact is a directory)")
    manifest = _read_manifest(root)
    deployment = manifest.deployment
    if device is not None:
        deployment = dataclasses.replace(deployment, device=device)
    model_where = root / str(manifest.model_file)
    model_bytes = _checked_file(root, manifest, manifest.model_file, MAX_FILE_BYTES)
    example = tuple(_array(root, manifest, e) for e in manifest.inputs)
    expected = tuple(_array(root, manifest, e) for e in manifest.outputs)
    if not expected:
        raise _refuse(root / MANIFEST, "lists no expected outputs to check the model against")

    module: Any
    if manifest.runtime == "onnxruntime":
        module = _onnx_module(
            model_bytes, model_where, threads=deployment.threads, device=deployment.device
        )
        _compare_with_stored(module, example, expected, deployment, root)
    elif manifest.runtime == "openvino":
        ready_backend(deployment)  # OpenVINO installed, and a device it runs on
        weights = _checked_file(root, manifest, manifest.raw.get("weights_file"), MAX_FILE_BYTES)
        module = _ir_module(
            model_bytes,
            weights,
            model_where,
            threads=deployment.threads,
            precision=deployment.precision,
        )
        _compare_with_stored(module, example, expected, deployment, root)
    elif manifest.runtime == "torch.export":
        program = program_from_bytes(model_bytes, model_where)
        # The plain graph answers first: cheap, and before any backend compiles it.
        _compare_with_stored(program.module(), example, expected, deployment, root)
        module = (
            ready_backend(deployment)
            .prepare(program.module(), deployment, example_input=example, calibration=[])
            .module
        )
    else:
        raise _refuse(root / MANIFEST, f"unknown runtime {manifest.runtime[:40]!r}")
    names = _input_names(manifest, root / MANIFEST)
    if names is not None:
        from wattwise.deploy._named import ByName

        return LoadedArtifact(
            callable=ByName(module, names),
            deployment=deployment,
            example_input=dict(zip(names, example, strict=True)),
            manifest=manifest.raw,
            path=root,
            expected_outputs=expected,
        )
    return LoadedArtifact(
        callable=module,
        deployment=deployment,
        example_input=example[0] if len(example) == 1 else example,
        manifest=manifest.raw,
        path=root,
        expected_outputs=expected,
    )
