"""depth_anything_nb: literate Depth Anything V2 and PatchRefiner V2.

The top-level names are loaded lazily (PEP 562) so that `import depth_anything_nb` stays cheap and a
submodule is imported only when one of its names is first used. Submodules (`depth_anything_nb.train.losses`,
`depth_anything_nb.models`, `depth_anything_nb.data`, ...) are imported as usual.
"""
__version__ = "0.1.0"

import importlib as _importlib

# Modules whose `__all__` forms the top-level API, searched in this order.
_API_MODULES = ("models.registry", "models.dpt", "models.checkpoints", "models.inference", "models.preprocess")


def __getattr__(name: str):
    for module_name in _API_MODULES:
        try:
            module = _importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as e:  # a module of the list not written yet: skip it, re-raise anything else
            if e.name == f"{__name__}.{module_name}":
                continue
            raise
        if name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    names = set(globals())
    for module_name in _API_MODULES:
        try:
            names.update(getattr(_importlib.import_module(f"{__name__}.{module_name}"), "__all__", ()))
        except ModuleNotFoundError:
            pass
    return sorted(names)
