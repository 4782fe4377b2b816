"""The public API type-checks as the README writes it, and works so at run time.

We ship ``py.typed``, so a user's mypy reads our annotations. ``ww.measure`` and ``ww.deploy``
are subpackages made callable (``wattwise/_callable.py``); mypy once called ``ww.measure(net,
x)`` "Module not callable" and typed ``ww.deploy(...)`` as ``Any``. Here the README's own
```python blocks go through real mypy (strict on them); no name they bind may be ``Any``, and
the results of the documented calls are pinned with ``assert_type``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path

import mypy.api
import pytest

import wattwise
from wattwise._callable import CallableModule, make_callable

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# The names the README's snippets use without defining: the user's own model and task.
PREAMBLE = """\
import torch
import wattwise
model: torch.nn.Module
task: wattwise.Task
"""

# What the documented calls return, so an Any or a wrong type fails loudly.
CHECKS = """\
from typing import assert_type
from wattwise.deploy import Deployed
from wattwise.measure import Measurement
assert_type(ww.measure(model, torch.randn(1, 3, 224, 224), batch_size=32), Measurement)
assert_type(ww.measure(model, torch.randn(1, 3, 224, 224)), ww.Measurement)
assert_type(ww.deploy(model, "onnxruntime", "int8", example_input=torch.randn(1, 3)), Deployed)
"""


def readme_python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a Markdown text."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def package_docstring_example() -> str:
    """The ``>>>`` lines of ``wattwise``'s own docstring, as code."""
    doc = wattwise.__doc__ or ""
    return "\n".join(line.strip()[4:] for line in doc.splitlines() if line.strip()[:4] == ">>> ")


# What ``mypy --strict`` turns on, less the global-only warn_redundant_casts and
# warn_unused_configs (a cast the README did not need is no fault of our API).
STRICT_FLAGS = (
    "disallow_any_generics",
    "disallow_subclassing_any",
    "disallow_untyped_calls",
    "disallow_untyped_defs",
    "disallow_incomplete_defs",
    "check_untyped_defs",
    "disallow_untyped_decorators",
    "warn_unused_ignores",
    "warn_return_any",
    "strict_equality",
    "extra_checks",
)


def strict_config(modules: list[str]) -> str:
    """A mypy config: the project's own ``[tool.mypy]`` settings for every module, strict
    checking for ``modules``, and no implicit re-export from wattwise (what a user's
    ``--strict`` would apply to it).

    Every other module keeps the options ``make lint``'s mypy run checked it with, so this
    run reads torch's annotations from that run's ``.mypy_cache`` (3 s) instead of parsing
    them again (47 s in a fresh checkout under ``--strict``).
    """
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    settings = {k: v for k, v in project["tool"]["mypy"].items() if k != "files"}
    settings["cache_dir"] = str(ROOT / ".mypy_cache")
    lines = ["[mypy]", *(f"{k} = {v}" for k, v in settings.items())]
    lines += [f"[mypy-{','.join(modules)}]", *(f"{flag} = True" for flag in STRICT_FLAGS)]
    lines += [
        "implicit_reexport = False",
        "[mypy-wattwise,wattwise.*]",
        "implicit_reexport = False",
    ]
    return "\n".join(lines) + "\n"


