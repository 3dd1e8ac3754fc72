"""The stub of the extension, Lib/_cmultiprocessing-stubs/__init__.pyi,
against the built module: the same names at module level and in each class,
the same parameter names where the C side gives a text signature, and, in an
installed package, the stub and py.typed installed beside it."""
import ast
import glob
import inspect
import os

import pytest

import _cmultiprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "Lib", "_cmultiprocessing-stubs", "__init__.pyi")


def _is_dunder(name):
    return name.startswith("__") and name.endswith("__")


def _stub():
    """{top-level name: ast node} of the stub (imports left out)."""
    with open(STUB, encoding="utf-8") as f:
        tree = ast.parse(f.read(), STUB)
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            names[node.target.id] = node
    return names


def _members(cls_node):
    """{member name: ast node} of a class of the stub (dunders left out)."""
    found = {}
    for node in cls_node.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            found[node.target.id] = node
    return {n: v for n, v in found.items() if not _is_dunder(n)}


def test_module_names_match():
    stub = set(_stub())
    built = {n for n in dir(_cmultiprocessing) if not _is_dunder(n)}
    assert sorted(built - stub) == [], "names the stub lacks"
    assert sorted(stub - built) == [], "names the module lacks"


@pytest.mark.parametrize("name", sorted(
    n for n, v in vars(_cmultiprocessing).items() if isinstance(v, type)))
def test_class_members_match(name):
    node = _stub()[name]
    assert isinstance(node, ast.ClassDef), "%s is a class in the module" % name
    cls = getattr(_cmultiprocessing, name)
    built = {n for n in vars(cls) if not _is_dunder(n)}
    stub = set(_members(node))
    assert sorted(built - stub) == [], "members of %s the stub lacks" % name
    assert sorted(stub - built) == [], "members of %s the class lacks" % name


def _text_signature_params(obj):
    """Parameter names of obj's __text_signature__ (self, cls and the
    positional-only marker left out), or None when it has none."""
    text = getattr(obj, "__text_signature__", None)
    if not text or "*args, **kwargs" in text:
        return None
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return [p for p in sig.parameters if p not in ("self", "cls")]


def _stub_params(fn):
    args = fn.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [n for n in names if n not in ("self", "cls")]


def _signature_cases():
    stub = _stub()
    for name, node in sorted(stub.items()):
        obj = getattr(_cmultiprocessing, name, None)
        if isinstance(node, ast.FunctionDef):
            yield name, obj, node
        elif isinstance(node, ast.ClassDef) and isinstance(obj, type):
            for member, mnode in sorted(_members(node).items()):
                if isinstance(mnode, ast.FunctionDef) and \
                        not mnode.decorator_list:
                    yield "%s.%s" % (name, member), \
                        vars(obj).get(member), mnode


def test_parameters_match_text_signatures():
    checked = 0
    for name, obj, node in _signature_cases():
        params = _text_signature_params(obj)
        if params is None:
            continue
        checked += 1
        assert _stub_params(node) == params, name
    assert checked >= 5, "no text signatures compared"


def test_installed_beside_the_module():
    """Where the package is installed (a dist-info beside the module), the
    stub package and py.typed are installed with it."""
    site = os.path.dirname(_cmultiprocessing.__file__)
    if not glob.glob(os.path.join(site, "cmultiprocessing-*.dist-info")):
        pytest.skip("not an installed package (a development build)")
    assert os.path.isfile(os.path.join(site, "_cmultiprocessing-stubs",
                                       "__init__.pyi"))
    assert os.path.isfile(os.path.join(site, "cmultiprocessing", "py.typed"))
