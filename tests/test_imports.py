"""The package's imports run one way: no circle, even through an import inside a function (which
hides a circle rather than removing it), and the lower layers never reach up."""

import ast

from gptlab.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "gptlab"
# each layer, and the layers above it that it must never import
LOWER = {"gptlab.core": ("gptlab.models", "gptlab.training", "gptlab.study", "gptlab.reporting", "gptlab.evaluation"),
         "gptlab.modules": ("gptlab.models", "gptlab.training", "gptlab.study", "gptlab.reporting", "gptlab.evaluation"),
         "gptlab.optim": ("gptlab.models", "gptlab.training", "gptlab.study", "gptlab.reporting", "gptlab.evaluation")}


def import_graph() -> dict[str, set[str]]:
    """{module: the gptlab modules it imports anywhere in its file}, from the source (ast)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.startswith("gptlab")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from package's level-th parent
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.startswith("gptlab"):
                    found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else resolve(base) for a in node.names}
        graph[name] = found - {None, name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_imports_have_no_circle():
    assert circles(import_graph()) == []


def test_the_detector_finds_a_circle_hidden_in_a_function():
    graph = import_graph()
    graph["gptlab.core.config"] = graph["gptlab.core.config"] | {"gptlab.models.init"}  # the circle issue 23 found
    assert ["gptlab.core.config", "gptlab.models.init"] in circles(graph)


def test_lower_layers_never_reach_up():
    graph = import_graph()
    wrong = [f"{module} imports {target}" for module, targets in graph.items() for layer, above in LOWER.items()
             if module.startswith(layer) for target in targets if target.startswith(above)]
    assert wrong == []
