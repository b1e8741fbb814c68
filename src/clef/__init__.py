"""clef: CLEF (Zhang et al., ICCV 2023) for facial action units and expressions.

The package is a library of parts (data, synthetic world, models, losses, training engine, metrics);
the `clef` command line (``clef.cli``) assembles them into stage programs.
"""

__version__ = "0.1.0"
