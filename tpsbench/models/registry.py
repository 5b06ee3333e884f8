"""Where models come from: the zoo's files, the user's folders (``TPSBENCH_MODELS``), a path given directly, and
the models recorded in the results files a command reads.

One name means one model: a user's file may repeat a zoo model exactly, but a second, different definition of a
name is refused, naming both sources, because results record points by model name and two meanings of one name
would compare unlike things. A model met in a path or a results file is remembered for the rest of the command
(``remember``), so that every later lookup of its name finds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from tpsbench.errors import UnknownNameError, closest_choices_message
from tpsbench.models.config_file import read_config_file
from tpsbench.models.model_file import parse_model_file
from tpsbench.models.spec import ModelError, ModelSpec
from tpsbench.models.variant import is_variant, variant_spec

MODELS_ENV = "TPSBENCH_MODELS"  # folders of the user's model files, separated like PATH
ZOO_ORIGIN = "zoo"


def zoo_dir() -> Path:
    try:
        return Path(str(resources.files("tpsbench.zoo")))
    except ModuleNotFoundError:  # a source checkout on PYTHONPATH, not installed: read models/ directly
        return Path(__file__).resolve().parent.parent.parent / "models"


def user_dirs() -> list[Path]:
    value = os.environ.get(MODELS_ENV, "")
    dirs = [Path(p) for p in value.split(os.pathsep) if p]
    for d in dirs:
        if not d.is_dir():
            raise ModelError(f"{MODELS_ENV}: {d} is not a folder; point it at folders of model .toml files "
                             f"(separated by '{os.pathsep}'), or unset it")
    return dirs


@dataclass(frozen=True, slots=True)
class Catalog:
    models: dict[str, ModelSpec]
    aliases: dict[str, str]  # OLMo-core name -> model name


def _folder_files(folder: Path) -> tuple[tuple[str, int], ...]:
    return tuple((str(p), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.toml")))


def _add(models: dict[str, ModelSpec], path: Path, origin: str) -> None:
    spec = parse_model_file(path, origin)
    if spec.name != path.stem:
        raise ModelError(f"{path}: key 'name' = '{spec.name}': a model file in a folder is named after its model; "
                         f"rename the file to {spec.name}.toml or set name = \"{path.stem}\"")
    known = models.get(spec.name)
    if known is not None and known != spec:
        raise ModelError(f"{path}: model '{spec.name}' is already defined, differently, by {known.origin}; "
                         "rename one of them (one name is one model in every results file)")
    models.setdefault(spec.name, spec)


@cache
def _catalog(folders: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]) -> Catalog:
    models: dict[str, ModelSpec] = {}
    for index, (_, files) in enumerate(folders):
        for file, _mtime in files:
            _add(models, Path(file), ZOO_ORIGIN if index == 0 else file)
    aliases = {m.olmo_name: m.name for m in models.values() if m.olmo_name}
    return Catalog(models, aliases)


def catalog() -> Catalog:
    """Every model by name: the zoo first, then each user folder in order (re-read when a file changes)."""
    folders = [zoo_dir(), *user_dirs()]
    return _catalog(tuple((str(f), _folder_files(f)) for f in folders))


def all_models() -> dict[str, ModelSpec]:
    return dict(catalog().models)


def zoo_models() -> dict[str, ModelSpec]:
    """The models shipped with tpsbench, whatever the user's folders add."""
    return _catalog(((str(zoo_dir()), _folder_files(zoo_dir())),)).models


# The models of this process met outside the catalog (a path, a results file): name -> spec
_REMEMBERED: dict[str, ModelSpec] = {}


def remember(spec: ModelSpec, where: str) -> ModelSpec:
    """Make ``spec`` findable by name for the rest of the process; a different model of the same name (in the
    catalog or met before) is refused, naming ``where`` and the other's origin."""
    known = _REMEMBERED.get(spec.name) or catalog().models.get(spec.name)
    if known is not None and known != spec:
        raise ModelError(f"{where}: model '{spec.name}' differs from the model of that name in {known.origin}; "
                         "rename one of them (one name is one model)")
    _REMEMBERED.setdefault(spec.name, spec)
    return spec


def forget_remembered() -> None:
    """Back to the catalog alone (tests that read results files of their own models)."""
    _REMEMBERED.clear()


def is_known_model(name: str) -> bool:
    return name in _REMEMBERED or name in catalog().models


def get_model(name: str) -> ModelSpec:
    """A model by name or OLMo-core name (case-insensitive), the model file at a path ending in .toml, the
    OLMo-core or Hugging Face config at a path ending in .json, or a variant of any of them (BASE:key=value,...)."""
    key = name.strip()
    if key in _REMEMBERED:
        return _REMEMBERED[key]
    if is_variant(key):
        return remember(variant_spec(key, get_model), key)
    if key.endswith((".toml", ".json")):
        path = Path(key)
        if not path.is_file():
            raise ModelError(f"{path}: no such file; give a model file (.toml), a config.json (OLMo-core's or "
                             "Hugging Face's) or a model name (`tpsbench list models`)")
        return remember(parse_model_file(path) if key.endswith(".toml") else read_config_file(path), str(path))
    cat = catalog()
    if key in cat.models:
        return cat.models[key]
    if key in cat.aliases:
        return cat.models[cat.aliases[key]]
    lowered = {k.lower(): v for k, v in {**{n: n for n in cat.models}, **cat.aliases}.items()}
    if key.lower() in lowered:
        return cat.models[lowered[key.lower()]]
    raise UnknownNameError(closest_choices_message("model", name, [*cat.models, *cat.aliases]))
