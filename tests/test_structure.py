"""The package's imports flow one way: no cycles (counting imports inside functions), and the
lower layers (model, data, prep, objective) import nothing from the layers that use them; and
the test suite's shared resources are used by one pytest worker at a time."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "sam2_scale"
# A layer may import from the layers before it, never from those after it.
LAYERS = ["config", "model", "checkpoints", "data", "prep", "synthetic", "objective", "eval", "train"]
# Known exceptions, each a debt (none left).
ALLOWED_UPWARD = set()


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports():
    """module -> the sam2_scale modules it imports, at module level or inside functions."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules and "." in candidate:
                    candidate = candidate.rsplit(".", 1)[0]
                if candidate in modules and candidate != name:
                    targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_no_import_cycles():
    graph = imports()
    cycles = []

    def visit(module, path):
        for target in graph[module]:
            if target in path:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done = set()
    for module in graph:
        visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_lower_layers_do_not_import_higher_ones():
    upward = []
    for module, targets in imports().items():
        for target in targets:
            a, b = layer(module), layer(target)
            if a in LAYERS and b in LAYERS and LAYERS.index(b) > LAYERS.index(a) and (module, target) not in ALLOWED_UPWARD:
                upward.append(f"{module} -> {target}")
    assert not upward, "upward imports: " + ", ".join(sorted(upward))


def test_files_are_renamed_into_place_only_by_atomic_py():
    """One atomic-write helper: everything else writes through atomic.py. The two renames left
    are of what it cannot do: a whole checkpoint folder, and the fallback of an exclusive create
    (prep's settings.json) on file systems without hard links."""
    renaming = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "os.replace(" in p.read_text()}
    assert renaming == {"atomic.py", "train/checkpoint.py", "prep/shards.py"}


def test_tests_that_share_a_resource_run_on_one_worker(request):
    """`make test` runs pytest-xdist with `--dist loadgroup`, which sends the tests of one
    xdist_group (the local SLURM clusters) to one worker by appending "@group" to their node ids.
    A pytest that ignores the renamed ids would run them on both workers at once, where the
    second cluster cannot start and its tests skip."""
    if not getattr(request.config.option, "loadgroup", False):  # what xdist sets on its workers
        pytest.skip("runs under `--dist loadgroup` (make test)")
    grouped = [item for item in request.session.items if item.get_closest_marker("xdist_group")]
    if not grouped:
        pytest.skip("no test of an xdist_group selected (make test-fast)")
    ignored = [item.nodeid for item in grouped if not item.nodeid.endswith("@slurm")]
    assert not ignored, f"xdist_group not applied to {len(ignored)} tests, e.g. {ignored[0]} (see the pytest pin in setup.py)"
