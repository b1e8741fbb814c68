"""clef: CLEF (Zhang et al., ICCV 2023) for facial action units and expressions.

The package is a library of parts (data, synthetic world, models, losses, training engine, metrics);
the `clef` command line (``clef.cli``) assembles them into stage programs.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    # Lazy: `import clef` stays cheap (no torch); `clef.Predictor` imports the prediction stack on use.
    if name == "Predictor":
        from clef.predict import Predictor

        return Predictor
    raise AttributeError(f"module 'clef' has no attribute {name!r}")
