"""The package's shape: no import cycle (counting imports inside functions), unift modules
imported inside functions only where that is the point, and small files and functions."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "unift").rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The unift modules `name` imports anywhere in its file, with the packages above them, whose
    __init__ runs first (a module's own packages are left out: they are running already)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # unift.x.y (an attribute) -> unift.x
                target = target.rpartition(".")[0]
            while target:  # importing unift.a.b runs unift/a/__init__.py (and unift's) first
                if target != name and not name.startswith(target + "."):
                    out.add(target)
                target = target.rpartition(".")[0]
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_graph_sees_function_level_imports(tmp_path):
    """The checker itself: an import inside a function is an edge, and a cycle through one is found."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    g = graph()
    assert "unift.vllm_engine" in g["unift.train.rl_loop"]  # imported inside train_rl only


# docs/architecture.md, "Import layers": a module imports only from its own layer or those above
LAYERS = [
    ["unift", "unift.errors", "unift.deadline", "unift.choices", "unift.files", "unift.weights", "unift.device", "unift.disk",
     "unift.losses", "unift.logprobs", "unift.config_parse"],
    ["unift.config", "unift.tasks", "unift.data", "unift.protocol"],
    ["unift.models", "unift.lora", "unift.compiled_decode", "unift.engine", "unift.vllm_engine", "unift.rewards", "unift.user_rewards", "unift.scoring",
     "unift.rl"],
    ["unift.train", "unift.evaluate", "unift.sample", "unift.token_probs"],
    ["unift.api", "unift.study", "unift.demo", "unift.experiments", "unift.cli", "unift.cli_sample", "unift.__main__"],
]


def layer_of(module: str) -> int:
    for number, layer in enumerate(LAYERS):
        if module in layer or any(module.startswith(package + ".") for package in layer if package != "unift"):
            return number
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


def test_imports_follow_the_layers():
    upward = [f"{a} -> {b}" for a, targets in graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert upward == []


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# unift modules imported inside a function, and why (everything else is imported at the top)
LAZY_UNIFT_IMPORTS = {
    "unift.cli": "start-up time: `unift --help` and a mistyped command answer without loading torch",
    "unift.cli_sample": "start-up time, as unift.cli (its sample and token-probs commands)",
    "unift.train.rl_loop": "unift.vllm_engine only with rl.rollout_backend=vllm (the optional vllm extra)",
    "unift.sample": "unift.vllm_engine only with --backend vllm (the optional vllm extra)",
}


def test_unift_modules_are_imported_at_the_top():
    late = []
    for name, path in modules().items():
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unift") \
                        and name not in LAZY_UNIFT_IMPORTS:
                    late.append(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module} in {fn.name}")
    assert late == []


# other packages imported inside a function: optional extras and loads that only some runs need
LAZY_IMPORTS = {"vllm", "vllm.inputs", "peft", "peft.tuners.lora", "wandb", "matplotlib", "matplotlib.pyplot",
                "datasets", "math_verify", "huggingface_hub", "fcntl", "numpy._core.multiarray",
                "numpy.core.multiarray", "pyarrow.parquet", "torch.utils.tensorboard", "tqdm.auto",
                "transformers.utils", "transformers.modeling_gguf_pytorch_utils"}


def test_other_packages_are_imported_late_only_for_a_reason():
    """Only the modules of LAZY_IMPORTS, each with a comment that says why (on its line or just above)."""
    late = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = [node.module] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names = [n for n in names if n and not n.startswith("unift")]
                if not names:
                    continue
                said = any("#" in line for line in lines[node.lineno - 3:node.end_lineno])  # its line or 2 above
                if not said or any(n not in LAZY_IMPORTS for n in names):
                    late.append(f"{path.relative_to(SRC)}:{node.lineno} imports {', '.join(names)} in {fn.name}")
    assert late == []


def test_files_and_functions_are_small():
    big = []
    for path in modules().values():
        source = path.read_text()
        if len(source.splitlines()) > MAX_FILE_LINES:
            big.append(f"{path.relative_to(SRC)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{path.relative_to(SRC)}: {node.name} has {length} lines")
    assert big == []


if __name__ == "__main__":
    for comp in cycles(graph()):
        print(" <-> ".join(comp))