def run_mypy(files: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """mypy, strict on the snippets in ``files`` (name → code), in one run (see
    :func:`strict_config`). Returns each file's own output lines."""
    sources = []
    for name, code in files.items():
        source = tmp_path / f"{name}.py"
        source.write_text(code, encoding="utf-8")
        sources.append(str(source))
    config = tmp_path / "mypy.ini"
    config.write_text(strict_config(list(files)), encoding="utf-8")
    stdout, stderr, _ = mypy.api.run(
        [
            "--config-file",
            str(config),
            "--python-executable",
            sys.executable,
            "--no-error-summary",
            "--show-error-codes",
            *sources,
        ]
    )
    lines = (stdout + stderr).splitlines()
    return {
        name: "\n".join(line for line in lines if Path(line.split(":", 1)[0]).stem == name)
        for name in files
    }


def test_the_readme_has_python_blocks_that_use_measure() -> None:
    blocks = readme_python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "README.md has no ```python block"
    assert any("ww.measure(" in block for block in blocks)


def bound_names(code: str) -> list[str]:
    """The names that the top-level assignments of ``code`` bind, in order, once each."""
    names: dict[str, None] = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = None
    return list(names)


# A misuse of ww.measure, and an Any where a Measurement is expected: both must fail, or the
# check above could pass by checking nothing.
MISUSE = PREAMBLE + textwrap.dedent(
    """\
    import typing
    import wattwise as ww
    from typing import assert_type
    ww.measure(model, torch.randn(1, 3), batch_size="32")
    loose: typing.Any = ww.measure(model, torch.randn(1, 3))
    assert_type(loose, ww.Measurement)
    """
)


@pytest.mark.slow
def test_readme_python_type_checks_strictly_and_the_check_catches_misuse(tmp_path: Path) -> None:
    blocks = readme_python_blocks(README.read_text(encoding="utf-8"))
    documented = "\n".join([*blocks, package_docstring_example()])
    names = bound_names(documented)
    assert {"m", "small", "log", "result", "net"} <= set(names)
    reveals = "".join(f"reveal_type({name})\n" for name in names)
    code = "\n".join([PREAMBLE, documented, CHECKS, reveals])
    outputs = run_mypy({"readme_snippet": code, "misuse": MISUSE}, tmp_path)
    output = outputs["readme_snippet"]
    # reveal_type only adds notes: any error is the README's (or our API's) fault.
    errors = [line for line in output.splitlines() if ": error:" in line]
    assert not errors, f"mypy on the README's python:\n{output}\n--- code ---\n{code}"
    revealed = re.findall(r'note: Revealed type is "(.*)"', output)
    assert len(revealed) == len(names), output
    typed_any = [(n, t) for n, t in zip(names, revealed, strict=True) if t == "Any"]
    assert not typed_any, f"README names typed Any: {typed_any}"

    misuse = outputs["misuse"]
    assert 'Argument "batch_size"' in misuse and "[arg-type]" in misuse, misuse
    assert "[assert-type]" in misuse or "Expression is of type" in misuse, misuse


FRESH_IMPORTS = {
    # Each order of first imports, in a fresh interpreter: the submodule import rebinding
    # wattwise.measure must not break either meaning.
    "top-level first": "import wattwise as ww",
    "submodule first": "import wattwise.measure.meters, wattwise.deploy._backends\n"
    "import wattwise as ww",
    "from-import first": "from wattwise.measure import Measurement\n"
    "from wattwise.deploy import Deployed\nimport wattwise as ww",
}


@pytest.mark.parametrize("imports", FRESH_IMPORTS.values(), ids=FRESH_IMPORTS.keys())
def test_measure_and_deploy_are_both_module_and_function_in_any_import_order(
    imports: str,
) -> None:
    code = imports + textwrap.dedent(
        """
        import types
        import wattwise.deploy as wd
        import wattwise.measure as wm
        from wattwise._callable import CallableModule
        assert wm is ww.measure and wd is ww.deploy
        for module in (wm, wd):
            assert isinstance(module, types.ModuleType) and isinstance(module, CallableModule)
        assert wm.Measurement is ww.Measurement
        assert callable(wd.load_artifact) and callable(wm.measure.__call__)
        try:
            ww.measure(None, None)
        except ww.errors.InputError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    # The call reached the harness, whose checks named the bad argument.
    assert "example_input must be a tensor" in out.stdout


@pytest.fixture
def plain_module() -> Iterator[types.ModuleType]:
    """A real module of two functions, in sys.modules like any imported one."""
    module = types.ModuleType("wattwise_test_plain_module")
    exec("def double(x):\n    return 2 * x\n\ndef triple(x):\n    return 3 * x\n", vars(module))
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_a_call_runs_the_attribute_as_it_is_now(
    plain_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The call looks the function up by name at each call, so the module's attribute stays
    # the one place to patch (and a stale copy can never run instead).
    callable_module = make_callable(plain_module.__name__, plain_module.double)
    assert callable_module is plain_module and isinstance(plain_module, CallableModule)
    assert callable_module(21) == 42
    monkeypatch.setattr(plain_module, "double", plain_module.triple)
    assert callable_module(21) == 63
    assert "_function_name" not in vars(plain_module)  # dir() lists only the module's names


def test_make_callable_refuses_a_function_the_module_does_not_hold(
    plain_module: types.ModuleType,
) -> None:
    def double(x: int) -> int:
        return x

    with pytest.raises(ValueError, match=r"wattwise_test_plain_module\.double is not"):
        make_callable(plain_module.__name__, double)
