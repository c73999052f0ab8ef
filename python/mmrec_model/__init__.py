"""MM-Rec language model built on mmrec_ops.

    from mmrec_model import MMRecConfig, MMRecLM
    model = MMRecLM(MMRecConfig.preset("tiny"))
    logits, state = model(ids)               # ids: [B, T]
    logits, state = model(more_ids, state)   # continue the stream

With transformers installed (the ``hf`` extra), model_type "mmrec" is registered with AutoConfig and
AutoModelForCausalLM (mmrec_model.hf) once transformers is imported, before or after this package; importing
mmrec_model never imports transformers itself.
"""
import importlib.abc
import importlib.util
import sys

from .config import PRESETS, MMRecConfig
from .model import LayerState, MMRecBlock, MMRecLM, MMRecState

__all__ = ["MMRecConfig", "MMRecLM", "MMRecState", "LayerState", "MMRecBlock", "PRESETS"]


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `transformers` is imported, wraps its loader so that mmrec_model.hf (the
    registration) is imported right after transformers' own __init__ has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)      # transformers puts its lazy module into sys.modules
        import mmrec_model.hf  # noqa: F401  (registers the classes)

    def __getattr__(self, name):
        return getattr(self.loader, name)


def _hook_transformers() -> None:
    if "transformers" in sys.modules:
        import mmrec_model.hf  # noqa: F401
    elif importlib.util.find_spec("transformers") is not None:
        if not any(isinstance(f, _RegisterAfterTransformers) for f in sys.meta_path):
            sys.meta_path.insert(0, _RegisterAfterTransformers())


_hook_transformers()
