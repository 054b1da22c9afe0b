"""The house rules, checked on the source: imports run only downward, and each concern keeps one room.

Layers, bottom to top: the shared basics (config, errors, files, layout, ...) < models, data < training <
evaluation < jobs < report, web < cli. A module may import its own package and any lower layer, lazily or not;
siblings (models and data, report and web) do not import each other."""

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "vaekit"
BASICS = {"config", "config_files", "errors", "files", "outputs", "layout", "devices", "images", "progress"}
LAYERS = {**dict.fromkeys(BASICS, 0), "models": 1, "data": 1, "training": 2, "evaluation": 3, "jobs": 4, "report": 5,
          "web": 5, "cli": 6, "__main__": 7}


def room(module: str) -> str:
    """The top-level part of vaekit a dotted module name belongs to ('vaekit.models.priors' -> 'models')."""
    return module.split(".")[1]


def imports(file: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaekit."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("vaekit.")]
    return found


def test_imports_run_only_downward():
    wrong = []
    for file in sorted(SRC.rglob("*.py")):
        parts = file.relative_to(SRC).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package's lazy front door names everything
        here = parts[0]
        for line, module in imports(file):
            there = room(module)
            if there != here and not (LAYERS[there] < LAYERS[here] or here in BASICS and there in BASICS):
                wrong.append(f"{file.relative_to(SRC)}:{line} imports {module}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_code_asks_which_class_a_model_is():
    """Code asks what a model can do (has_density, its priors), never isinstance on models or posteriors."""
    asked = []
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                names = ast.unparse(node.args[1])
                if any(n in names for n in ("Autoencoder", "DiagonalGaussian", "PointMass", "AE", "VAE")):
                    asked.append(f"{file.relative_to(SRC)}:{node.lineno} isinstance(..., {names})")
    assert not asked, asked


def test_functions_and_files_stay_small():
    """A guide, not a law: no function much over 60 lines, no file much over 350."""
    long = []
    for file in sorted(SRC.rglob("*.py")):
        text = file.read_text()
        if len(text.splitlines()) > 380:
            long.append(f"{file.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 70:
                long.append(f"{file.relative_to(SRC)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1}")
    assert not long, long


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string nodes that are docstrings (words about the code, not the code)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_no_preset_or_sampler_is_named_outside_its_registry():
    """Consumers iterate the registries (PRESETS, SAMPLERS) or ask for a role (PLAIN, VARIATIONAL, DENSITY, OWN);
    a member's name is spelled in its registry alone (config.py's default names the default member)."""
    from vaekit.models.presets import PRESETS
    from vaekit.models.samplers import OWN, SAMPLERS

    names = {*PRESETS, *SAMPLERS, OWN}
    homes = {"models/presets.py", "models/samplers.py", "config.py"}
    spelled = []
    for file in sorted(SRC.rglob("*.py")):
        where = str(file.relative_to(SRC))
        if where in homes:
            continue
        tree = ast.parse(file.read_text())
        skip = docstrings(tree)
        spelled += [f"{where}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value in names and id(node) not in skip]
    assert not spelled, spelled
